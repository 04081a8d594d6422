# Synthetic demo inputs (config: demo). Their paths in the sample sheet may not exist yet.

DEMO_FILES = [
    f"{stem}{suffix}"
    for split in ("train", "val", "test")
    for stem, suffix in [
        (f"spots_{split}", ".tif"),
        (f"spots_{split}", ".csv"),
        (f"spots_{split}_all", ".csv"),
        (f"nuclei_{split}_labelfree", ".tif"),
        (f"nuclei_{split}_fluo", ".tif"),
        (f"nuclei_{split}_labels", ".tif"),
        (f"nuclei_{split}", ".csv"),
    ]
] + ["spots_val_region.csv"]


rule make_demo_data:
    """Write the synthetic demo volumes, annotations and manifest."""
    output:
        manifest=f"{config['demo']['output_dir']}/manifest.json",
        files=[f"{config['demo']['output_dir']}/{name}" for name in DEMO_FILES],
    params:
        demo=to_json(config["demo"]["params"]),
        seed=config["seed"],
        outdir=demo_outdir,
    log:
        "logs/make_demo_data/demo.log",
    conda:
        "../../envs/io.yaml"
    shell:
        "python -m fewlabel make_demo_data --outdir {params.outdir:q} --params {params.demo:q} "
        "--seed {params.seed:q} --log {log:q} 2>> {log:q}"
