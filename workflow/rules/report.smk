# One self-contained HTML report per run: samples, config, metrics, curves, projections with
# ground truth vs predictions, overlays, provenance.


rule build_report:
    input:
        report_input_files(),
    output:
        report(REPORT, caption="../report/report.rst", category="Report"),
    params:
        inputs=report_inputs_json(),
    log:
        "logs/build_report/report.log",
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m fewlabel build-report --output {output} --inputs-json {params.inputs:q} "
        "--log {log} 2>> {log}"
