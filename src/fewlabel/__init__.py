"""fewlabel: detection and instance segmentation of 3D microscopy volumes from few annotations.

Array convention everywhere: ZYX (2D inputs become Z=1), channels first when present (CZYX).
Points are ``z,y,x`` in voxel units, 0-based, float.
"""

__version__ = "0.1.0"
