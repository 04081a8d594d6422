# Particle detection: density targets -> DM-DetNet3D training -> tiled prediction -> peaks
# (detection.method: density), or the LoG baseline (detection.method: log).


rule make_density_targets:
    """Gaussian density target and weight map of one annotated volume (DM-DetNet3D eq. 2)."""
    input:
        unpack(density_target_inputs),
    output:
        target=directory(DENSITY_TARGET),
        weight=directory(DENSITY_WEIGHT),
    params:
        targets=to_json(config["detection"]["targets"]),
        diameter=object_diameter_value(),
        region=sheet_value("annotated_region"),
        roi=roi_mask_value,
    threads: 2
    log:
        "logs/make_density_targets/{sample}.log",
    benchmark:
        "results/benchmarks/make_density_targets/{sample}.tsv"
    conda:
        "../../envs/image.yaml"
    shell:
        "python -m fewlabel make_density_targets --sample {wildcards.sample} "
        "--image {input.image} --points {input.points} --target {output.target} "
        "--weight {output.weight} --params {params.targets:q} --object-diameter-um={params.diameter:q} "
        "--annotated-region={params.region:q} --roi={params.roi:q} --threads {threads} --log {log} 2>> {log}"


if config["detection"]["method"] == "density":

    rule train_detector:
        """Train DM-DetNet3D on the train samples, tune its threshold on the val samples."""
        input:
            images=expand(IMAGE, sample=PLAN.detection_fit_samples()),
            targets=expand(DENSITY_TARGET, sample=PLAN.detection_fit_samples()),
            weights=expand(DENSITY_WEIGHT, sample=PLAN.detection_fit_samples()),
            points=expand(POINTS, sample=PLAN.detection_fit_samples()),
            # volumes to predict hold a tile: checked first (ancient: never retrains)
            tiles=ancient(TILE_CHECK),
            init=config["detection"]["train"]["init_from"] or [],
        output:
            directory(DETECTOR),
        params:
            sheet=config["samples"],
            settings=to_json(config["detection"]["train"]),
            peaks=to_json(config["detection"]["peaks"]),
            evaluation=to_json(config["evaluation"]["detection"]),
            diameter=object_diameter_value(),
            grid="model" if config["detection"]["predict"]["model_grid"] else "image",
            seed=config["seed"],
        threads: 1
        resources:
            gpu=1,
            runtime=train_detector_minutes,
        log:
            "logs/train_detector/detector.log",
        benchmark:
            "results/benchmarks/train_detector/detector.tsv"
        conda:
            "../../envs/torch.yaml"
        shell:
            "python -m fewlabel train_detector --sample-sheet {params.sheet:q} "
            "--out-dir {output} --params {params.settings:q} --peaks {params.peaks:q} "
            "--evaluation {params.evaluation:q} --predict-grid {params.grid:q} "
            "--object-diameter-um={params.diameter:q} --threads {threads} --seed {params.seed:q} --log {log} 2>> {log}"

    if config["detection"]["slabs"] == 1:

        rule predict_volume:
            """Tiled, Gaussian-blended DM-DetNet3D prediction of one volume (one job)."""
            input:
                model=PLAN.detector_dir(),
                image=IMAGE,
                roi=prediction_roi,
            output:
                directory(DETECTION_MAP),
            params:
                predict=to_json(config["detection"]["predict"]),
                seed=config["seed"],
                roi=prediction_roi_param,
            threads: 1
            resources:
                gpu=1,
                runtime=predict_volume_minutes,
            log:
                "logs/predict_volume/{sample}.log",
            benchmark:
                "results/benchmarks/predict_volume/{sample}.tsv"
            conda:
                "../../envs/torch.yaml"
            shell:
                "python -m fewlabel predict_volume --sample {wildcards.sample} "
                "--model-dir {input.model} --image {input.image} --output {output} "
                "--params {params.predict:q} --roi={params.roi:q} --threads {threads} "
                "--seed {params.seed:q} --log {log} 2>> {log}"

    else:

        checkpoint init_prediction_slabs:
            """Create the shared prediction array of one volume and plan its slab jobs."""
            input:
                model=PLAN.detector_dir(),
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
                "logs/init_prediction_slabs/{sample}.log",
            conda:
                "../../envs/torch.yaml"
            shell:
                "python -m fewlabel init_prediction_slabs --sample {wildcards.sample} "
                "--model-dir {input.model} --image {input.image} --output {params.final:q} "
                "--n-slabs {params.slabs:q} --slab-voxels {params.slab_voxels:q} "
                "--plan {output.plan} --params {params.predict:q} --log {log} 2>> {log}"

        rule predict_volume_slab:
            """Predict one slab (a contiguous run of output chunks) into the shared array."""
            input:
                model=PLAN.detector_dir(),
                image=IMAGE,
                plan=DETECTION_SLAB_PLAN,
                roi=prediction_roi,
            output:
                DETECTION_SLAB_MARKER,
            params:
                predict=to_json(config["detection"]["predict"]),
                final=DETECTION_MAP,
                seed=config["seed"],
                roi=prediction_roi_param,
            threads: 1
            resources:
                gpu=1,
                runtime=predict_volume_minutes,
            log:
                "logs/predict_volume_slab/{sample}.{slab}-of-{n_slabs}.log",
            benchmark:
                "results/benchmarks/predict_volume_slab/{sample}.{slab}-of-{n_slabs}.tsv"
            conda:
                "../../envs/torch.yaml"
            shell:
                "python -m fewlabel predict_volume_slab --sample {wildcards.sample} "
                "--model-dir {input.model} --image {input.image} --output {params.final:q} "
                "--slab {wildcards.slab} --n-slabs {wildcards.n_slabs} "
                "--params {params.predict:q} --roi={params.roi:q} --threads {threads} "
                "--seed {params.seed:q} "
                "--log {log} 2>> {log}"

        rule finalize_prediction:
            """Publish the prediction once every slab job of this run has finished."""
            localrule: True  # bookkeeping: runs on the submit host, never via sbatch
            input:
                slab_markers,
            output:
                directory(DETECTION_MAP),
            log:
                "logs/finalize_prediction/{sample}.log",
            conda:
                "../../envs/torch.yaml"
            shell:
                "python -m fewlabel finalize_prediction --sample {wildcards.sample} "
                "--output {output} --log {log} 2>> {log}"


