# Few-image instance segmentation: in silico labelling pretraining (label-free -> fluorescence),
# fine-tuning of mask + distance heads, h-maxima + watershed instances, evaluation.


rule pretrain_isl:
    input:
        images=expand(IMAGE, sample=isl_samples(["train", "val"])),
        targets=expand(TARGET, sample=isl_samples(["train", "val"])),
    output:
        directory(ISL_MODEL),
    params:
        train=isl_items_json("train"),
        val=isl_items_json("val"),
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
        "python -m fewlabel pretrain-isl --train-json {params.train:q} --val-json {params.val:q} "
        "--out-dir {output} --params {params.settings:q} --threads {threads} "
        "--seed {params.seed:q} --log {log} 2>> {log}"


rule predict_isl:
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
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m fewlabel predict-isl --sample {wildcards.sample} --model-dir {input.model} "
        "--image {input.image} --output {output} --params {params.predict:q} "
        "--threads {threads} --log {log} 2>> {log}"


rule train_segmenter:
    input:
        unpack(segmenter_training_inputs),
    output:
        directory(SEGMENTER),
    params:
        train=segmenter_items_json("train"),
        val=segmenter_items_json("val"),
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
        "python -m fewlabel train-segmenter --train-json {params.train:q} "
        "--val-json {params.val:q} --init-from={params.init:q} --out-dir {output} "
        "--params {params.settings:q} --threads {threads} --seed {params.seed:q} "
        "--log {log} 2>> {log}"


rule predict_segmentation:
    input:
        model=SEGMENTER,
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
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m fewlabel predict-segmentation --sample {wildcards.sample} "
        "--model-dir {input.model} --image {input.image} --output {output} "
        "--params {params.predict:q} --threads {threads} --log {log} 2>> {log}"


rule split_instances:
    input:
        prediction=SEGMENTATION_MAP,
        model=SEGMENTER,
    output:
        report(
            directory(INSTANCES),
            caption="../report/instances.rst",
            category="Segmentation",
            patterns=["zarr.json"],
        ),
    params:
        instances=to_json(config["segmentation"]["instances"]),
    threads: 2
    log:
        "logs/split_instances/{sample}.log",
    conda:
        "../../envs/image.yaml"
    shell:
        "python -m fewlabel split-instances --sample {wildcards.sample} "
        "--prediction {input.prediction} --model-dir {input.model} "
        "--output {output} --params {params.instances:q} --threads {threads} "
        "--log {log} 2>> {log}"


rule evaluate_segmentation:
    input:
        unpack(segmentation_evaluation_inputs),
    output:
        SEGMENTATION_METRICS,
    params:
        fluorescence=fluorescence_args,
        evaluation=to_json(config["evaluation"]["segmentation"]),
    log:
        "logs/evaluate_segmentation/{sample}.log",
    conda:
        "../../envs/image.yaml"
    shell:
        "python -m fewlabel evaluate-segmentation --sample {wildcards.sample} --gt {input.gt} "
        "--pred {input.pred} {params.fluorescence} --params {params.evaluation:q} "
        "--output {output} --log {log} 2>> {log}"


rule aggregate_segmentation:
    input:
        expand(SEGMENTATION_METRICS, sample=segmentation_eval_samples()),
    output:
        report(
            SEGMENTATION_SUMMARY,
            caption="../report/segmentation_summary.rst",
            category="Segmentation",
        ),
    log:
        "logs/aggregate_segmentation/segmentation.log",
    conda:
        "../../envs/image.yaml"
    shell:
        "python -m fewlabel aggregate-segmentation --inputs {input} --output {output} "
        "--log {log} 2>> {log}"
