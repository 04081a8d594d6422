# Few-image instance segmentation: in silico labelling pretraining (label-free -> fluorescence),
# fine-tuning of mask + distance heads, h-maxima + watershed instances, evaluation.


rule pretrain_isl:
    """In silico labelling pretraining: U-Net label-free -> fluorescence (L1)."""
    input:
        images=expand(IMAGE, sample=PLAN.isl_samples(["train", "val"])),
        targets=expand(TARGET, sample=PLAN.isl_samples(["train", "val"])),
        # volumes to predict hold a tile: checked first (ancient: never retrains)
        tiles=ancient(TILE_CHECK),
    output:
        directory(ISL_MODEL),
    params:
        sheet=config["samples"],
        settings=to_json(config["segmentation"]["isl"]),
        seed=config["seed"],
    threads: 1
    resources:
        gpu=1,
    log:
        "logs/pretrain_isl/isl.log",
    benchmark:
        "results/benchmarks/pretrain_isl/isl.tsv"
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m fewlabel pretrain_isl --sample-sheet {params.sheet:q} --out-dir {output} "
        "--params {params.settings:q} --threads {threads} "
        "--seed {params.seed:q} --log {log} 2>> {log}"


rule predict_isl:
    """Predicted fluorescence of one volume with the ISL network (tiled)."""
    input:
        model=ISL_MODEL,
        image=IMAGE,
    output:
        directory(FLUORESCENCE),
    params:
        predict=to_json(config["segmentation"]["predict"]),
    threads: 1
    resources:
        gpu=1,
    log:
        "logs/predict_isl/{sample}.log",
    benchmark:
        "results/benchmarks/predict_isl/{sample}.tsv"
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m fewlabel predict_isl --sample {wildcards.sample} --model-dir {input.model} "
        "--image {input.image} --output {output} --params {params.predict:q} "
        "--threads {threads} --log {log} 2>> {log}"


rule train_segmenter:
    """Fine-tune the mask + distance U-Net on the annotated train/val volumes."""
    input:
        unpack(segmenter_training_inputs),
    output:
        directory(SEGMENTER),
    params:
        sheet=config["samples"],
        init=segmenter_init_from(),
        settings=to_json(config["segmentation"]["train"]),
        seed=config["seed"],
    threads: 1
    resources:
        gpu=1,
    log:
        "logs/train_segmenter/segmenter.log",
    benchmark:
        "results/benchmarks/train_segmenter/segmenter.tsv"
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m fewlabel train_segmenter --sample-sheet {params.sheet:q} "
        "--init-from={params.init:q} --out-dir {output} "
        "--params {params.settings:q} --threads {threads} --seed {params.seed:q} "
        "--log {log} 2>> {log}"


rule predict_segmentation:
    """Mask + distance maps of one volume with the fine-tuned segmenter (tiled)."""
    input:
        model=PLAN.segmenter_dir(),
        image=IMAGE,
    output:
        directory(SEGMENTATION_MAP),
    params:
        predict=to_json(config["segmentation"]["predict"]),
    threads: 1
    resources:
        gpu=1,
    log:
        "logs/predict_segmentation/{sample}.log",
    benchmark:
        "results/benchmarks/predict_segmentation/{sample}.tsv"
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m fewlabel predict_segmentation --sample {wildcards.sample} "
        "--model-dir {input.model} --image {input.image} --output {output} "
        "--params {params.predict:q} --threads {threads} --log {log} 2>> {log}"


rule split_instances:
    """Instance labels from the mask + distance maps (h-maxima + watershed, chunk-safe)."""
    input:
        prediction=SEGMENTATION_MAP,
        model=PLAN.segmenter_dir(),
    output:
        report(
            directory(INSTANCES),
            caption="../../resources/report/instances.rst",
            category="Segmentation",
            patterns=["{meta,zarr}.json"],
        ),
    params:
        instances=to_json(config["segmentation"]["instances"]),
    threads: 2
    log:
        "logs/split_instances/{sample}.log",
    benchmark:
        "results/benchmarks/split_instances/{sample}.tsv"
    conda:
        "../../envs/image.yaml"
    shell:
        "python -m fewlabel split_instances --sample {wildcards.sample} "
        "--prediction {input.prediction} --model-dir {input.model} "
        "--output {output} --params {params.instances:q} --threads {threads} "
        "--log {log} 2>> {log}"


rule evaluate_segmentation:
    """IoU, SEG, MUCov, AP and count errors of one test volume (PCC of ISL when scored)."""
    input:
        unpack(segmentation_evaluation_inputs),
    output:
        SEGMENTATION_METRICS,
    params:
        pred_fluo=pred_fluo_value,
        target_fluo=target_fluo_value,
        evaluation=to_json(config["evaluation"]["segmentation"]),
    log:
        "logs/evaluate_segmentation/{sample}.log",
    conda:
        "../../envs/image.yaml"
    shell:
        "python -m fewlabel evaluate_segmentation --sample {wildcards.sample} --gt {input.gt} "
        "--pred {input.pred} --pred-fluo={params.pred_fluo:q} --target-fluo={params.target_fluo:q} --params {params.evaluation:q} "
        "--output {output} --log {log} 2>> {log}"


rule aggregate_segmentation:
    """One table of every test volume's segmentation metrics, pooled rows included."""
    localrule: True  # bookkeeping: runs on the submit host, never via sbatch
    input:
        expand(SEGMENTATION_METRICS, sample=PLAN.segmentation_eval_samples()),
    output:
        report(
            SEGMENTATION_SUMMARY,
            caption="../../resources/report/segmentation_summary.rst",
            category="Segmentation",
        ),
    params:
        sheet=config["samples"],
    log:
        "logs/aggregate_segmentation/segmentation.log",
    conda:
        "../../envs/image.yaml"
    shell:
        "python -m fewlabel aggregate_segmentation --sample-sheet {params.sheet:q} "
        "--output {output} "
        "--log {log} 2>> {log}"
