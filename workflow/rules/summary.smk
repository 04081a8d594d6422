# Run summary: one row per sample with what was produced, plus provenance (config, versions,
# git commit, input checksums).


rule summarize_run:
    input:
        images=expand(IMAGE_SUMMARY, sample=SAMPLES.index),
        rois=expand(ROI_JSON, sample=SAMPLES.index) if config["roi"]["enabled"] else [],
    output:
        summary=RUN_SUMMARY,
        provenance=PROVENANCE,
    params:
        sheet=config["samples"],
        config=to_json(config),
    log:
        "logs/summarize_run/run.log",
    conda:
        "../../envs/io.yaml"
    shell:
        "python -m fewlabel summarize --sample-sheet {params.sheet:q} --image-summaries {input.images} "
        "--roi-jsons {input.rois} --config-json {params.config:q} --output {output.summary} "
        "--provenance {output.provenance} --log {log} 2>> {log}"
