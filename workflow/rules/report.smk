# One self-contained HTML report per run: samples, config, metrics, curves, projections with
# ground truth vs predictions, overlays, provenance.


rule build_report:
    """One self-contained HTML report of the run."""
    input:
        report_files,
        config=CONFIG_SNAPSHOT,
    output:
        report(REPORT, caption="../../resources/report/report.rst", category="Report"),
    params:
        sheet=config["samples"],
    log:
        "logs/build_report/report.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m fewlabel build_report --sample-sheet {params.sheet:q} "
        "--config {input.config} --output {output} --log {log} 2>> {log}"


onsuccess:
    run_end_message()
