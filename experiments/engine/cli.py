"""The command line of the study's steps that take no option (``baselines``, ``equivalence``, ``reduction``)."""

from __future__ import annotations

import argparse


def no_options(prog: str, doc: str, argv=None) -> None:
    """``--help`` prints the step's first paragraph of ``doc``; any other argument exits 2, before the step computes
    or writes anything (``prog``: ``python -m experiments.<step>``)."""
    argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0],
                            epilog="MLFLOW_TRACKING_URI selects the store (default: mlflow.db in the project root)."
                            ).parse_args(argv)
