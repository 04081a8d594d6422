"""Stage entry points: one module per Snakemake rule, named like the rule."""
