"""Classical Laplacian-of-Gaussian detector (SEF3D-style baseline)."""
