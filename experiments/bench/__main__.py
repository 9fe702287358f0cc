"""``python -m experiments.bench``: see ``experiments/bench/__init__.py``."""

import sys

from experiments.bench.cli import main

sys.exit(main())
