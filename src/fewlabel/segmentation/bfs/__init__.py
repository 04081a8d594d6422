"""BFS-Net (Dehghani et al.): 3D instance segmentation from centroid clicks only."""
