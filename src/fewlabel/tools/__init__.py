"""Command-line tools that are not workflow rules (``python -m fewlabel synth``), one module
per subcommand, registered like the stages (:mod:`fewlabel.stages`)."""
