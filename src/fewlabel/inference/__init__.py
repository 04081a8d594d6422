"""Model-agnostic tiled inference: tiling geometry, Gaussian blending, the engine and the
slab protocol (the model is a callable)."""
