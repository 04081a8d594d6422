# ROI segmentation (few-shot particle picking §2.2): CLAHE + 2-Gaussian mixture + morphology.


rule segment_roi:
    """ROI mask and class prior π of one volume (CLAHE, 2-Gaussian mixture, morphology)."""
    input:
        IMAGE,
    output:
        mask=directory(ROI_MASK),
        json=ROI_JSON,
    params:
        roi=section_params("roi"),
        seed=config["seed"],
    threads: 2
    log:
        "logs/segment_roi/{sample}.log",
    benchmark:
        "results/benchmarks/segment_roi/{sample}.tsv"
    conda:
        "../../envs/image.yaml"
    shell:
        "python -m fewlabel segment_roi --sample {wildcards.sample} --image {input} "
        "--mask-out {output.mask} --json-out {output.json} --params {params.roi:q} "
        "--threads {threads} --seed {params.seed:q} --log {log} 2>> {log}"
