"""Stage entry points: one module per Snakemake rule, named like the rule.

Module ``fewlabel.stages.<rule>`` defines ``register(subparsers)`` (adds the subcommand
``<rule>``; ``python -m fewlabel <rule> --help`` lists its options) and the entry function
``<rule>(args)``. A stage reads its inputs, calls the library and writes its outputs; the
algorithms live in the library, imported inside the entry function (:mod:`fewlabel.cli`).
"""