if config["detection"]["method"] == "log" or PLAN.compare_log():

    rule fit_log_threshold:
        """Tune the LoG's threshold on annotations: the detector (method log, train + val) or
        the baseline beside a density detector (on the split its threshold is tuned on)."""
        input:
            images=expand(IMAGE, sample=PLAN.detection_fit_samples(PLAN.log_splits())),
            points=expand(POINTS, sample=PLAN.detection_fit_samples(PLAN.log_splits())),
            regions=PLAN.region_files(PLAN.detection_fit_samples(PLAN.log_splits())),
        output:
            directory(PLAN.log_dir()),
        params:
            sheet=config["samples"],
            splits=",".join(PLAN.log_splits()),
            settings=to_json(config["detection"]["log"]),
            peaks=to_json(config["detection"]["peaks"]),
            targets=to_json(config["detection"]["targets"]),
            evaluation=to_json(config["evaluation"]["detection"]),
            diameter=object_diameter_value(),
        threads: 2
        log:
            "logs/fit_log_threshold/detector.log",
        benchmark:
            "results/benchmarks/fit_log_threshold/detector.tsv"
        conda:
            "../../envs/image.yaml"
        shell:
            "python -m fewlabel fit_log_threshold --sample-sheet {params.sheet:q} "
            "--splits {params.splits:q} --params {params.settings:q} --peaks {params.peaks:q} "
            "--targets {params.targets:q} --object-diameter-um={params.diameter:q} "
            "--evaluation {params.evaluation:q} --output-dir {output} --log {log} 2>> {log}"

    rule predict_log:
        """LoG response map of one volume (the classical baseline's 'prediction'; beside a
        learned detector, of the test volumes it is compared on)."""
        input:
            model=PLAN.detector_dir() if config["detection"]["method"] == "log" else LOG_BASELINE,
            image=IMAGE,
        output:
            directory(PLAN.log_map()),
        threads: 2
        log:
            "logs/predict_log/{sample}.log",
        benchmark:
            "results/benchmarks/predict_log/{sample}.tsv"
        conda:
            "../../envs/image.yaml"
        shell:
            "python -m fewlabel predict_log --sample {wildcards.sample} "
            "--model-dir {input.model} --image {input.image} --output {output} "
            "--threads {threads} --log {log} 2>> {log}"


