"""Units and fixed rates of the engine, defined once."""

NS_PER_S = 1_000_000_000
OUTPUT_RATE = 48_000  # the output timeline: every frame's audio, and what WebRTC (Opus) carries
PACKET_SAMPLES = 960  # one 20 ms WebRTC audio packet at OUTPUT_RATE
ANALYSIS_RATE = 16_000  # the analysis branch: voice activity, features, audio-to-motion
VIDEO_CLOCK = 90_000  # RTP clock of video
