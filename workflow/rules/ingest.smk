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
        axes=axes_value,
        voxel=voxel_size_value,
        chunks=to_json(config["ingest"]["chunks"]),
        level=config["ingest"]["compression_level"],
        pyramid_min=config["ingest"]["pyramid_min_voxels"],
        pyramid_side=config["ingest"]["pyramid_max_side"],
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
        "--axes={params.axes:q} "
        "--reference={params.ref:q} --voxel-size={params.voxel:q} --chunks {params.chunks:q} "
        "--compression-level {params.level:q} --pyramid-min-voxels {params.pyramid_min:q} "
        "--pyramid-max-side {params.pyramid_side:q} --summary {output.summary} --log {log} 2>> {log}"


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


rule check_predict_tiles:
    """Fail before any training when a volume to predict is smaller than a prediction tile.
    Runs once (no params; only the demo data as input, ancient): the training rules take its
    output as an ancient input, so it never retrains and never hides another rerun reason;
    later changes (new samples, tiles) are checked by the prediction stages themselves."""
    input:
        ancient(demo_manifest()),
    output:
        TILE_CHECK,
    log:
        "logs/check_predict_tiles/tiles.log",
    run:
        check_predict_tiles(output[0], log=log[0])
