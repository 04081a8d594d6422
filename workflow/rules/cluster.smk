# Cluster runs (profiles/slurm): before the first sbatch, the partitions, GPU model, CPUs and
# memory that the planned cluster jobs ask for are checked against `sinfo`
# (fewlabel.slurm.site_problems); a profile not adapted to the site stops here, naming the
# value to change in its site block. Bookkeeping rules carry `localrule: True` (submit host).


def check_slurm_site():
    """Under `--executor slurm` only: stop before any job with every request that no node
    of its partition can satisfy (skipped with a warning when sinfo is unavailable)."""
    plugin = workflow.executor_plugin
    if plugin is None or plugin.name != "slurm":
        return
    from snakemake.logging import logger

    from fewlabel.slurm import job_request, site_problems, sinfo_nodes

    cores = workflow.resource_settings.cores
    if cores is not None:
        logger.warning(
            f"--cores {cores} caps every cluster job's threads at {cores} (profiles/default "
            "sets cores: all): run with --workflow-profile profiles/slurm instead of --profile."
        )
    nodes = sinfo_nodes()
    if nodes is None:
        logger.warning("SLURM site check skipped: `sinfo` is not available or failed.")
        return
    requests = [job_request(job) for job in workflow.dag.needrun_jobs() if not job.is_local]
    problems = site_problems(requests, nodes)
    if problems:
        raise WorkflowError(
            "the SLURM profile does not fit this cluster (nothing was submitted):\n  - "
            + "\n  - ".join(problems)
        )


onstart:
    check_slurm_site()
