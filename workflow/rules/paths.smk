# Output path templates, defined once. Stage folders: results/{stage}/{sample}/...
# Per-job runtime benchmarks go to results/benchmarks/ (benchmarks/ holds committed experiments).

IMAGE = "results/ingest/{sample}/image.ome.zarr"
IMAGE_SUMMARY = "results/ingest/{sample}/image.json"
LABELS = "results/ingest/{sample}/labels.ome.zarr"
TARGET = "results/ingest/{sample}/target.ome.zarr"
POINTS = "results/ingest/{sample}/points.csv"
ROI_MASK = "results/roi/{sample}/roi.ome.zarr"
ROI_JSON = "results/roi/{sample}/roi.json"
RUN_SUMMARY = "results/summary.tsv"
PROVENANCE = "results/provenance.json"
LOG = "logs/{rule}/{sample}.log"
BENCH = "results/benchmarks/{rule}/{sample}.tsv"

# detection (DM-DetNet3D or LoG baseline)
DENSITY_TARGET = "results/labels/{sample}/density.ome.zarr"
DENSITY_WEIGHT = "results/labels/{sample}/weight.ome.zarr"
DETECTOR = "results/models/detector"
DETECTION_MAP = "results/predict/{sample}/detection.ome.zarr"
DETECTIONS = "results/points/{sample}/points.csv"
DETECTION_METRICS = "results/evaluate/{sample}/detection.tsv"
DETECTION_MATCHES = "results/evaluate/{sample}/detection_matches.csv"
DETECTION_SUMMARY = "results/evaluate/detection_summary.tsv"
REPORT = "results/report/report.html"
DETECTION_SLAB_MARKER = "results/predict/{sample}/detection.ome.zarr.slabs/slab-{slab}-of-{n_slabs}.json"
DETECTION_SLAB_PLAN = "results/predict/{sample}/slab_plan.json"

# segmentation (ISL pretraining + mask/distance fine-tuning + h-maxima watershed)
ISL_MODEL = "results/models/isl"
SEGMENTER = "results/models/segmenter"
FLUORESCENCE = "results/predict/{sample}/fluorescence.ome.zarr"
SEGMENTATION_MAP = "results/predict/{sample}/segmentation.ome.zarr"
INSTANCES = "results/instances/{sample}/labels.ome.zarr"
SEGMENTATION_METRICS = "results/evaluate/{sample}/segmentation.tsv"
SEGMENTATION_SUMMARY = "results/evaluate/segmentation_summary.tsv"
