"""Model-agnostic tiled inference (the model is a callable): tile geometry (``geometry``),
Gaussian blending (``blending``), the tiled engine (``tiling``), whole-volume prediction with a
model folder (``engine``) and the slab protocol (``slabs``)."""
