"""Loss functions: density regression (adaptive wing) and segmentation (BCE/Dice/Focal/Tversky...)."""
