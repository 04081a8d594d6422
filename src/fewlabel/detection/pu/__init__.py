"""Few-shot particle picking by positive-unlabelled learning (``detection.method: pu``).

Vedrenne, Baudrier, Fortun, *few-shot 3D particle picking* (paper 000), with the GE-binomial
loss of Topaz (Bepler et al. 2019). Modules: :mod:`.loss` (GE-binomial, PN, learned task
weights), :mod:`.classifier` (fully convolutional window classifier), :mod:`.sampling`
(class prior, windows at clicks and at ROI voxels), :mod:`.training` (SGD, SWA / EMA),
:mod:`.postprocess` (NMS → averaging → recentring → CLAHE + Otsu filter).
"""
