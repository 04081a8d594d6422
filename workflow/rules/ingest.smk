# Ingest: every input image (image, instance labels, ISL target) -> chunked OME-Zarr;
# points CSVs validated against the volume.


rule ingest_volume:
    """Convert one input image (image, labels or target) to a validated chunked OME-Zarr."""
    input:
        unpack(ingest_inputs),
    output:
        zarr=directory("results/ingest/{sample}/{kind}.ome.zarr"),
        summary="results/ingest/{sample}/{kind}.json",
    wildcard_constraints:
        kind="image|labels|target",
    params:
        channel=channel_value,
        voxel=voxel_size_value,
        chunks=to_json(config["ingest"]["chunks"]),
        level=config["ingest"]["compression_level"],
        ref=ingest_reference,
    log:
        "logs/ingest_volume/{sample}.{kind}.log",
    benchmark:
        "results/benchmarks/ingest_volume/{sample}.{kind}.tsv"
    conda:
        "../../envs/io.yaml"
    shell:
        "python -m fewlabel ingest_volume --sample {wildcards.sample} --input {input.source:q} "
        "--output {output.zarr} --kind {wildcards.kind} --channel={params.channel:q} "
        "--reference={params.ref:q} --voxel-size={params.voxel:q} --chunks {params.chunks:q} "
        "--compression-level {params.level:q} --summary {output.summary} --log {log} 2>> {log}"


rule ingest_points:
    """Validate a points CSV against its volume and add µm columns."""
    localrule: True  # bookkeeping: runs on the submit host, never via sbatch
    input:
        points=sheet_path("points"),
        volume=IMAGE,
    output:
        POINTS,
    log:
        "logs/ingest_points/{sample}.log",
    conda:
        "../../envs/io.yaml"
    shell:
        "python -m fewlabel ingest_points --sample {wildcards.sample} --points {input.points:q} "
        "--volume {input.volume:q} --output {output} --log {log} 2>> {log}"
