# Particle detection: density targets -> DM-DetNet3D training -> tiled prediction -> peaks
# (detection.method: density), or the LoG baseline (detection.method: log).


rule make_density_targets:
    input:
        image=IMAGE,
        points=POINTS,
    output:
        target=directory(DENSITY_TARGET),
        weight=directory(DENSITY_WEIGHT),
    params:
        targets=to_json(config["detection"]["targets"]),
    threads: 2
    log:
        "logs/make_density_targets/{sample}.log",
    conda:
        "../../envs/image.yaml"
    shell:
        "python -m fewlabel make-density-targets --sample {wildcards.sample} --image {input.image} "
        "--points {input.points} --target {output.target} --weight {output.weight} "
        "--params {params.targets:q} --threads {threads} --log {log} 2>> {log}"


if config["detection"]["method"] == "density":

    rule train_detector:
        input:
            images=expand(IMAGE, sample=detection_fit_samples()),
            targets=expand(DENSITY_TARGET, sample=detection_fit_samples()),
            weights=expand(DENSITY_WEIGHT, sample=detection_fit_samples()),
            points=expand(POINTS, sample=detection_fit_samples()),
        output:
            directory(DETECTOR),
        params:
            train=detector_items_json("train"),
            val=detector_items_json("val"),
            settings=to_json(config["detection"]["train"]),
            peaks=to_json(config["detection"]["peaks"]),
            seed=config["seed"],
        threads: 1
        resources:
            gpu=1,
        log:
            "logs/train_detector/detector.log",
        benchmark:
            "results/benchmarks/train_detector/detector.tsv"
        conda:
            "../../envs/torch.yaml"
        shell:
            "python -m fewlabel train-detector --train-json {params.train:q} "
            "--val-json {params.val:q} --out-dir {output} --params {params.settings:q} "
            "--peaks {params.peaks:q} --threads {threads} --seed {params.seed:q} "
            "--log {log} 2>> {log}"

    if config["detection"]["slabs"] == 1:

        rule predict_volume:
            input:
                model=DETECTOR,
                image=IMAGE,
            output:
                directory(DETECTION_MAP),
            params:
                predict=to_json(config["detection"]["predict"]),
                seed=config["seed"],
            threads: 1
            resources:
                gpu=1,
            log:
                "logs/predict_volume/{sample}.log",
            benchmark:
                "results/benchmarks/predict_volume/{sample}.tsv"
            conda:
                "../../envs/torch.yaml"
            shell:
                "python -m fewlabel predict --sample {wildcards.sample} --model-dir {input.model} "
                "--image {input.image} --output {output} --params {params.predict:q} "
                "--threads {threads} --seed {params.seed:q} --log {log} 2>> {log}"

    else:

        checkpoint predict_volume_init:
            input:
                model=DETECTOR,
                image=IMAGE,
            # also creates <DETECTION_MAP>.partial (not declared: finalize renames it away,
            # and a declared checkpoint output that vanished would re-trigger the checkpoint)
            output:
                plan=DETECTION_SLAB_PLAN,
            params:
                predict=to_json(config["detection"]["predict"]),
                final=DETECTION_MAP,
                slabs=config["detection"]["slabs"],
                slab_voxels=config["detection"]["slab_voxels"],
            log:
                "logs/predict_volume_init/{sample}.log",
            conda:
                "../../envs/torch.yaml"
            shell:
                "python -m fewlabel predict-init --sample {wildcards.sample} "
                "--model-dir {input.model} --image {input.image} --output {params.final} "
                "--n-slabs {params.slabs:q} --slab-voxels {params.slab_voxels:q} "
                "--plan {output.plan} --params {params.predict:q} --log {log} 2>> {log}"

        rule predict_volume_slab:
            input:
                model=DETECTOR,
                image=IMAGE,
                plan=DETECTION_SLAB_PLAN,
            output:
                DETECTION_SLAB_MARKER,
            params:
                predict=to_json(config["detection"]["predict"]),
                final=DETECTION_MAP,
                seed=config["seed"],
            threads: 1
            resources:
                gpu=1,
            log:
                "logs/predict_volume_slab/{sample}.{slab}-of-{n_slabs}.log",
            conda:
                "../../envs/torch.yaml"
            shell:
                "python -m fewlabel predict --sample {wildcards.sample} --model-dir {input.model} "
                "--image {input.image} --output {params.final} --slab {wildcards.slab} "
                "--n-slabs {wildcards.n_slabs} --params {params.predict:q} --threads {threads} "
                "--seed {params.seed:q} --log {log} 2>> {log}"

        rule predict_volume:
            input:
                slab_markers,
            output:
                directory(DETECTION_MAP),
            log:
                "logs/predict_volume/{sample}.log",
            conda:
                "../../envs/torch.yaml"
            shell:
                "python -m fewlabel predict-finalize --sample {wildcards.sample} "
                "--output {output} --log {log} 2>> {log}"

