# Few-shot particle picking by positive-unlabelled learning (detection.method: pu; Vedrenne et
# al.): ROI -> windows at clicks / ROI voxels -> GE-binomial training with SWA -> dense tiled
# prediction -> post-processing -> the same points CSV as the density method (DETECTIONS),
# evaluated and reported by the shared stages.

if config["detection"]["method"] == "pu":
    PU_ROI = config["roi"]["enabled"]

    ruleorder: postprocess_pu > extract_points

    rule train_pu:
        """Train the PU window classifier on the clicks of the train/val samples."""
        input:
            images=expand(IMAGE, sample=PLAN.detection_fit_samples()),
            points=expand(POINTS, sample=PLAN.detection_fit_samples()),
            rois=expand(ROI_MASK, sample=PLAN.detection_fit_samples()) if PU_ROI else [],
            # volumes to predict hold a tile: checked first (ancient: never retrains)
            tiles=ancient(TILE_CHECK),
        output:
            directory(DETECTOR),
        params:
            sheet=config["samples"],
            settings=to_json(config["detection"]["pu"]),
            roi=section_params("roi"),
            use_roi="yes" if PU_ROI else "no",
            diameter=object_diameter_value(),
            seed=config["seed"],
        threads: 1
        resources:
            gpu=1,
        log:
            "logs/train_pu/detector.log",
        benchmark:
            "results/benchmarks/train_pu/detector.tsv"
        conda:
            "../../envs/torch.yaml"
        shell:
            "python -m fewlabel train_pu --sample-sheet {params.sheet:q} --out-dir {output} "
            "--params {params.settings:q} --roi-params {params.roi:q} --use-roi {params.use_roi:q} "
            "--object-diameter-um={params.diameter:q} "
            "--threads {threads} --seed {params.seed:q} --log {log} 2>> {log}"

    rule predict_pu:
        """Dense PU score map of one volume (shared tiled engine; window = receptive field)."""
        input:
            model=PLAN.detector_dir(),
            image=IMAGE,
            roi=prediction_roi,
        output:
            directory(DETECTION_MAP),
        params:
            predict=to_json(config["detection"]["pu"]["predict"]),
            roi=prediction_roi_param,
            seed=config["seed"],
        threads: 1
        resources:
            gpu=1,
        log:
            "logs/predict_pu/{sample}.log",
        benchmark:
            "results/benchmarks/predict_pu/{sample}.tsv"
        conda:
            "../../envs/torch.yaml"
        shell:
            "python -m fewlabel predict_pu --sample {wildcards.sample} "
            "--model-dir {input.model} --image {input.image} --roi={params.roi:q} "
            "--output {output} --params {params.predict:q} --threads {threads} "
            "--seed {params.seed:q} --log {log} 2>> {log}"

    rule postprocess_pu:
        """Threshold -> NMS -> averaging -> recentring -> CLAHE+Otsu filter -> points CSV."""
        input:
            model=PLAN.detector_dir(),
            score=DETECTION_MAP,
            image=IMAGE,
            roi=ROI_MASK if PU_ROI else [],
        output:
            DETECTIONS,
        params:
            post=to_json(config["detection"]["pu"]["postprocess"]),
        threads: 1
        log:
            "logs/postprocess_pu/{sample}.log",
        conda:
            "../../envs/image.yaml"
        shell:
            "python -m fewlabel postprocess_pu --sample {wildcards.sample} "
            "--score-map {input.score} --image {input.image} --model-dir {input.model} "
            "--roi={input.roi:q} --params {params.post:q} --output {output} "
            "--threads {threads} --log {log} 2>> {log}"
