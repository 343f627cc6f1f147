"""Choose the kernel module compiled for the best instruction set this CPU runs.

setup.py builds the same kernels for several x86-64 levels; importing one the CPU lacks would
crash on its first instruction, so the CPU is asked first (cyburn._runtime is baseline code).
CYBURN_SIMD=baseline|avx2|avx512 forces a level; elsewhere the only level is "default".
"""
import importlib
import importlib.util
import os
from collections.abc import Iterable, Sequence

from . import _machine, _runtime

ENV_VAR = "CYBURN_SIMD"
KNOWN_LEVELS = ("baseline", "avx2", "avx512", "default")


def choose_level(requested: str, available: Sequence[str]) -> str:
    """The level to load: `requested` (validated) or the best of `available`."""
    if not available:
        raise ImportError("cyburn has no kernel module for this CPU; reinstall it from source")
    if not requested:
        return available[-1]
    if requested not in KNOWN_LEVELS:
        raise ImportError(f"{ENV_VAR}={requested!r} is not a SIMD level; "
                          f"use one of {', '.join(available)}")
    if requested not in available:
        raise ImportError(f"{ENV_VAR}={requested!r}: this CPU or build does not support it; "
                          f"it supports {', '.join(available)}")
    return requested


def built_levels(cpu_levels: Iterable[str]) -> list[str]:
    """The levels of `cpu_levels` whose kernel module this installation has."""
    return [level for level in cpu_levels
            if importlib.util.find_spec(f"cyburn._kernels_{level}") is not None]


simd_level = choose_level(os.environ.get(ENV_VAR, "").strip().lower(),
                          built_levels(_runtime.simd_levels()))
kernels = importlib.import_module(f"cyburn._kernels_{simd_level}")
kernels.configure_memory(*_machine.kernel_cache_sizes())
kernels.configure_reuse(_machine.idle_memory_bytes())