rule extract_points:
    """Peaks of the predicted map above the tuned threshold, sub-voxel centres (CSV)."""
    input:
        model=PLAN.detector_dir(),
        density=DETECTION_MAP,
    output:
        DETECTIONS,
    params:
        points=to_json(config["detection"]["peaks"]),
        diameter=object_diameter_value(),
    threads: 2
    log:
        "logs/extract_points/{sample}.log",
    conda:
        "../../envs/image.yaml"
    shell:
        "python -m fewlabel extract_points --sample {wildcards.sample} "
        "--density {input.density} --model-dir {input.model} --params {params.points:q} "
        "--object-diameter-um={params.diameter:q} --output {output} --threads {threads} --log {log} 2>> {log}"


rule evaluate_detection:
    """F1, precision, recall and RMSE of one test volume's detections (Hungarian matching;
    precision inside its annotated_region when the sheet gives one)."""
    input:
        unpack(evaluate_detection_inputs(DETECTIONS)),
    output:
        metrics=DETECTION_METRICS,
        matches=DETECTION_MATCHES,
    params:
        evaluation=to_json(config["evaluation"]["detection"]),
        region=sheet_value("annotated_region"),
    log:
        "logs/evaluate_detection/{sample}.log",
    conda:
        "../../envs/image.yaml"
    shell:
        "python -m fewlabel evaluate_detection --sample {wildcards.sample} --gt {input.gt} "
        "--pred {input.pred} --volume {input.volume} --params {params.evaluation:q} "
        "--annotated-region={params.region:q} "
        "--output {output.metrics} --matches {output.matches} --log {log} 2>> {log}"


rule aggregate_detection:
    """One table of every test volume's detection metrics, pooled rows included."""
    localrule: True  # bookkeeping: runs on the submit host, never via sbatch
    input:
        expand(DETECTION_METRICS, sample=PLAN.detection_eval_samples()),
    output:
        report(
            DETECTION_SUMMARY,
            caption="../../resources/report/detection_summary.rst",
            category="Detection",
        ),
    params:
        sheet=config["samples"],
        metrics=lambda wildcards: DETECTION_METRICS,  # a template: {sample} stays
    log:
        "logs/aggregate_detection/detection.log",
    conda:
        "../../envs/image.yaml"
    shell:
        "python -m fewlabel aggregate_detection --sample-sheet {params.sheet:q} "
        "--metrics {params.metrics:q} --output {output} --log {log} 2>> {log}"


if PLAN.compare_log_on_test():
    # the LoG baseline's detections of the test volumes, scored as the learned detector's

    use rule extract_points as extract_points_log_baseline with:
        input:
            model=LOG_BASELINE,
            density=LOG_BASELINE_MAP,
        output:
            LOG_BASELINE_POINTS,
        log:
            "logs/extract_points_log_baseline/{sample}.log",

    use rule evaluate_detection as evaluate_detection_log_baseline with:
        input:
            unpack(evaluate_detection_inputs(LOG_BASELINE_POINTS)),
        output:
            metrics=LOG_BASELINE_METRICS,
            matches=LOG_BASELINE_MATCHES,
        log:
            "logs/evaluate_detection_log_baseline/{sample}.log",

    use rule aggregate_detection as aggregate_detection_log_baseline with:
        localrule: True  # `use rule` resets it to False unless given here
        input:
            expand(LOG_BASELINE_METRICS, sample=PLAN.detection_eval_samples()),
        output:
            LOG_BASELINE_SUMMARY,
        params:
            sheet=config["samples"],
            metrics=lambda wildcards: LOG_BASELINE_METRICS,
        log:
            "logs/aggregate_detection_log_baseline/detection.log",
