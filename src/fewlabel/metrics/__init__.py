"""Evaluation metrics: detection (points) and segmentation (masks, instances, counts)."""
