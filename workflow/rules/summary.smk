# Run summary: one row per sample with what was produced, plus provenance (config, versions,
# git commit, input checksums).


rule record_config:
    """Snapshot of the validated config (defaults filled) for provenance and the report."""
    localrule: True  # bookkeeping: runs on the submit host, never via sbatch
    output:
        CONFIG_SNAPSHOT,
    params:
        # a one-line digest, not the config itself: a config change still reruns this rule,
        # and the rerun reason stays one line (the whole config was printed twice)
        digest=config_digest(),
    log:
        "logs/record_config/config.log",
    run:
        record_config(config, output[0], log=log[0])


rule summarize_run:
    """One table row per sample and a provenance record (config, versions, checksums)."""
    input:
        unpack(summary_inputs),
        config=CONFIG_SNAPSHOT,
    output:
        summary=RUN_SUMMARY,
        provenance=PROVENANCE,
    params:
        sheet=config["samples"],
    log:
        "logs/summarize_run/run.log",
    conda:
        "../../envs/io.yaml"
    shell:
        "python -m fewlabel summarize_run --sample-sheet {params.sheet:q} "
        "--config {input.config} --output {output.summary} "
        "--provenance {output.provenance} --log {log} 2>> {log}"
