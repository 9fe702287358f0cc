"""Test-session set-up: 4 CPU devices for the data-parallel tests, and float64.

XLA_FLAGS must be set before JAX initialises its backend, so it is set here,
at conftest import, before any test module imports jax. float64 is enabled for
the whole session; float32 tests create float32 arrays explicitly and check
that the results stay float32.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
