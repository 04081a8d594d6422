"""Training loops (detector, ISL pretraining, segmenter) and shared training utilities."""
