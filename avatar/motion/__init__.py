"""Audio-to-motion: phonemes, targets, the causal transformer and its streaming runtime."""
