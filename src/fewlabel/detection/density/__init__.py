"""DM-DetNet3D density-map detection (paper 001): Gaussian targets, hourglass network,
adaptive wing loss, training."""