else:

    rule train_detector:
        input:
            images=expand(IMAGE, sample=detection_fit_samples()),
            points=expand(POINTS, sample=detection_fit_samples()),
        output:
            directory(DETECTOR),
        params:
            samples=log_items_json(),
            settings=to_json(config["detection"]["log"]),
            peaks=to_json(config["detection"]["peaks"]),
        log:
            "logs/train_detector/detector.log",
        conda:
            "../../envs/image.yaml"
        shell:
            "python -m fewlabel train-log --samples-json {params.samples:q} "
            "--params {params.settings:q} --peaks {params.peaks:q} --output-dir {output} "
            "--log {log} 2>> {log}"

    rule predict_volume:
        input:
            model=DETECTOR,
            image=IMAGE,
        output:
            directory(DETECTION_MAP),
        threads: 2
        log:
            "logs/predict_volume/{sample}.log",
        conda:
            "../../envs/image.yaml"
        shell:
            "python -m fewlabel predict-log --sample {wildcards.sample} --model-dir {input.model} "
            "--image {input.image} --output {output} --threads {threads} --log {log} 2>> {log}"


rule extract_points:
    input:
        model=DETECTOR,
        density=DETECTION_MAP,
    output:
        DETECTIONS,
    params:
        points=to_json(config["detection"]["peaks"]),
    threads: 2
    log:
        "logs/extract_points/{sample}.log",
    conda:
        "../../envs/image.yaml"
    shell:
        "python -m fewlabel extract-points --sample {wildcards.sample} --density {input.density} "
        "--model-dir {input.model} --params {params.points:q} --output {output} "
        "--threads {threads} --log {log} 2>> {log}"


rule evaluate_sample:
    input:
        gt=POINTS,
        pred=DETECTIONS,
        volume=IMAGE,
    output:
        metrics=DETECTION_METRICS,
        matches=DETECTION_MATCHES,
    params:
        evaluation=to_json(config["evaluation"]["detection"]),
    log:
        "logs/evaluate_sample/{sample}.log",
    conda:
        "../../envs/image.yaml"
    shell:
        "python -m fewlabel evaluate-detection --sample {wildcards.sample} --gt {input.gt} "
        "--pred {input.pred} --volume {input.volume} --params {params.evaluation:q} "
        "--output {output.metrics} --matches {output.matches} --log {log} 2>> {log}"


rule aggregate_metrics:
    input:
        expand(DETECTION_METRICS, sample=detection_eval_samples()),
    output:
        report(
            DETECTION_SUMMARY,
            caption="../report/detection_summary.rst",
            category="Detection",
        ),
    log:
        "logs/aggregate_metrics/detection.log",
    conda:
        "../../envs/image.yaml"
    shell:
        "python -m fewlabel aggregate-metrics --inputs {input} --output {output} "
        "--log {log} 2>> {log}"
