"""cyburn's OpenMP runtime, and how its threads wait between kernels.

After a parallel region, GCC's libgomp keeps its threads spinning, waiting for the next one,
for GOMP_SPINCOUNT rounds of a pause loop (300,000 unless OMP_WAIT_POLICY or GOMP_SPINCOUNT
say otherwise: 4 ms on a CPU whose pause takes 13 ns, 15 ms where it takes 50), then they
sleep. A model written in NumPy calls a BLAS matrix product right after most kernels, and
while cyburn's threads spin they take the cores the BLAS threads need: the product ran at
half speed. Sleeping at once (OMP_WAIT_POLICY=passive) costs a wake-up per kernel instead:
back-to-back small kernels ran 2.8x slower.

cyburn therefore loads a runtime of its own and has its threads spin for SPIN_COUNT rounds
(a tenth of a millisecond or so: longer than the gap between back-to-back kernel calls,
short beside a matrix product), then sleep:
- setup.py links the kernels against a private copy of libgomp (SONAME libgomp-cyburn.so.1,
  beside the extensions); the repaired wheel carries that copy too. No other library in the
  process uses it, so its setting changes nothing for them (PyTorch and scikit-learn keep
  their own runtimes and settings).
- libgomp reads GOMP_SPINCOUNT once, when it loads: cyburn loads its private runtime itself
  (one dlopen, before its extensions, which then find it loaded), sets the variable for
  that call only and removes it right after, so the process' environment is left as it was.
- Its own SONAME is not enough: PyTorch loads its libgomp with RTLD_GLOBAL, and the dynamic
  linker binds every later library's OpenMP calls to a global definition before looking at
  the library's own dependencies. cyburn's extensions are therefore loaded with
  RTLD_DEEPBIND (where the platform has it), which puts their own dependencies first, and
  never RTLD_GLOBAL (even if the program asked for it), so that no one binds to them. NumPy
  is imported first, so that it never loads under those flags.
- The policy reported is judged from the runtime the extensions' calls were bound to.
- A user's OMP_WAIT_POLICY or GOMP_SPINCOUNT wins: then cyburn sets nothing.
- A build without a private runtime (CYBURN_SHARED_OPENMP=1, no patchelf, not Linux) shares
  the compiler's libgomp with whatever else loads it (PyTorch, built with GCC, has the same
  SONAME); cyburn then leaves that runtime's setting alone.
`cyburn.show_config()` prints the policy in force (`wait_policy()`).
"""
import glob
import os
import sys
from collections.abc import Mapping

import numpy  # noqa: F401  (loaded before cyburn changes dlopen flags, never under them)

SPIN_COUNT = 10000
LIBGOMP_SPIN_COUNT = 300000         # libgomp's own, when neither variable is set
PAUSE_SECONDS_AT_MOST = 100e-9      # one round of libgomp's spin loop (a pause: 10-65 ns)
USER_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def private_runtime() -> str | None:
    """The path of cyburn's own libgomp, beside the extensions (a source build's and the
    wheel's alike), or None when this build has none."""
    found = glob.glob(os.path.join(_PACKAGE, "libgomp-cyburn*.so*"))
    return os.path.realpath(found[0]) if found else None


def spin_rounds(environ: Mapping[str, str], ours: bool) -> float:
    """Rounds that the runtime's idle threads spin before they sleep, as libgomp reads its
    variables (OMP_WAIT_POLICY=passive: none; GOMP_SPINCOUNT, "infinite" included; else
    OMP_WAIT_POLICY=active: for ever), or SPIN_COUNT when cyburn chose (`ours`)."""
    policy = environ.get("OMP_WAIT_POLICY", "").strip().lower()
    count = environ.get("GOMP_SPINCOUNT", "").strip().lower()
    if policy == "passive":
        return 0.0
    if count:
        try:
            return float("inf") if count in ("infinite", "infinity") else float(int(count))
        except ValueError:
            pass                        # (libgomp ignores a value it cannot read)
    if policy == "active":
        return float("inf")
    return float(SPIN_COUNT if ours else LIBGOMP_SPIN_COUNT)


def _users_setting() -> str:
    """The user's wait-policy variables, as "NAME=value, ...", or "" when there are none."""
    return ", ".join(f"{name}={os.environ[name]}" for name in USER_VARIABLES
                     if name in os.environ)


def _preload_private_runtime(private: str, user: str) -> str:
    """Load cyburn's own libgomp before the extensions that need it (they then find it
    loaded, by its SONAME), with GOMP_SPINCOUNT set for that one dlopen only unless the
    user set a wait policy; returns the policy in force, in words."""
    import ctypes
    ours = not user
    if ours:
        os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    try:
        ctypes.CDLL(private, mode=os.RTLD_LOCAL)
    finally:
        if ours:
            del os.environ["GOMP_SPINCOUNT"]
    return (f"spin {SPIN_COUNT} rounds, then sleep (cyburn's private runtime)" if ours
            else f"{user} (the user's)")


def _import_extensions() -> None:
    """Import cyburn's extension modules (cyburn._runtime, then the kernels through
    cyburn._dispatch) with their own dependencies first in their symbol lookup
    (RTLD_DEEPBIND) and nothing of theirs made global."""
    if not hasattr(sys, "getdlopenflags"):     # (no dlopen: not a POSIX system)
        from . import _dispatch, _runtime       # noqa: F401
        return
    flags = sys.getdlopenflags()
    sys.setdlopenflags((flags & ~getattr(os, "RTLD_GLOBAL", 0))
                       | getattr(os, "RTLD_DEEPBIND", 0))
    try:
        from . import _dispatch, _runtime       # noqa: F401
    finally:
        sys.setdlopenflags(flags)


def _load_runtime() -> str | None:
    """Load cyburn's extensions and OpenMP runtime; returns the wait policy in force, in
    words, judged from the runtime the extensions' calls were bound to."""
    private, user = private_runtime(), _users_setting()
    policy = _preload_private_runtime(private, user) if private else None
    _import_extensions()
    from . import _dispatch, _runtime
    if not _runtime.openmp_version():
        return "none (serial build)"
    ours = bool(private) and not user and os.path.realpath(_runtime.openmp_library()) == private
    _dispatch.kernels.configure_waiting(spin_rounds(os.environ, ours) * PAUSE_SECONDS_AT_MOST)
    if private is None or os.path.realpath(_runtime.openmp_library()) != private:
        return (f"{user} (the user's, in a shared runtime)" if user else
                "the shared runtime's own (cyburn's kernels do not call a private runtime)")
    return policy


_policy = _load_runtime()


def wait_policy() -> str | None:
    """How cyburn's OpenMP threads wait between kernels, in words."""
    return _policy
