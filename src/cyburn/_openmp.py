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
- libgomp reads GOMP_SPINCOUNT once, when it loads: cyburn sets the variable while its
  extensions load the private runtime and removes it right after, so the process'
  environment is left as it was.
- Its own SONAME is not enough: PyTorch loads its libgomp with RTLD_GLOBAL, and the dynamic
  linker binds every later library's OpenMP calls to a global definition before looking at
  the library's own dependencies. cyburn's extensions are therefore loaded with
  RTLD_DEEPBIND (where the platform has it), which puts their own dependencies first.
- A user's OMP_WAIT_POLICY or GOMP_SPINCOUNT wins: then cyburn sets nothing.
- A build without a private runtime (CYBURN_SHARED_OPENMP=1, no patchelf, not Linux) shares
  the compiler's libgomp with whatever else loads it (PyTorch, built with GCC, has the same
  SONAME); cyburn then leaves that runtime's setting alone.
`cyburn.show_config()` prints the policy in force (`wait_policy()`).
"""
import glob
import os
import sys

SPIN_COUNT = 10000
USER_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def private_runtime():
    """The path of cyburn's own libgomp (the source build's copy beside the extensions, or
    the one the repaired wheel carries in cyburn.libs/), or None when cyburn has none."""
    for pattern in ("libgomp-cyburn*.so*", os.path.join("..", "cyburn.libs", "libgomp*.so*")):
        found = sorted(glob.glob(os.path.join(_PACKAGE, pattern)))
        if found:
            return os.path.normpath(found[0])
    return None


def _load_extensions():
    """Import cyburn's extension modules (cyburn._runtime, then the kernels through
    cyburn._dispatch), which load the OpenMP runtime, binding their calls to cyburn's own
    runtime first (RTLD_DEEPBIND)."""
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | getattr(os, "RTLD_DEEPBIND", 0))
    try:
        from . import _dispatch, _runtime       # noqa: F401
    finally:
        sys.setdlopenflags(flags)


def _load_runtime():
    """Load cyburn's extensions with cyburn's wait policy; returns the policy in force, in
    words."""
    user = [f"{name}={os.environ[name]}" for name in USER_VARIABLES if name in os.environ]
    if user:
        _load_extensions()
        policy = f"{', '.join(user)} (the user's)"
    elif private_runtime() is None:
        _load_extensions()
        policy = "the shared runtime's own (no private OpenMP runtime in this build)"
    else:
        os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
        try:
            _load_extensions()
        finally:
            del os.environ["GOMP_SPINCOUNT"]
        policy = f"spin {SPIN_COUNT} rounds, then sleep (cyburn's private runtime)"
    from . import _runtime
    return policy if _runtime.openmp_version() else "none (serial build)"


_policy = _load_runtime()


def wait_policy():
    """How cyburn's OpenMP threads wait between kernels, in words."""
    return _policy
