"""Synthetic volumes with exact ground truth: spots, centriole-like particles, paired nuclei.

Every generator is deterministic given ``seed`` (``numpy.random.default_rng(seed)``) and
returns ZYX ``float32`` arrays plus a points table (``z, y, x`` voxels, 0-based, sub-voxel).
Models: :mod:`~fewlabel.synth.spots` (PTC-like spots at a given SNR),
:mod:`~fewlabel.synth.centrioles` (paired 9-fold barrels), :mod:`~fewlabel.synth.nuclei`
(touching nuclei, fluorescence + label-free); :mod:`~fewlabel.synth.demo` writes the demo
inputs; :mod:`~fewlabel.synth.common` holds the containers and shared helpers.
"""

from fewlabel.synth.centrioles import centriole_volume
from fewlabel.synth.common import POINT_COLUMNS, SynthSpots, derive_seed
from fewlabel.synth.demo import DEMO_SPLITS, make_demo, write_tiff
from fewlabel.synth.nuclei import SynthNuclei, nuclei_pair
from fewlabel.synth.spots import DENSITIES, ptc_peak_intensity, spot_volume

__all__ = [
    "DEMO_SPLITS",
    "DENSITIES",
    "POINT_COLUMNS",
    "SynthNuclei",
    "SynthSpots",
    "centriole_volume",
    "derive_seed",
    "make_demo",
    "nuclei_pair",
    "ptc_peak_intensity",
    "spot_volume",
    "write_tiff",
]
