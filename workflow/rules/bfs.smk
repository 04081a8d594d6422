# BFS-Net (segmentation.method: bfs; Dehghani et al.): instance segmentation from centroid
# clicks only. Clicks -> Voronoi centre maps -> S1 (centre likelihood) -> peak response maps ->
# pseudo-labels -> S2 (CE + L_BF) -> merged S1 peaks + watershed in S2's mask. The final labels
# are written at INSTANCES, so evaluate_segmentation / aggregate / report work unchanged.

if config["segmentation"]["method"] == "bfs":
    from fewlabel.plan_bfs import (
        BFS_CENTRES,
        BFS_LIKELIHOOD,
        BFS_MASK,
        BFS_PEAKS,
        BFS_PSEUDO,
        BFS_RESPONSE,
        BFS_S1,
        BFS_S2,
    )

    BFS = config["segmentation"]["bfs"]

    # the final labels come from bfs_instances, not from the distance segmenter's rule
    ruleorder: bfs_instances > split_instances

    rule bfs_centre_map:
        """Voronoi centre map of one training volume's clicks (eq. 1)."""
        input:
            image=IMAGE,
            points=POINTS,
        output:
            directory(BFS_CENTRES),
        params:
            centres=to_json(BFS["centres"]),
        threads: 1
        log:
            "logs/bfs_centre_map/{sample}.log",
        conda:
            "../../envs/image.yaml"
        shell:
            "python -m fewlabel bfs_centre_map --sample {wildcards.sample} --image {input.image} "
            "--points {input.points} --output {output} --params {params.centres:q} "
            "--threads {threads} --log {log} 2>> {log}"

    rule train_bfs_centres:
        """S1: centre-likelihood U-Net on the centre maps (eq. 2)."""
        input:
            images=expand(IMAGE, sample=PLAN.bfs_fit_samples()),
            centres=expand(BFS_CENTRES, sample=PLAN.bfs_fit_samples()),
            tiles=ancient(TILE_CHECK),
        output:
            directory(BFS_S1),
        params:
            sheet=config["samples"],
            settings=to_json(BFS["s1"]),
            seed=config["seed"],
        threads: 1
        resources:
            gpu=1,
        log:
            "logs/train_bfs_centres/s1.log",
        benchmark:
            "results/benchmarks/train_bfs_centres/s1.tsv"
        conda:
            "../../envs/torch.yaml"
        shell:
            "python -m fewlabel train_bfs_centres --sample-sheet {params.sheet:q} "
            "--out-dir {output} --params {params.settings:q} --threads {threads} "
            "--seed {params.seed:q} --log {log} 2>> {log}"

    rule predict_bfs_centres:
        """S1's centre likelihood of one volume (tiled)."""
        input:
            model=BFS_S1,
            image=IMAGE,
        output:
            directory(BFS_LIKELIHOOD),
        params:
            predict=to_json(config["segmentation"]["predict"]),
        threads: 1
        resources:
            gpu=1,
        log:
            "logs/predict_bfs_centres/{sample}.log",
        conda:
            "../../envs/torch.yaml"
        shell:
            "python -m fewlabel predict_bfs_centres --sample {wildcards.sample} "
            "--model-dir {input.model} --image {input.image} --output {output} "
            "--params {params.predict:q} --threads {threads} --log {log} 2>> {log}"

    rule bfs_pseudo_labels:
        """Peak response maps of S1 -> pseudo instance labels of one training volume."""
        input:
            model=BFS_S1,
            image=IMAGE,
            likelihood=BFS_LIKELIHOOD,
            points=POINTS,
        output:
            labels=directory(BFS_PSEUDO),
            response=directory(BFS_RESPONSE),
        params:
            prm=to_json(BFS["prm"]),
        threads: 1
        resources:
            gpu=1,
        log:
            "logs/bfs_pseudo_labels/{sample}.log",
        conda:
            "../../envs/torch.yaml"
        shell:
            "python -m fewlabel bfs_pseudo_labels --sample {wildcards.sample} "
            "--model-dir {input.model} --image {input.image} --likelihood {input.likelihood} "
            "--points {input.points} --labels {output.labels} --response {output.response} "
            "--params {params.prm:q} --threads {threads} --log {log} 2>> {log}"

    rule train_bfs_segmenter:
        """S2: segmentation U-Net on the pseudo-labels, CE + lambda_BF * L_BF (eq. 3-5)."""
        input:
            images=expand(IMAGE, sample=PLAN.bfs_fit_samples()),
            pseudo=expand(BFS_PSEUDO, sample=PLAN.bfs_fit_samples()),
        output:
            directory(BFS_S2),
        params:
            sheet=config["samples"],
            settings=to_json(BFS["s2"]),
            seed=config["seed"],
        threads: 1
        resources:
            gpu=1,
        log:
            "logs/train_bfs_segmenter/s2.log",
        benchmark:
            "results/benchmarks/train_bfs_segmenter/s2.tsv"
        conda:
            "../../envs/torch.yaml"
        shell:
            "python -m fewlabel train_bfs_segmenter --sample-sheet {params.sheet:q} "
            "--out-dir {output} --params {params.settings:q} --threads {threads} "
            "--seed {params.seed:q} --log {log} 2>> {log}"

    rule predict_bfs_segmenter:
        """S2's foreground probability of one volume (tiled)."""
        input:
            model=BFS_S2,
            image=IMAGE,
        output:
            directory(BFS_MASK),
        params:
            predict=to_json(config["segmentation"]["predict"]),
        threads: 1
        resources:
            gpu=1,
        log:
            "logs/predict_bfs_segmenter/{sample}.log",
        conda:
            "../../envs/torch.yaml"
        shell:
            "python -m fewlabel predict_bfs_segmenter --sample {wildcards.sample} "
            "--model-dir {input.model} --image {input.image} --output {output} "
            "--params {params.predict:q} --threads {threads} --log {log} 2>> {log}"

    rule bfs_instances:
        """Merged S1 peaks + watershed inside S2's mask -> instance labels (chunk-safe)."""
        input:
            likelihood=BFS_LIKELIHOOD,
            mask=BFS_MASK,
            s1=BFS_S1,
            s2=BFS_S2,
        output:
            labels=report(
                directory(INSTANCES),
                caption="../../resources/report/instances.rst",
                category="Segmentation",
                patterns=["{meta,zarr}.json"],
            ),
            centres=BFS_PEAKS,
        params:
            instances=to_json(BFS["instances"]),
        threads: 2
        log:
            "logs/bfs_instances/{sample}.log",
        conda:
            "../../envs/torch.yaml"
        shell:
            "python -m fewlabel bfs_instances --sample {wildcards.sample} "
            "--likelihood {input.likelihood} --mask {input.mask} --s1-dir {input.s1} "
            "--s2-dir {input.s2} --output {output.labels} "
            "--centres {output.centres} --params {params.instances:q} --threads {threads} "
            "--log {log} 2>> {log}"
