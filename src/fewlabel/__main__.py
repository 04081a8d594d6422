"""``python -m fewlabel`` entry point."""

import sys

from fewlabel.cli import main

sys.exit(main())
