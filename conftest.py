"""Test-session set-up: 4 CPU devices for the data-parallel tests, and float64.

XLA_FLAGS must be set before JAX initialises its backend, so it is set here,
at conftest import, before any test module imports jax. float64 is enabled for
the whole session; float32 tests create float32 arrays explicitly and check
that the results stay float32. Figures are saved as PNG only
(``MBSTUDY_FIGURE_FORMATS``: the PDF's fonts take a sixth of a report's time), but
in the tests that check the PDF.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()

# figures as PNG only (what the report links); the two tests that check the PDF ask for it (analysis/render.py)
os.environ.setdefault("MBSTUDY_FIGURE_FORMATS", "png")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)


# ---------------------------------------------------------------- the quick study, beside the rest of the suite
#
# tests/test_study.py's end-to-end test runs `make study-quick` (7.5-8.5 minutes on two quiet cores) and then the report.
# When it is selected, the study starts in the background as soon as the tests are collected, and the test itself
# runs last: it waits for the study, then builds the report and checks it. The rest of the suite (mostly one core)
# and the study (two worker processes) share the cores, which cut `bash .ci/run` by about the study's length.

import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

QUICK_TEST = "test_the_quick_study_gives_every_section_of_the_report_numbers"
QUICK_STUDY = pytest.StashKey[dict]()


def start_quick_study(where: Path) -> dict:
    """`python -m experiments.study --quick` into a fresh store under ``where``, in the background."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{where / 'mlflow.db'}",
           "MBSTUDY_STUDY_TIMES": str(where / "study-times.json")}
    log = open(where / "study.log", "w+")  # noqa: SIM115 - closed by the test or at the session's end
    proc = subprocess.Popen([sys.executable, "-m", "experiments.study", "--quick"], cwd=Path(__file__).parent,
                            env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    return {"dir": where, "env": env, "proc": proc, "log": log, "t0": time.monotonic()}


def pytest_collection_modifyitems(session, config, items):
    quick = [i for i in items if i.name == QUICK_TEST]
    items[:] = [i for i in items if i.name != QUICK_TEST] + quick  # the quick study's test last


def pytest_collection_finish(session):
    if session.config.option.collectonly or not any(i.name == QUICK_TEST for i in session.items):
        return
    session.config.stash[QUICK_STUDY] = start_quick_study(Path(tempfile.mkdtemp(prefix="mbstudy-quick-")))


def pytest_sessionfinish(session, exitstatus):
    quick = session.config.stash.get(QUICK_STUDY, None)
    if quick is None:
        return
    if quick["proc"].poll() is None:  # the session stopped early (-x, Ctrl-C): the study with it
        quick["proc"].terminate()
        try:
            quick["proc"].wait(30)
        except subprocess.TimeoutExpired:
            quick["proc"].kill()
    quick["log"].close()
    shutil.rmtree(quick["dir"], ignore_errors=True)
