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
