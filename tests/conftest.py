"""Fixtures and the hypothesis profiles of cyburn's tests (the helpers are in helpers.py)."""
import os
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import cyburn as cb

# ---- hypothesis ---------------------------------------------------------------------------------

settings.register_profile(
    "cyburn", deadline=None, max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("cyburn-thorough", parent=settings.get_profile("cyburn"),
                          max_examples=1000)
settings.load_profile(os.environ.get("CYBURN_HYPOTHESIS_PROFILE", "cyburn"))

# ---- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def restore_threads():
    """Puts cyburn's thread count back however the test ends (following the OpenMP runtime
    again if no count had been set)."""
    saved = cb._runtime.set_thread_count(0)
    cb._runtime.set_thread_count(saved)
    yield cb.get_num_threads()
    cb._runtime.set_thread_count(saved)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name: reproducible, different per test."""
    return np.random.default_rng([zlib.crc32(request.node.nodeid.encode()), 20240])
