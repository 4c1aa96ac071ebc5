"""Audio front end: decoding, resampling, voice activity, features."""
