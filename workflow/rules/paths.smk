# Output path templates and the sample plan live in the package (fewlabel.plan), so that the
# multi-sample stages rebuild the same file lists from the sample sheet.
from fewlabel.plan import (
    CONFIG_SNAPSHOT,
    DENSITY_TARGET,
    DENSITY_WEIGHT,
    DETECTION_MAP,
    DETECTION_MATCHES,
    DETECTION_METRICS,
    DETECTION_SLAB_MARKER,
    DETECTION_SLAB_PLAN,
    DETECTION_SUMMARY,
    DETECTIONS,
    DETECTOR,
    FLUORESCENCE,
    IMAGE,
    IMAGE_SUMMARY,
    INSTANCES,
    ISL_MODEL,
    LABELS,
    POINTS,
    PROVENANCE,
    REPORT,
    ROI_JSON,
    ROI_MASK,
    RUN_SUMMARY,
    SEGMENTATION_MAP,
    SEGMENTATION_METRICS,
    SEGMENTATION_SUMMARY,
    SEGMENTER,
    TARGET,
    TILE_CHECK,
    Plan,
)
from fewlabel.plan_log import (
    LOG_BASELINE,
    LOG_BASELINE_MAP,
    LOG_BASELINE_MATCHES,
    LOG_BASELINE_METRICS,
    LOG_BASELINE_POINTS,
    LOG_BASELINE_SUMMARY,
)

PLAN = Plan(SAMPLES, config)
if PLAN.problems():
    raise WorkflowError("fewlabel configuration error: " + " ".join(PLAN.problems()))
