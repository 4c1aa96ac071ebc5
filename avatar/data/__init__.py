"""Training and evaluation data: synthesizers with phone timings, augmentation, corpora."""
