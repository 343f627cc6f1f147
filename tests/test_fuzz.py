"""Bad input never crashes: a hypothesis fuzz of every public function, run in a subprocess.

`test_fuzz_every_public_function` starts a fresh interpreter (helpers.run_python) that runs
`main()` below, so a segfault or an abort is a failed test with a report, not a lost pytest
run. For each public function the child draws calls from `GENERATORS`: random shapes (0-d to
4-d, zero-size, now and then a large one that takes the threaded paths), dtypes (float16/32/64,
bfloat16, ints, bool, non-native byte order, and the unsupported complex, object, str and
datetime), layouts (F order, transposed, sliced with steps, negative strides, zero strides,
misaligned, read-only, Python lists), NaN/inf/subnormal values, axes in and out of range,
`out=` / `grad_out=` of the wrong shape or dtype, read-only, a list, the input itself or an
overlapping view of it, class targets out of range / of the wrong dtype or shape, class and
affine weights of the wrong shape, statistics of the wrong shape or None, num_groups negative,
zero, not a divisor, not an int, odd eps / scale / momentum / label_smoothing / z_loss /
softcap / chunk_size / ignore_index / dloss, masks of the wrong shape or dtype, and mismatched
pairs of arrays.

Every call is made three times on identical, independently built arguments (`Case.build`):
once to `cyburn.reference`, once to cyburn, once kept pristine. The rules (`check_case`):

  (a) cyburn returns: the reference must have returned too (else "succeeded where the
      reference raised"; one exception: the reference cannot reduce over a zero-size axis,
      and then cyburn's zero-size results are accepted as the API says), with the same
      structure (tuples, None), shapes and dtypes and values within `close`: NaN at the same
      places, the same infinities, finite values within 64 eps(compute dtype) (+ 2 eps of a
      half result) times max(|values|) or, where the result is a difference of larger terms (a
      backward pass, an affine output, a gradient), times the largest term (`HINTS`, computed
      in float64 from the arguments). `out=` / `grad_out=` must be the object returned;
      running_mean / running_var must be updated as the reference updates them; every other
      input array must be left unchanged.
  (b) cyburn raises: the exception must be a TypeError, ValueError, IndexError or
      numpy.exceptions.AxisError (anything else is a failure) whose message "names the
      argument". What that means: every drawn call records the faults injected into it
      (`Ctx.fault`: the argument names, and dtype names for a dtype fault, that an error about
      it may use). With exactly one fault, the message must contain one of that fault's names
      as a whole word (a plural "s" allowed: "targets"); otherwise (no fault, or several, when
      the order of checks decides which is reported) it must contain the name of a parameter of
      the function or the dtype of one of the array arguments. When the reference raised too
      and at most one fault was injected, cyburn's exception must be an instance of the
      reference's type (when that is one of the four). cyburn raising where the reference
      returned is allowed by the contract ("either ... or ...") but is counted and listed in
      the summary ("raised, reference returned") for review.
  A crash (signal) or a hang (timeout) of the child is a failure, reported with the last call
  made (`last_call.txt`: a `replay(...)` line that reproduces it, and the arguments).

Reproducible: hypothesis is derandomized (fixed seeds, no example database) with a fixed
number of examples per function (`CYBURN_FUZZ_EXAMPLES`, default `EXAMPLES`); array values
come from NumPy generators seeded by drawn integers. Failures are collected rather than raised
(so that one run reports them all); for each kind of failure (function, rule, message with the
numbers blanked) the smallest case seen is reported with a `replay(...)` call:
    cd tests && python -c "from test_fuzz import *; replay('softmax', {...}, faults=...)"
which rebuilds the arguments and runs the same checks, printing what happened. To fuzz
longer: CYBURN_FUZZ_EXAMPLES=5000 python -m pytest tests/test_fuzz.py -s, or in one process
    cd tests && python -c "import test_fuzz as f; f.main(None, ['gelu'], 5000)"
"""
import collections
import faulthandler
import inspect
import math
import os
import re
import sys
import time
import traceback
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from numpy.exceptions import AxisError

try:
    import ml_dtypes
    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:                 # pragma: no cover - ml_dtypes is a test dependency
    ml_dtypes, BF16 = None, None

import cyburn as cb

EXAMPLES = int(os.environ.get("CYBURN_FUZZ_EXAMPLES", "400"))   # per function (~60 s in all)
TIMEOUT = 900                   # seconds for the whole child (a hang is a failure)
ALLOWED = (TypeError, ValueError, IndexError, AxisError)

# The public names that are not fuzzed here, and why; every other public function must have a
# generator (test_every_public_function_has_a_generator).
NOT_FUZZED = {
    "get_num_threads": "thread-count API", "set_num_threads": "thread-count API",
    "num_threads": "thread-count API", "show_config": "build report", "simd_path": "build report",
    "reference": "the oracle itself",
    "swish": "silu under another name",
    "adamw_step": "no generator yet: tests/test_optim.py checks its inputs",
}
FUNCTIONS = [name for name in cb.__all__ if name not in NOT_FUZZED]


def test_every_public_function_has_a_generator():
    """Fails loudly when a public function is added without a fuzz generator (or one is
    dropped while its generator stays)."""
    assert set(NOT_FUZZED) <= set(cb.__all__), sorted(set(NOT_FUZZED) - set(cb.__all__))
    missing = [name for name in FUNCTIONS if name not in GENERATORS]
    assert not missing, f"fuzz every public function: add a generator for {missing}"
    assert sorted(GENERATORS) == sorted(FUNCTIONS), sorted(set(GENERATORS) - set(FUNCTIONS))


# ================================================================================================
# The parent: run the fuzz in a child interpreter
# ================================================================================================

@pytest.mark.slow
def test_fuzz_every_public_function(tmp_path):
    from helpers import run_python
    test_every_public_function_has_a_generator()
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    last = tmp_path / "last_call.txt"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import test_fuzz; "
            "sys.exit(test_fuzz.main(sys.argv[2]))")
    start = time.perf_counter()
    try:
        proc = run_python(code, tmp_path, args=(tests_dir, last), timeout=TIMEOUT)
    except Exception as e:          # subprocess.TimeoutExpired: a hang
        pytest.fail(f"the fuzz child did not finish in {TIMEOUT} s ({e!r}); last call:\n"
                    + (last.read_text() if last.exists() else "(none)"))
    elapsed = time.perf_counter() - start
    output = f"--- child stdout ---\n{proc.stdout}\n--- child stderr ---\n{proc.stderr}"
    print(output)
    print(f"fuzz child: exit code {proc.returncode}, {elapsed:.1f} s")
    if proc.returncode < 0:
        pytest.fail(f"the fuzz child CRASHED with signal {-proc.returncode}; the call that "
                    f"crashed it:\n{last.read_text() if last.exists() else '(unknown)'}\n"
                    f"{output}")
    assert proc.returncode == 0, f"fuzz failures (exit code {proc.returncode}):\n{output}"
    assert "FUZZ SUMMARY" in proc.stdout


# ================================================================================================
# Argument specifications: plain, printable values that build the same arguments every time
# ================================================================================================

CODES = {"f2": np.float16, "f4": np.float32, "f8": np.float64, "i1": np.int8, "i2": np.int16,
         "i4": np.int32, "i8": np.int64, "u1": np.uint8, "u8": np.uint64, "b1": np.bool_,
         ">f4": ">f4", ">f8": ">f8", ">i8": ">i8", "c8": np.complex64, "c16": np.complex128,
         "O": object, "U": "U8", "M8": "M8[s]"}
if BF16 is not None:
    CODES["bf16"] = BF16
FLOAT_CODES = ["f4", "f8", "f2"] + (["bf16"] if BF16 is not None else [])
BAD_CODES = ["c16", "c8", "O", "U", "M8"]
HALF = ("f2", "bf16")


def np_dtype(code):
    return np.dtype(CODES[code])


def result_code(*codes):
    """The result dtype code of inputs with these (valid) dtype codes, as the API states: float32
    and float64 and the half types stay, non-native byte order becomes native, bool and integers
    become float64; several promote. None when they do not promote (bfloat16 with float16)."""
    out = None
    for code in codes:
        c = {">f4": "f4", ">f8": "f8"}.get(code, code)
        if c not in FLOAT_CODES:
            c = "f8"
        if out is None or out == c:
            out = c
        else:
            try:
                d = np.promote_types(np_dtype(out), np_dtype(c))
            except TypeError:
                return None
            out = next(k for k in FLOAT_CODES if np_dtype(k) == d)
    return out


SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, 1e-310, -3e3, 5e-8])


@dataclass(frozen=True)
class Arr:
    """An array: `gen` values of `shape` in dtype `code`, laid out as `layout`."""
    shape: tuple
    code: str = "f4"
    layout: str = "C"
    gen: tuple = ("normal", 1.0, 0.0)
    seed: int = 0

    def values(self, rng):
        kind, *p = self.gen
        shape = self.shape
        if kind == "normal":                    # scale, fraction of special values
            v = rng.standard_normal(shape) * p[0]
            if p[1] > 0:
                hit = rng.random(shape) < p[1]
                v = np.where(hit, rng.choice(SPECIALS, shape), v)
            return v
        if kind == "uniform":                   # lo, hi
            return rng.uniform(p[0], p[1], shape)
        if kind == "loguniform":                # positive, 10**lo .. 10**hi
            return 10.0 ** rng.uniform(p[0], p[1], shape)
        if kind == "probs":                     # rows summing to 1 over the last axis
            v = rng.random(shape)
            return v / np.maximum(v.sum(axis=-1, keepdims=True), 1e-300) if v.ndim else v
        if kind == "ints":                      # lo, hi (inclusive)
            return rng.integers(p[0], p[1], shape, endpoint=True)
        if kind == "classes":                   # C, ignore_index, bad value, number of bad
            classes, ignore, bad, nbad = p
            v = np.asarray(rng.integers(0, max(classes, 1), shape)).astype(object)
            flat = v.reshape(-1)
            if ignore is not None and flat.size:
                flat[rng.random(flat.size) < 0.2] = ignore
            if bad is not None and flat.size:
                flat[rng.choice(flat.size, min(nbad, flat.size), replace=False)] = bad
            return v
        if kind == "const":
            return np.full(shape, p[0], dtype=np.float64)
        raise ValueError(kind)

    def make(self):
        rng = np.random.default_rng(self.seed)
        v = self.values(rng)
        dtype = np_dtype(self.code)
        if dtype.kind in "iu":
            if v.dtype == object:           # class indices: exact Python ints
                a = v.astype(dtype) if v.size else np.zeros(v.shape, dtype)
            else:
                info = np.iinfo(dtype)
                a = np.clip(np.nan_to_num(np.round(np.asarray(v, float))), info.min,
                            info.max).astype(dtype)
        elif dtype.kind == "b":
            a = np.asarray(v, float) > 0
        elif dtype.kind == "c":
            v = np.asarray(v, float)
            a = (v + 0.5j * v).astype(dtype)
        elif dtype.kind == "O":
            a = np.asarray(v, float).astype(object)
        elif dtype.kind == "U":
            a = np.asarray(v, float).astype("U8")
        elif dtype.kind == "M":
            a = np.nan_to_num(np.asarray(v, float)).astype(np.int64).astype(dtype)
        else:
            with np.errstate(all="ignore"):
                a = np.asarray(v, float).astype(dtype)
        return in_layout(a, self.layout, rng)


def in_layout(a, layout, rng):
    """A view with the values and shape of `a` in a memory layout (read-only for 'readonly'
    and 'bcast'; a nested list for 'list')."""
    a = np.array(a, order="C")         # (np.ascontiguousarray would make a 0-d array 1-d)
    if layout == "C" or a.ndim == 0 and layout not in ("list", "readonly"):
        return a
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "T":                           # the transpose of a C array (axes reversed)
        return np.ascontiguousarray(a.T).T
    if layout == "perm":                        # a random permutation of the axes
        perm = rng.permutation(a.ndim)
        return np.ascontiguousarray(a.transpose(perm)).transpose(np.argsort(perm))
    if layout == "step":                        # steps of 1-3, random signs, poisoned gaps
        steps = rng.integers(1, 4, a.ndim)
        signs = rng.choice([1, -1], a.ndim)
        base = np.empty(tuple(n * s for n, s in zip(a.shape, steps)), a.dtype)
        if a.dtype.kind in "fV":
            base[...] = np.nan
        view = base[tuple(slice(None, None, int(s * g)) for s, g in zip(steps, signs))]
        view[...] = a
        return view
    if layout == "neg":                         # every axis reversed
        b = np.ascontiguousarray(a[(slice(None, None, -1),) * a.ndim])
        return b[(slice(None, None, -1),) * a.ndim]
    if layout == "bcast":                       # zero strides: the first row, broadcast
        if a.size == 0:
            return np.broadcast_to(a, a.shape)
        return np.broadcast_to(a[(slice(0, 1),) * a.ndim], a.shape)
    if layout == "misaligned":                  # data at an odd address
        if a.dtype.kind in "OU" or a.dtype.itemsize == 1:
            return a
        buf = np.zeros(a.nbytes + a.dtype.itemsize + 1, np.uint8)
        view = np.ndarray(a.shape, a.dtype, buffer=buf, offset=1)
        view[...] = a
        return view
    if layout == "readonly":
        a.flags.writeable = False
        return a
    if layout == "list":
        return a.tolist()
    raise ValueError(layout)


@dataclass(frozen=True)
class Alias:
    """Another argument itself (view None), or a view of it: 'rev' (all axes reversed: the
    same memory, other elements), 'T' (transposed)."""
    name: str
    view: str = None

    def make(self, env):
        a = env[self.name]
        if not isinstance(a, np.ndarray):
            return a
        if a.ndim == 0 and self.view:
            return a[...]                       # (a[()] would be a scalar)
        if self.view == "rev":
            return a[(slice(None, None, -1),) * a.ndim]
        if self.view == "T":
            return a.T
        return a


@dataclass(frozen=True)
class Lit:
    """A Python value, given by the source code that makes it (so it prints as code and is
    made afresh for every call)."""
    code: str

    def make(self):
        return eval(self.code, {"np": np, "nan": math.nan, "inf": math.inf})


@dataclass(frozen=True)
class Stats:
    """Statistics of a forward pass over `env[src]` (cyburn.reference on its float64 values),
    item `index` of them, in dtype `code`, as the backward functions take them; random
    positive values of `shape` when the forward pass cannot be made."""
    kind: str           # layer, rms, group, instance, batch
    src: str
    index: int          # 0: mean, 1: rstd (rms: 0 is rstd)
    code: str
    shape: tuple
    groups: int = 1

    def make(self, env):
        try:
            x = np.asarray(env[self.src]).astype(np.float64)
            ref = cb.reference
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stats = {"layer": lambda: ref.layer_norm(x, return_stats=True)[1:],
                         "rms": lambda: ref.rms_norm(x, return_stats=True)[1:],
                         "group": lambda: ref.group_norm(x, self.groups, return_stats=True)[1:],
                         "instance": lambda: ref.instance_norm(x, return_stats=True)[1:],
                         "batch": lambda: ref.batch_norm(x, return_stats=True)[1:]}[self.kind]()
            s = stats[self.index]
            if s.shape != tuple(self.shape):
                raise ValueError
            with np.errstate(all="ignore"):
                return s.astype(np_dtype(self.code))
        except Exception:
            rng = np.random.default_rng(len(self.shape))
            return (10.0 ** rng.uniform(-1, 1, self.shape)).astype(np_dtype(self.code))


def materialize(spec, env):
    if isinstance(spec, (Alias, Stats)):
        return spec.make(env)
    return spec.make()


@dataclass
class Case:
    """One drawn call: `spec` maps argument names to Arr/Alias/Lit/Stats; `faults` lists the
    injected faults as (names an error message may use, what)."""
    name: str
    spec: dict
    faults: tuple = ()

    def build(self):
        """(args, kwargs, env): fresh arguments; positional-or-keyword ones positionally."""
        env = {}
        for arg, s in self.spec.items():
            env[arg] = materialize(s, env)
        sig = SIGNATURES[self.name]
        args, kwargs = [], {}
        for p in sig.parameters.values():
            if p.name not in env:
                continue
            if p.kind is p.POSITIONAL_OR_KEYWORD and len(args) == list(sig.parameters).index(
                    p.name):
                args.append(env[p.name])
            else:
                kwargs[p.name] = env[p.name]
        return args, kwargs, env

    def __repr__(self):
        body = ", ".join(f"{k!r}: {v!r}" for k, v in self.spec.items())
        faults = "; ".join(f"{'/'.join(n)}: {w}" for n, w in self.faults) or "none"
        return (f"replay({self.name!r}, {{{body}}}, faults={self.faults!r})"
                f"  # faults: {faults}")


SIGNATURES = {name: inspect.signature(getattr(cb, name)) for name in FUNCTIONS}
OUTPUT_ARGS = ("out", "grad_out", "running_mean", "running_var")


# ================================================================================================
# Drawing calls
# ================================================================================================

ABSENT = object()


class Ctx:
    """Drawing helpers. `pick` draws one of weighted options and shrinks to the first one, so
    the first option is always the plainest."""

    def __init__(self, draw):
        self.draw = draw
        self.faults = []

    def pick(self, *options):
        total = sum(w for w, _ in options)
        i = self.draw(st.integers(0, total - 1))
        for w, v in options:
            if i < w:
                return v
            i -= w
        raise AssertionError

    def chance(self, percent):
        return self.draw(st.integers(0, 99)) >= 100 - percent      # shrinks to False

    def integer(self, lo, hi):
        return self.draw(st.integers(lo, hi))

    def fault(self, names, what):
        self.faults.append((tuple([names] if isinstance(names, str) else names), what))

    # -- shapes, dtypes, arrays ------------------------------------------------------------------

    def side(self, allow_zero=True):
        return self.pick((15, 1), (20, 3), (15, 2), (15, 4), (10, 5), (8, 8), (5, 7),
                         (6 if allow_zero else 0, 0), (4, 16), (3, 33), (2, 65))

    def shape(self, min_nd=0, max_nd=4, max_size=4096, allow_zero=True):
        if self.chance(3):                  # a large array: the threaded paths
            big = self.pick((1, (64, 700)), (1, (3, 9000)), (1, (16, 8, 130)),
                            (1, (2, 4, 24, 96)), (1, (20000,)), (1, (2000, 9)))
            if min_nd <= len(big) <= max_nd:
                return big
        nd = self.pick(*[(w, n) for w, n in ((30, 2), (25, 1), (20, 3), (12, 4), (5, 0))
                         if min_nd <= n <= max_nd])
        sides = []
        for _ in range(nd):
            s = self.side(allow_zero)
            if math.prod(sides) * s > max_size:
                s = 1
            sides.append(s)
        return tuple(sides)

    def wrong_shape(self, shape):
        """A shape other than `shape` (never equal)."""
        kind = self.pick((3, "side"), (2, "more"), (2, "less"), (1, "scalar"), (1, "swap"))
        s = list(shape)
        if kind == "side" and s:
            i = self.integer(0, len(s) - 1)
            s[i] = s[i] + self.pick((3, 1), (1, 2)) if s[i] == 0 or self.chance(50) else s[i] - 1
        elif kind == "more":
            s.insert(self.integer(0, len(s)), self.pick((1, 2), (1, 1), (1, 3)))
        elif kind == "less" and s:
            s.pop(self.integer(0, len(s) - 1))
        elif kind == "swap" and len(s) >= 2 and s[0] != s[-1]:
            s[0], s[-1] = s[-1], s[0]
        elif kind == "scalar" and s:
            s = []
        if tuple(s) == tuple(shape):
            s = s + [2]
        return tuple(s)

    def code(self, arg, floats_only=False, bad=6):
        """A dtype code for input `arg`: mostly the float types; integers and bool, non-native
        byte order; `bad`% of the time an unsupported dtype (a fault)."""
        kind = self.pick((80, "float"), (0 if floats_only else 10, "int"),
                         (0 if floats_only else 4, "nonnative"), (bad, "bad"))
        if kind == "float":
            return self.draw(st.sampled_from(FLOAT_CODES))
        if kind == "int":
            return self.draw(st.sampled_from(["i8", "i4", "u1", "b1", "i2"]))
        if kind == "nonnative":
            return self.draw(st.sampled_from([">f4", ">f8"]))
        code = self.draw(st.sampled_from(BAD_CODES))
        self.fault((arg, str(np_dtype(code))), f"unsupported dtype {np_dtype(code)}")
        return code

    def gen(self, scale=None):
        scale = scale if scale is not None else self.pick(
            (50, 1.0), (15, 30.0), (10, 1e-3), (5, 1e4), (20, 4.0))
        special = self.pick((65, 0.0), (20, 0.05), (10, 0.3), (5, 1.0))
        return ("normal", scale, special)

    def layout(self, shape, code, allow_list=True):
        size = math.prod(shape)
        lay = self.pick((50, "C"), (8, "F"), (8, "T"), (4, "perm"), (10, "step"), (5, "neg"),
                        (3, "bcast"), (4, "misaligned"), (3, "readonly"),
                        (5 if allow_list else 0, "list"))
        if lay == "list" and (size == 0 or code in BAD_CODES or code == "bf16"):
            lay = "C"           # (a list would change the shape, the dtype or the fault)
        return lay

    def arr(self, shape, code, gen=None, layout=None, allow_list=True):
        return Arr(tuple(shape), code,
                   layout if layout is not None else self.layout(shape, code, allow_list),
                   gen if gen is not None else self.gen(), self.integer(0, 2**16))

    # -- common arguments ------------------------------------------------------------------------

    def out(self, spec, shape, rcode, alias=(), name="out", extra=(), percent=30,
            may_alias=True):
        """An `out=` argument for a result of `shape` and dtype code `rcode`, or ABSENT.
        `alias`: input names it may be (itself, or a reversed view)."""
        kinds = [(100 - percent, None), (percent * 3, "fresh"), (percent * 2, "alias"),
                 (percent, "aliasview"), (percent, "wrongshape"), (percent, "wrongdtype"),
                 (percent, "readonly"), (percent // 2, "list"), (percent // 2, "notarray")]
        kind = self.pick(*kinds) if percent else None
        if kind is None:
            return ABSENT
        rc = rcode or "f8"
        if kind in ("alias", "aliasview") and alias:
            src = self.draw(st.sampled_from(list(alias)))
            s = spec[src]
            ok = (isinstance(s, Arr) and s.code == rcode and s.shape == tuple(shape)
                  and s.layout not in ("readonly", "bcast", "list"))
            if not ok:
                self.fault(name, "out is an input that is not a writeable result")
            return Alias(src, "rev" if kind == "aliasview" else None)
        if kind in ("fresh", "alias", "aliasview"):
            if rcode is None:
                self.fault(name, "no result dtype")
            return self.arr(shape, rc, layout=self.pick((4, "C"), (1, "F"), (1, "T"),
                                                        (1, "step"), (1, "misaligned")))
        self.fault(name, kind)
        if kind == "wrongshape":
            return self.arr(self.wrong_shape(shape), rc, layout="C")
        if kind == "wrongdtype":
            other = [c for c in FLOAT_CODES + ["i8"] if c != rc]
            return self.arr(shape, self.draw(st.sampled_from(other)), layout="C")
        if kind == "readonly":
            return self.arr(shape, rc, layout=self.pick((2, "readonly"), (1, "bcast")))
        if kind == "list":
            return self.arr(shape, rc, layout="list") if math.prod(shape) else Lit("[]")
        return Lit(self.draw(st.sampled_from(["3.0", "'out'", "(1, 2)"])))

    def axis(self, ndim):
        kind = self.pick((45, ABSENT), (40, "in"), (6, "out"), (3, "np"), (2, "none"),
                         (2, "float"), (2, "str"))
        if kind is ABSENT:
            if ndim == 0:
                self.fault("axis", "default axis -1 of a 0-d array")
            return ABSENT
        if kind in ("in", "np") and ndim > 0:
            a = self.integer(-ndim, ndim - 1)
            return Lit(f"np.int64({a})" if kind == "np" else str(a))
        if kind in ("in", "np", "out"):
            self.fault("axis", "out of range")
            return Lit(str(self.draw(st.sampled_from([ndim, -ndim - 1, 99, -99, 2**63]))))
        self.fault("axis", f"not an integer ({kind})")
        return Lit({"none": "None", "float": "1.5", "str": "'0'"}[kind])

    def real(self, name, plain, odd=(), bad_percent=4):
        """A float option: ABSENT, one of `plain`, one of `odd` (not faults), or a value that
        is not a real number (a fault)."""
        kind = self.pick((50, ABSENT), (30, "plain"), (16 if odd else 0, "odd"),
                         (bad_percent, "bad"))
        if kind is ABSENT:
            return ABSENT
        if kind == "plain":
            return Lit(self.draw(st.sampled_from(list(plain))))
        if kind == "odd":
            return Lit(self.draw(st.sampled_from(list(odd))))
        self.fault(name, "not a real number")
        return Lit(self.draw(st.sampled_from(["None", "'abc'", "'2'", "[1.0, 2.0]", "1j"])))

    def flag(self, name):
        return self.pick((50, ABSENT), (20, Lit("True")), (20, Lit("False")),
                         (4, Lit("1")), (3, Lit("0")), (3, Lit("np.bool_(True)")))


def put(spec, name, value):
    if value is not ABSENT:
        spec[name] = value


def truthy(spec, name, default=False):
    v = spec.get(name)
    return default if v is None else bool(v.make())


def x_like(c, spec, shape, names, same_percent=92):
    """Inputs `names` of one shape (a fault when one differs) with independent dtypes; returns
    their dtype codes."""
    codes = []
    for i, n in enumerate(names):
        s = shape
        if i and not c.chance(same_percent):
            s = c.wrong_shape(shape)
            c.fault((names[0], n), "shapes differ")
        spec[n] = c.arr(s, c.code(n, bad=4))
        codes.append(eff(spec[n]))
    return codes


def eff(value):
    """The dtype code of an argument as NumPy takes it: a list is float64, int64 or bool."""
    if isinstance(value, Arr) and value.layout == "list":
        kind = np_dtype(value.code).kind
        return "b1" if kind == "b" else "i8" if kind in "iu" else "f8"
    return value.code


def rcode_of(codes):
    if any(code in BAD_CODES for code in codes):
        return None
    rc = result_code(*codes)
    if rc is None:
        return None
    return rc


def check_promotes(c, names, codes):
    """float16 and bfloat16 have no common dtype in NumPy (np.result_type raises, whatever other
    dtypes come along): a fault."""
    if "f2" in codes and "bf16" in codes and not any(code in BAD_CODES for code in codes):
        c.fault(tuple(names) + tuple(str(np_dtype(k)) for k in codes), "dtypes do not promote")


# -- the softmax family ---------------------------------------------------------------------------

def gen_softmax(c):
    spec = {}
    shape = c.shape()
    (code,) = x_like(c, spec, shape, ["x"])
    put(spec, "axis", c.axis(len(shape)))
    put(spec, "out", c.out(spec, shape, rcode_of([code]), alias=["x"]))
    return spec


def gen_softmax_backward(c):
    spec = {}
    shape = c.shape()
    codes = x_like(c, spec, shape, ["dy", "y"])
    check_promotes(c, ["dy", "y"], codes)
    put(spec, "axis", c.axis(len(shape)))
    put(spec, "out", c.out(spec, shape, rcode_of(codes), alias=["dy", "y"]))
    return spec


SCALES = ("1.0", "0.125", "2", "-1.5", "np.float32(0.5)", "np.array(0.25)")
ODD_SCALES = ("0.0", "nan", "inf", "-inf", "1e30", "1e-30", "True")


def gen_masked_softmax(c):
    spec = {}
    shape = c.shape()
    (code,) = x_like(c, spec, shape, ["x"])
    put(spec, "scale", c.real("scale", SCALES, ODD_SCALES))
    causal = c.pick((55, ABSENT), (25, Lit("True")), (15, Lit("False")), (5, Lit("1")))
    put(spec, "causal", causal)
    if len(shape) == 0 or len(shape) < 2 and causal is not ABSENT and causal.make():
        c.fault("x", "no key axis / query axis")
    kind = c.pick((45, None), (12, "same"), (18, "bcast"), (5, "keys"), (6, "wrong"),
                  (4, "int"), (3, "bad"), (3, "list"), (4, "scalar"))
    if kind is not None:
        mshape = shape
        if kind == "bcast":
            m = [1 if c.chance(40) else n for n in shape]
            mshape = tuple(m[c.integer(0, len(m)):])
        elif kind == "keys":
            mshape = shape[-1:]
        elif kind == "scalar":
            mshape = ()
        elif kind == "wrong":
            mshape = c.wrong_shape(shape)
            try:
                if np.broadcast_shapes(mshape, shape) == tuple(shape):
                    mshape = tuple(shape) + (2,)
            except ValueError:
                pass
            c.fault("mask", "does not broadcast to x")
        if kind == "int":
            mcode = c.draw(st.sampled_from(["i8", "u1", "i4"]))
            c.fault("mask", "integer mask")
        elif kind == "bad":
            mcode = c.draw(st.sampled_from(BAD_CODES))
            c.fault("mask", "unsupported dtype")
        else:
            mcode = c.pick((3, "b1"), (2, "f4"), (1, "f8"), (1, "f2"))
        if mcode == "b1":
            gen = ("uniform", -0.3, 1.0)
        else:
            gen = ("normal", 1.0, c.pick((2, 0.0), (1, 0.3)))
        spec["mask"] = c.arr(mshape, mcode, gen=gen,
                             layout="list" if kind == "list" and math.prod(mshape) else None,
                             allow_list=False)
    put(spec, "out", c.out(spec, shape, rcode_of([code]), alias=["x"]))
    return spec


def gen_masked_softmax_backward(c):
    spec = {}
    shape = c.shape()
    codes = x_like(c, spec, shape, ["dy", "y"])
    check_promotes(c, ["dy", "y"], codes)
    if len(shape) == 0:
        c.fault(("y", "dy"), "no key axis")
    put(spec, "scale", c.real("scale", SCALES, ODD_SCALES))
    put(spec, "out", c.out(spec, shape, rcode_of(codes), alias=["dy", "y"]))
    return spec


# -- normalization --------------------------------------------------------------------------------

EPS = ("1e-5", "1e-6", "0.1", "np.float32(1e-3)")
ODD_EPS = ("0.0", "-1.0", "1e30", "nan", "inf", "1e-30", "np.array(1e-5)")


def param(c, spec, name, n, percent=40):
    """An optional (n,) parameter (weight, bias): ABSENT/None, of the right shape, or wrong."""
    kind = c.pick((100 - percent, ABSENT), (percent * 6, "ok"), (percent // 2, "none"),
                  (percent, "wrong"))
    if kind is ABSENT:
        return None
    if kind == "none":
        spec[name] = Lit("None")
        return None
    shape = (n,)
    if kind == "wrong":
        shape = c.wrong_shape(shape)
        c.fault(name, "wrong shape")
    code = c.code(name, bad=3)
    spec[name] = c.arr(shape, code, gen=c.pick((3, ("normal", 1.0, 0.0)), (1, c.gen())))
    return eff(spec[name])


def gen_row_norm(centered):
    def gen(c):
        spec = {}
        shape = c.shape()
        (code,) = x_like(c, spec, shape, ["x"])
        if len(shape) == 0:
            c.fault("x", "0-d")
        n = shape[-1] if shape else 1
        codes = [code]
        w = param(c, spec, "weight", n)
        codes += [w] if w else []
        if centered:
            b = param(c, spec, "bias", n)
            codes += [b] if b else []
        put(spec, "eps", c.real("eps", EPS, ODD_EPS))
        if c.chance(25):
            rshape = shape if c.chance(90) else c.wrong_shape(shape)
            if rshape != shape:
                c.fault(("residual", "x"), "wrong shape")
            spec["residual"] = c.arr(rshape, c.code("residual", bad=3))
            codes.append(eff(spec["residual"]))
        check_promotes(c, ["x", "weight", "bias", "residual"], codes)
        put(spec, "return_stats", c.flag("return_stats"))
        put(spec, "out", c.out(spec, shape, rcode_of(codes),
                               alias=["x"] + (["residual"] if "residual" in spec else [])))
        return spec
    return gen


def stats_arg(c, spec, name, kind, index, shape, work_code, src="x", groups=1):
    """A statistic for a backward function: from the forward pass, random, wrong shape or None."""
    k = c.pick((60, "forward"), (25, "random"), (6, "wrong"), (3, "none"), (3, "bad"),
               (3, "list"))
    if k == "forward":
        spec[name] = Stats(kind, src, index, work_code or "f4", tuple(shape), groups)
    elif k in ("random", "list"):
        gen = ("loguniform", -1, 1) if name == "rstd" else c.gen()
        code = c.draw(st.sampled_from(FLOAT_CODES))
        spec[name] = c.arr(shape, code, gen=gen,
                           layout="list" if k == "list" and math.prod(shape) else None)
    elif k == "wrong":
        c.fault(name, "wrong shape")
        spec[name] = c.arr(c.wrong_shape(shape), "f4", gen=("loguniform", -1, 1))
    elif k == "none":
        c.fault(name, "None")
        spec[name] = Lit("None")
    else:
        spec[name] = c.arr(shape, c.code(name, bad=100), gen=("loguniform", -1, 1))


def spec_codes(spec, names):
    return [spec[n].code for n in names if isinstance(spec.get(n), (Arr, Stats))]


def work_code(rc):
    return None if rc is None else ("f4" if rc in HALF else rc)


def backward_weight(c, spec, n):
    """The required weight argument of a backward function: None, (n,), or wrong."""
    kind = c.pick((40, "none"), (50, "ok"), (6, "wrong"), (4, "bad"))
    if kind == "none":
        spec["weight"] = Lit("None")
        return None
    shape = (n,)
    if kind == "wrong":
        shape = c.wrong_shape(shape)
        c.fault("weight", "wrong shape")
    code = c.code("weight", bad=100 if kind == "bad" else 0)
    spec["weight"] = c.arr(shape, code)
    return eff(spec["weight"])


def gen_row_norm_backward(centered):
    def gen(c):
        spec = {}
        shape = c.shape()
        codes = x_like(c, spec, shape, ["x", "dy"])
        if len(shape) == 0:
            c.fault("x", "0-d")
        n = shape[-1] if shape else 1
        w = backward_weight(c, spec, n)
        codes += [w] if w else []
        check_promotes(c, ["dy", "x", "weight"], codes)
        wc = work_code(rcode_of(codes))
        kind = "layer" if centered else "rms"
        if centered:
            stats_arg(c, spec, "mean", kind, 0, shape[:-1], wc)
        stats_arg(c, spec, "rstd", kind, 1 if centered else 0, shape[:-1], wc)
        check_promotes(c, ["mean", "rstd"], spec_codes(spec, ["mean", "rstd"]))
        return spec
    return gen


def channel_shape(c):
    shape = c.shape(max_size=2048)
    if len(shape) < 2:
        if c.chance(75):
            shape = (c.side(), c.side()) + shape
        else:
            c.fault("x", "not (N, C, *spatial)")
    return shape


def num_groups(c, channels):
    divisors = [g for g in range(1, max(channels, 1) + 1) if channels % g == 0] or [1]
    kind = c.pick((70, "divisor"), (4, "zero"), (4, "negative"), (6, "nondivisor"),
                  (3, "float"), (3, "none"), (2, "str"), (4, "np"), (2, "bool"), (2, "huge"))
    if kind in ("divisor", "np", "bool"):
        g = c.draw(st.sampled_from(divisors))
        if kind == "bool":
            return Lit("True"), 1
        return Lit(f"np.int64({g})" if kind == "np" else str(g)), g
    if kind == "nondivisor":
        bad = [g for g in range(2, channels + 3) if channels % g]
        if bad:
            c.fault("num_groups", "not a divisor")
            return Lit(str(c.draw(st.sampled_from(bad)))), None
        return Lit("1"), 1
    if kind == "huge":
        if channels:
            c.fault("num_groups", "more groups than channels")
        return Lit(str(10**20)), None
    c.fault("num_groups", kind)
    return Lit({"zero": "0", "negative": "-2", "float": "2.0", "none": "None",
                "str": "'2'"}[kind]), None


def gen_channel_norm(kind):
    def gen(c):
        spec = {}
        shape = channel_shape(c)
        (code,) = x_like(c, spec, shape, ["x"])
        channels = shape[1] if len(shape) >= 2 else 0
        if kind == "group":
            spec["num_groups"], _ = num_groups(c, channels)
        codes = [code]
        for p in ("weight", "bias"):
            w = param(c, spec, p, channels)
            codes += [w] if w else []
        check_promotes(c, ["x", "weight", "bias"], codes)
        if kind == "instance" and len(shape) >= 2 and math.prod(shape[2:]) == 1:
            c.fault("x", "one spatial element")
        if kind == "batch":
            running(c, spec, shape, channels)
            momentum = c.real("momentum", ("0.1", "0.0", "1.0", "0.5"),
                              ("nan", "-1.0", "2.0", "np.float32(0.3)", "inf"))
            if "training" in spec and not spec["training"].make():
                momentum = ABSENT if momentum is ABSENT else Lit("0.1")   # (unused)
                c.faults = [f for f in c.faults if f[0] != ("momentum",)]
            put(spec, "momentum", momentum)
            values = math.prod(shape) // channels if channels else 0
            if truthy(spec, "training", True) and values == 1:
                c.fault("x", "one value per channel in training")
        put(spec, "eps", c.real("eps", EPS, ODD_EPS))
        put(spec, "return_stats", c.flag("return_stats"))
        return spec
    return gen


def running(c, spec, shape, channels):
    training = c.pick((60, ABSENT), (25, Lit("False")), (10, Lit("True")), (5, Lit("0")))
    put(spec, "training", training)
    training = True if training is ABSENT else training.make()
    kind = c.pick((40, None), (45, "both"), (4, "one"), (4, "wrong"), (3, "int"),
                  (2, "list"), (2, "readonly"))
    if kind is None:
        if not training:
            c.fault(("running_mean", "running_var", "training"), "eval without running stats")
        return
    for name in ("running_mean", "running_var"):
        if kind == "one" and name == "running_var":
            c.fault(("running_mean", "running_var"), "only one given")
            break
        rshape = (channels,)
        code = c.draw(st.sampled_from(FLOAT_CODES))
        layout = c.pick((4, "C"), (1, "step"), (1, "misaligned"))
        if kind == "wrong":
            rshape = c.wrong_shape(rshape)
            c.fault(name, "wrong shape")
        elif kind == "int":
            code = "i8"
            c.fault(name, "integer running statistic")
        elif kind == "list":
            layout = "list" if channels else "C"
            if channels:
                c.fault(name, "a list")
        elif kind == "readonly":
            layout = "readonly"
            if training:
                c.fault(name, "read-only in training")
        gen = ("loguniform", -1, 1) if name == "running_var" else ("normal", 1.0, 0.0)
        if c.chance(5):
            gen = c.gen()
        spec[name] = Arr(rshape, code, layout, gen, c.integer(0, 2**16))


def gen_channel_norm_backward(kind):
    def gen(c):
        spec = {}
        shape = channel_shape(c)
        codes = x_like(c, spec, shape, ["x", "dy"])
        channels = shape[1] if len(shape) >= 2 else 0
        groups = channels
        if kind == "group":
            spec["num_groups"], g = num_groups(c, channels)
            groups = g or 1
        w = backward_weight(c, spec, channels)
        codes += [w] if w else []
        check_promotes(c, ["dy", "x", "weight"], codes)
        wc = work_code(rcode_of(codes))
        n = shape[0] if shape else 0
        sshape = {"group": (n, groups), "instance": (n, channels), "batch": (channels,)}[kind]
        stats_arg(c, spec, "mean", kind, 0, sshape, wc, groups=groups)
        stats_arg(c, spec, "rstd", kind, 1, sshape, wc, groups=groups)
        check_promotes(c, ["mean", "rstd"], spec_codes(spec, ["mean", "rstd"]))
        return spec
    return gen


# -- cross-entropy ---------------------------------------------------------------------------------

def ce_options(c, spec, classes):
    """ignore_index, reduction, label_smoothing, z_loss, softcap (and class weights)."""
    ig = c.pick((55, ABSENT), (15, "class"), (10, "-1"), (4, "huge"), (3, "float"),
                (2, "none"), (4, "np"), (3, "uhuge"))
    ignore = -100
    if ig == "class":
        ignore = c.integer(0, max(classes - 1, 0))
        spec["ignore_index"] = Lit(str(ignore))
    elif ig == "np":
        ignore = c.integer(0, max(classes - 1, 0))
        spec["ignore_index"] = Lit(f"np.int32({ignore})")
    elif ig == "-1":
        ignore = -1
        spec["ignore_index"] = Lit("-1")
    elif ig == "huge":
        ignore = None
        c.fault("ignore_index", "beyond int64")
        spec["ignore_index"] = Lit(str(-2**70))
    elif ig == "uhuge":
        ignore = 2**63 + 7
        c.fault("ignore_index", "beyond int64")   # (cyburn rejects it; the reference computes)
        spec["ignore_index"] = Lit(str(ignore))
    elif ig in ("float", "none"):
        ignore = None
        c.fault("ignore_index", "not an integer")
        spec["ignore_index"] = Lit({"float": "1.5", "none": "None"}[ig])
    red = c.pick((45, ABSENT), (20, "'mean'"), (15, "'sum'"), (20, "'none'"), (2, "'MEAN'"),
                 (2, "None"), (1, "0"))
    if red is not ABSENT:
        if red in ("'MEAN'", "None", "0"):
            c.fault("reduction", "unknown")
        spec["reduction"] = Lit(red)
    ls = c.pick((60, ABSENT), (25, "ok"), (8, "bad"), (3, "notreal"))
    if ls == "ok":
        spec["label_smoothing"] = Lit(c.draw(st.sampled_from(["0.0", "0.1", "1.0", "0.5"])))
    elif ls == "bad":
        c.fault("label_smoothing", "out of [0, 1]")
        spec["label_smoothing"] = Lit(c.draw(st.sampled_from(["-0.1", "1.5", "nan", "inf"])))
    elif ls == "notreal":
        c.fault("label_smoothing", "not a real number")
        spec["label_smoothing"] = Lit(c.draw(st.sampled_from(["None", "'abc'"])))
    z = c.real("z_loss", ("0.0", "1e-4", "0.5"), ("-0.1", "nan", "inf", "1e3"), bad_percent=2)
    if z is not ABSENT and z.code in ("nan", "inf"):
        c.fault("z_loss", "not finite")       # (cyburn rejects it; the reference computes)
    put(spec, "z_loss", z)
    sc = c.pick((60, ABSENT), (10, "None"), (20, "ok"), (6, "bad"), (2, "notreal"))
    if sc in ("None", "ok"):
        spec["softcap"] = Lit("None" if sc == "None" else c.draw(
            st.sampled_from(["30.0", "1.0", "0.5", "1e-3", "np.float32(15)"])))
    elif sc == "bad":
        c.fault("softcap", "not positive finite")
        spec["softcap"] = Lit(c.draw(st.sampled_from(["0.0", "-1.0", "inf", "nan"])))
    elif sc == "notreal":
        c.fault("softcap", "not a real number")
        spec["softcap"] = Lit(c.draw(st.sampled_from(["'abc'", "[1.0]"])))
    return ignore


def class_weight(c, spec, classes, name="weight"):
    kind = c.pick((60, ABSENT), (25, "ok"), (5, "odd"), (4, "wrong"), (3, "bad"), (3, "none"))
    if kind is ABSENT:
        return
    if kind == "none":
        spec[name] = Lit("None")
        return
    shape = (classes,)
    if kind == "wrong":
        shape = c.wrong_shape(shape)
        c.fault(name, "wrong shape")
    gen = ("uniform", 0.1, 2.0) if kind != "odd" else c.pick(
        (1, ("uniform", -1.0, 1.0)), (1, ("const", 0.0)), (1, c.gen()))
    code = c.code(name, bad=100 if kind == "bad" else 0)
    spec[name] = c.arr(shape, code, gen=gen)


def target(c, spec, logit_shape, classes, ignore):
    """Class indices of shape logit_shape[:-1] or probabilities of logit_shape."""
    batch = tuple(logit_shape[:-1])
    n = math.prod(batch)
    kind = c.pick((55, "classes"), (20, "probs"), (8, "bad"), (3, "float_batch"),
                  (3, "bool"), (4, "wrong"), (3, "list"), (2, "badcode"), (2, "probs_wrong"))
    if kind in ("classes", "bad", "list", "wrong"):
        code = c.pick((5, "i8"), (2, "i4"), (2, "u1"), (1, "i2"), (1, "u8"), (1, ">i8"))
        info = np.iinfo(np_dtype(code))
        ign = ignore if ignore is not None and info.min <= ignore <= info.max else None
        bad = None
        if kind == "bad" and n:
            choices = [v for v in (classes, classes + 3, -1, -2**40, 2**40, 2**63 + 5,
                                   info.max, info.min)
                       if info.min <= v <= info.max and not 0 <= v < classes and v != ignore]
            if choices:
                bad = c.draw(st.sampled_from(choices))
                c.fault("target", f"class index {bad} out of range")
        shape = batch
        if kind == "wrong":
            shape = c.wrong_shape(batch)
            if shape == tuple(logit_shape):
                shape = shape + (2,)
            c.fault("target", "wrong shape")
        gen = ("classes", classes, ign, bad, c.pick((3, 1), (1, 3)))
        if classes == 0:
            gen = ("const", 0.0)
        spec["target"] = Arr(shape, code, "list" if kind == "list" and n else
                             c.pick((5, "C"), (1, "step"), (1, "T")), gen, c.integer(0, 2**16))
        return
    if kind in ("probs", "probs_wrong"):
        shape = tuple(logit_shape)
        if kind == "probs_wrong":
            shape = c.wrong_shape(shape)
            if shape == batch:
                shape = shape + (3,)
            c.fault("target", "wrong shape")
        gen = c.pick((4, ("probs",)), (1, ("uniform", 0.0, 1.0)), (1, c.gen()))
        spec["target"] = c.arr(shape, c.draw(st.sampled_from(FLOAT_CODES)), gen=gen)
        if kind == "probs" and ignore is not None and ignore >= 0:
            c.fault(("ignore_index", "target"), "ignore_index >= 0 with probabilities")
        return
    if kind == "float_batch":
        c.fault("target", "floating target of the class-index shape")
        if batch == tuple(logit_shape):
            batch = batch + (2,)
        spec["target"] = c.arr(batch, c.draw(st.sampled_from(FLOAT_CODES)),
                               gen=("ints", 0, max(classes - 1, 0)))
        return
    if kind == "bool":
        c.fault("target", "boolean target")
        spec["target"] = c.arr(batch, "b1", gen=("uniform", -1, 1))
        return
    c.fault("target", "unsupported dtype")
    spec["target"] = c.arr(batch, c.draw(st.sampled_from(BAD_CODES)),
                           gen=("ints", 0, max(classes - 1, 0)))


def logits_shape(c):
    shape = c.shape(max_size=2048)
    if len(shape) == 0:
        c.fault("logits", "0-d")
    elif shape[-1] == 0 and math.prod(shape[:-1]) > 0:
        c.fault("logits", "no classes")
    return shape


def gen_cross_entropy(backward):
    def gen(c):
        spec = {}
        shape = logits_shape(c)
        classes = shape[-1] if shape else 0
        spec["logits"] = c.arr(shape, c.code("logits", bad=4), gen=c.gen())
        code = eff(spec["logits"])
        ignore = ce_options(c, spec, classes)
        target(c, spec, shape, classes, ignore)
        if "ignore_index" in spec:               # (keyword; ordered after target for reading)
            spec["ignore_index"] = spec.pop("ignore_index")
        class_weight(c, spec, classes)
        rc = rcode_of([code])
        none = "reduction" in spec and spec["reduction"].code == "'none'"
        batch = tuple(shape[:-1])
        if backward:
            kind = c.pick((40, ABSENT), (20, "scalar"), (15, "rows"), (5, "odd"), (4, "wrong"),
                          (3, "bad"), (4, "zero_d"), (3, "list"))
            if kind == "scalar":
                spec["dloss"] = Lit(c.draw(st.sampled_from(["1.0", "0.5", "-2.0", "3"])))
            elif kind == "odd":
                spec["dloss"] = Lit(c.draw(st.sampled_from(["nan", "inf", "0.0", "1e30"])))
            elif kind == "zero_d":
                spec["dloss"] = c.arr((), c.draw(st.sampled_from(FLOAT_CODES)))
            elif kind in ("rows", "list"):
                if not none and batch != ():
                    c.fault("dloss", "per-row dloss without reduction='none'")
                spec["dloss"] = c.arr(batch, c.draw(st.sampled_from(FLOAT_CODES)),
                                      layout="list" if kind == "list" and math.prod(batch)
                                      else None)
            elif kind == "wrong":
                c.fault("dloss", "wrong shape")
                spec["dloss"] = c.arr(c.wrong_shape(batch) if batch else (2,), "f4")
            elif kind == "bad":
                c.fault("dloss", "not a real number")
                spec["dloss"] = Lit(c.draw(st.sampled_from(["None", "'abc'", "1j"])))
            put(spec, "out", c.out(spec, shape, rc, alias=["logits", "target"]))
        else:
            rg = c.pick((50, ABSENT), (35, Lit("True")), (10, Lit("False")), (5, Lit("1")))
            put(spec, "return_grad", rg)
            grad_out = c.out(spec, shape, rc, alias=["logits", "target"], name="grad_out")
            if grad_out is not ABSENT and not truthy(spec, "return_grad"):
                c.fault(("grad_out", "return_grad"), "grad_out without return_grad")
            put(spec, "grad_out", grad_out)
        return spec
    return gen


def gen_linear_cross_entropy(c):
    spec = {}
    n = c.pick((3, 3), (2, 1), (2, 8), (1, 0), (1, 17), (1, 40))
    d = c.pick((3, 4), (2, 1), (2, 8), (1, 0), (1, 16))
    classes = c.pick((3, 5), (2, 2), (2, 1), (1, 0), (1, 13), (1, 40))
    hshape, wshape = (n, d), (classes, d)
    # (a wrong shape may still be a matrix: then target or bias no longer fit)
    if c.chance(6):
        hshape = c.wrong_shape(hshape)
        c.fault(("hidden", "weight", "target"), "hidden not (N, D)")
    elif c.chance(6):
        wshape = c.wrong_shape(wshape)
        c.fault(("hidden", "weight", "target", "bias"), "weight not (C, D)")
    if n and classes == 0 and hshape == (n, d) and wshape == (0, d):
        c.fault(("logits", "weight", "hidden"), "no classes")
    hc = c.code("hidden", bad=3)
    wc = c.code("weight", bad=3)
    spec["hidden"] = c.arr(hshape, hc, gen=c.gen(c.pick((3, 1.0), (1, 4.0), (1, 1e-3))))
    spec["weight"] = c.arr(wshape, wc, gen=c.gen(c.pick((3, 1.0), (1, 4.0))))
    codes = [eff(spec["hidden"]), eff(spec["weight"])]
    ignore = ce_options(c, spec, classes)
    target(c, spec, (n, classes), classes, ignore)
    if "ignore_index" in spec:
        spec["ignore_index"] = spec.pop("ignore_index")
    param(c, spec, "bias", classes)         # (cast to the dtype of hidden and weight)
    class_weight(c, spec, classes, "class_weight")
    check_promotes(c, ["hidden", "weight"], codes)
    cs = c.pick((60, ABSENT), (10, "None"), (15, "small"), (5, "huge"), (4, "zero"),
                (3, "neg"), (3, "float"))
    if cs in ("None", "small", "huge"):
        spec["chunk_size"] = Lit({"None": "None", "huge": str(10**20)}.get(
            cs, str(c.integer(1, 5))))
    elif cs is not ABSENT:
        c.fault("chunk_size", cs)
        spec["chunk_size"] = Lit({"zero": "0", "neg": "-3", "float": "2.5"}[cs])
    put(spec, "return_grad", c.flag("return_grad"))
    return spec


# -- activations ---------------------------------------------------------------------------------

def approximate(c, spec):
    a = c.pick((50, ABSENT), (20, "'none'"), (20, "'tanh'"), (4, "'erf'"), (3, "None"),
               (3, "1"))
    if a is not ABSENT:
        if a not in ("'none'", "'tanh'"):
            c.fault("approximate", "unknown")
        spec["approximate"] = Lit(a)


def gen_activation(has_approximate):
    def gen(c):
        spec = {}
        shape = c.shape()
        (code,) = x_like(c, spec, shape, ["x"])
        if has_approximate:
            approximate(c, spec)
        put(spec, "out", c.out(spec, shape, rcode_of([code]), alias=["x"]))
        return spec
    return gen


def gen_activation_backward(has_approximate):
    def gen(c):
        spec = {}
        shape = c.shape()
        codes = x_like(c, spec, shape, ["dy", "x"])
        check_promotes(c, ["dy", "x"], codes)
        if has_approximate:
            approximate(c, spec)
        put(spec, "out", c.out(spec, shape, rcode_of(codes), alias=["dy", "x"]))
        return spec
    return gen


GENERATORS = {
    "softmax": gen_softmax, "log_softmax": gen_softmax,
    "softmax_backward": gen_softmax_backward, "log_softmax_backward": gen_softmax_backward,
    "masked_softmax": gen_masked_softmax, "masked_softmax_backward": gen_masked_softmax_backward,
    "layer_norm": gen_row_norm(True), "rms_norm": gen_row_norm(False),
    "layer_norm_backward": gen_row_norm_backward(True),
    "rms_norm_backward": gen_row_norm_backward(False),
    "group_norm": gen_channel_norm("group"), "instance_norm": gen_channel_norm("instance"),
    "batch_norm": gen_channel_norm("batch"),
    "group_norm_backward": gen_channel_norm_backward("group"),
    "instance_norm_backward": gen_channel_norm_backward("instance"),
    "batch_norm_backward": gen_channel_norm_backward("batch"),
    "cross_entropy": gen_cross_entropy(False),
    "cross_entropy_backward": gen_cross_entropy(True),
    "linear_cross_entropy": gen_linear_cross_entropy,
    "relu": gen_activation(False), "gelu": gen_activation(True), "silu": gen_activation(False),
    "relu_backward": gen_activation_backward(False),
    "gelu_backward": gen_activation_backward(True),
    "silu_backward": gen_activation_backward(False),
}


@st.composite
def cases(draw, name):
    c = Ctx(draw)
    spec = GENERATORS[name](c)
    return Case(name, spec, tuple(c.faults))


# ================================================================================================
# Checking one call
# ================================================================================================

class FuzzFailure(AssertionError):
    def __init__(self, kind, message):
        super().__init__(f"[{kind}] {message}")
        self.kind, self.message = kind, message


K_ULPS = 64         # finite values: within K eps(compute dtype) of the magnitude (see `close`)


def eps_of(dtype):
    return float((ml_dtypes.finfo if BF16 is not None and dtype == BF16 else np.finfo)(dtype).eps)


def is_float(dtype):
    return dtype.kind == "f" or (BF16 is not None and dtype == BF16)


def close(actual, expected, what, hint=0.0, compute=None):
    """`actual` (cyburn) vs `expected` (reference): same shape and dtype; NaN at the same
    places; infinities equal; finite values within
        tol = (K eps(compute) + 2 eps(dtype if half)) * (|expected| + S),
        S = max(max |expected| over the finite values, hint)
    i.e. K = 64 ulps of the compute dtype relative to the array's magnitude (a wrong formula,
    axis, element or dtype is off by O(S)); a half result may also differ by its last bits."""
    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        raise FuzzFailure("mismatch", f"{what}: shape {a.shape}, reference {e.shape}")
    if a.dtype != e.dtype:
        raise FuzzFailure("mismatch", f"{what}: dtype {a.dtype}, reference {e.dtype}")
    if not is_float(e.dtype):
        if not np.array_equal(a, e):
            raise FuzzFailure("mismatch", f"{what}: values differ")
        return
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    nan_a, nan_e = np.isnan(a64), np.isnan(e64)
    if not np.array_equal(nan_a, nan_e):
        i = np.flatnonzero(nan_a != nan_e)[0]
        raise FuzzFailure("mismatch", f"{what}: NaN at different places ({nan_a.sum()} vs "
                          f"{nan_e.sum()} NaNs of {a.size}); first at flat index {i}: "
                          f"got {a64.flat[i]!r}, reference {e64.flat[i]!r}")
    inf = np.isinf(a64) | np.isinf(e64)
    if not np.array_equal(a64[inf], e64[inf]):
        i = np.flatnonzero(inf & (a64 != e64))[0]
        raise FuzzFailure("mismatch", f"{what}: infinities differ; first at flat index {i}: "
                          f"got {a64.flat[i]!r}, reference {e64.flat[i]!r}")
    ok = ~nan_e & ~inf
    if not ok.any():
        return
    if compute is None:
        compute = np.dtype(np.float32) if e.dtype.itemsize <= 2 else e.dtype
    rel = K_ULPS * eps_of(compute) + (2 * eps_of(e.dtype) if e.dtype.itemsize <= 2 else 0.0)
    mag = np.abs(e64[ok])
    scale = max(float(mag.max()), float(hint))
    tiny = 4 * float((ml_dtypes.finfo if BF16 is not None and e.dtype == BF16 else np.finfo)(
        e.dtype).smallest_subnormal)
    tol = rel * (mag + scale) + tiny
    err = np.abs(a64[ok] - e64[ok])
    bad = err > tol
    if bad.any():
        j = np.argmax(err / tol)
        idx = np.flatnonzero(ok)[j]
        raise FuzzFailure("mismatch", f"{what}: {bad.sum()} of {err.size} values off; worst at "
                          f"flat index {idx}: got {a64.flat[idx]!r}, reference "
                          f"{e64.flat[idx]!r} (|error| {err[j]:.3g} > tol {tol[j]:.3g}, "
                          f"array magnitude {scale:.3g})")


def compare(res, ref, what, hints, path=()):
    if isinstance(ref, tuple) or isinstance(res, tuple):
        if not (isinstance(ref, tuple) and isinstance(res, tuple)) or len(ref) != len(res):
            raise FuzzFailure("mismatch", f"{what}: returned {summary_of(res)}, reference "
                              f"{summary_of(ref)}")
        for i, (a, b) in enumerate(zip(res, ref)):
            compare(a, b, f"{what}[{i}]", hints, path + (i,))
        return
    if ref is None or res is None:
        if not (ref is None and res is None):
            raise FuzzFailure("mismatch", f"{what}: returned {summary_of(res)}, reference "
                              f"{summary_of(ref)}")
        return
    if not isinstance(res, np.ndarray):
        raise FuzzFailure("mismatch", f"{what}: returned a {type(res).__name__}, not an ndarray")
    close(res, ref, what, hints.get(path, 0.0))


# -- magnitude hints: where a result is a difference of larger terms (a backward pass, an affine
# output), rounding errors scale with those terms, not with the result. A hint is the largest
# term (computed in float64 from the arguments); `close` uses max(|result|, hint) as the scale.

def _f64(v):
    return np.asarray(v).astype(np.float64)


def _finite_max(a):
    a = np.abs(np.asarray(a, dtype=np.float64))
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else 0.0


def _opt(env, name, default):
    v = env.get(name)
    return default if v is None else _f64(v)


def _real(env, name, default):
    try:
        return float(env[name]) if name in env else default
    except Exception:                   # noqa: BLE001
        return default


def _sets(a3, kind, groups):
    """(N, C, S) -> rows that are the statistics sets."""
    n, c, s = a3.shape
    if kind == "batch":
        return a3.transpose(1, 0, 2).reshape(c, n * s)
    return a3.reshape(n, groups, -1)


def _unsets(rows, shape, kind):
    n, c, s = shape
    if kind == "batch":
        return rows.reshape(c, n, s).transpose(1, 0, 2)
    return rows.reshape(n, c, s)


def _groups(env, kind, channels):
    if kind == "group":
        return int(env["num_groups"])
    return channels


def hint_softmax_backward(env, log=False, axis_key="axis", scale=1.0):
    dy, y = _f64(env["dy"]), _f64(env["y"])
    axis = int(env.get(axis_key, -1))
    if log:
        t = np.abs(dy) + np.exp(y) * np.sum(np.abs(dy), axis=axis, keepdims=True)
    else:
        t = np.abs(y) * (np.abs(dy) + np.sum(np.abs(dy * y), axis=axis, keepdims=True))
    return {(): abs(scale) * _finite_max(t)}


def _rstd_bound(var, eps):
    """A bound on rstd = 1 / sqrt(var + eps) and on how rounding errors grow through it: with
    eps < 0 (allowed), var + eps may nearly cancel, amplifying var's error by
    (|var| + |eps|) / |var + eps|."""
    near = np.abs(var + eps) + 1e-300
    return 1 / np.sqrt(near) * ((np.abs(var) + abs(eps)) / near)


def hint_row_norm(env, centered):
    x = _f64(env["x"])
    h = x + _opt(env, "residual", 0.0)
    n = h.shape[-1]
    w, b = _opt(env, "weight", 1.0), _opt(env, "bias", 0.0)
    eps = _real(env, "eps", 1e-5 if centered else 1e-6)
    mean = h.mean(axis=-1, keepdims=True) if centered else 0.0
    var = ((h - mean) ** 2).mean(axis=-1, keepdims=True)
    rstd = _rstd_bound(var, eps)
    y = ((np.abs(h - mean) + np.abs(h)) * rstd * np.abs(w) + np.abs(b)) if n else 0.0
    hints = {(): _finite_max(y), (0,): _finite_max(y)}
    if "residual" in env and env["residual"] is not None:
        hints[(1,)] = _finite_max(np.abs(x) + np.abs(_f64(env["residual"])))
    return hints


def hint_row_norm_backward(env, centered):
    dy, x = _f64(env["dy"]), _f64(env["x"])
    n = x.shape[-1]
    w = _opt(env, "weight", 1.0)
    rstd = _f64(env["rstd"])[..., None]
    mean = _f64(env["mean"])[..., None] if centered else 0.0
    xhat = (x - mean) * rstd
    g = np.abs(dy * w)
    t = np.abs(rstd) * (g + g.mean(axis=-1, keepdims=True)
                        + np.abs(xhat) * np.abs(g * xhat).mean(axis=-1, keepdims=True))
    axes = tuple(range(x.ndim - 1))
    return {(0,): _finite_max(t), (1,): _finite_max(np.sum(np.abs(dy * xhat), axis=axes)),
            (2,): _finite_max(np.sum(np.abs(dy), axis=axes))} if n else {}


def hint_channel_norm(env, kind):
    x = _f64(env["x"])
    x3 = x.reshape(x.shape[0], x.shape[1], -1)
    groups = _groups(env, kind, x.shape[1])
    rows = _sets(x3, kind, groups)
    mean = rows.mean(axis=-1, keepdims=True)
    rstd = _rstd_bound(((rows - mean) ** 2).mean(axis=-1, keepdims=True),
                       _real(env, "eps", 1e-5))
    if kind == "batch" and not truthy_env(env, "training"):
        mean = _f64(env["running_mean"])[:, None]
        rstd = _rstd_bound(_f64(env["running_var"])[:, None], _real(env, "eps", 1e-5))
    t = _unsets((np.abs(rows - mean) + np.abs(rows)) * rstd, x3.shape, kind)
    w, b = _opt(env, "weight", np.ones(1)), _opt(env, "bias", np.zeros(1))
    y = t * np.abs(w)[:, None] + np.abs(b)[:, None]
    return {(): _finite_max(y), (0,): _finite_max(y)}


def truthy_env(env, name):
    return bool(env.get(name, True))


def hint_channel_norm_backward(env, kind):
    dy, x = _f64(env["dy"]), _f64(env["x"])
    n, c = x.shape[:2]
    x3, dy3 = x.reshape(n, c, -1), dy.reshape(n, c, -1)
    groups = _groups(env, kind, c)
    w = _opt(env, "weight", np.ones(1))
    mean, rstd = _f64(env["mean"])[..., None], _f64(env["rstd"])[..., None]
    xhat = _unsets((_sets(x3, kind, groups) - mean) * rstd, x3.shape, kind)
    g = _sets(np.abs(dy3 * w[:, None]), kind, groups)
    xh = _sets(xhat, kind, groups)
    t = np.abs(rstd) * (g + g.mean(axis=-1, keepdims=True)
                        + np.abs(xh) * np.abs(g * xh).mean(axis=-1, keepdims=True))
    return {(0,): _finite_max(t), (1,): _finite_max(np.sum(np.abs(dy3 * xhat), axis=(0, 2))),
            (2,): _finite_max(np.sum(np.abs(dy3), axis=(0, 2)))}


def _ce_hints(env, logits, weight_name="weight"):
    """(loss hint, gradient hint) of a cross-entropy: the largest term of the loss and of each
    row's gradient s_i * (sum_c |r_ic| + 2 |z_loss lse_i|) (see cyburn.reference)."""
    x = _f64(logits)
    classes = x.shape[-1]
    x = x.reshape(-1, classes)
    n = x.shape[0]
    softcap = env.get("softcap")
    z = x if softcap is None else float(softcap) * np.tanh(x / float(softcap))
    m = np.max(z, axis=-1, keepdims=True)
    lse = m + np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True))
    logp = np.abs(z - lse)
    eps = _real(env, "label_smoothing", 0.0)
    zl = abs(_real(env, "z_loss", 0.0))
    w = _opt(env, weight_name, np.ones(classes))
    aw = np.abs(w)
    target = np.asarray(env["target"])
    if target.dtype.kind in "iu":
        t = target.reshape(-1).astype(object)
        ignore = env.get("ignore_index", -100)
        valid = np.array([v != ignore for v in t], dtype=bool)
        ti = np.array([int(v) if ok else 0 for v, ok in zip(t, valid)], dtype=np.int64)
        wt = np.where(valid, w[ti], 0.0)
        r_sum = (abs(1 - eps) * np.abs(wt) + eps / classes * aw.sum()) * valid
        terms = (abs(1 - eps) * np.abs(wt) * logp[np.arange(n), ti]
                 + eps / classes * np.sum(aw * logp, axis=-1)) * valid
        denominator = abs(float(np.sum(wt)))
    else:
        q = np.abs(_f64(target).reshape(-1, classes))
        r = aw * (abs(1 - eps) * q + eps / classes)
        r_sum, terms, valid = r.sum(axis=-1), np.sum(r * logp, axis=-1), np.ones(n, bool)
        denominator = float(n)
    lse = lse[:, 0]
    terms = terms + zl * lse ** 2 * valid
    grad = r_sum + 2 * zl * np.abs(lse) * valid
    reduction = env.get("reduction", "mean")
    dloss = np.abs(_f64(env.get("dloss", 1.0))).reshape(-1)
    scale = dloss / (denominator or 1.0) if reduction == "mean" else dloss
    loss = {"none": _finite_max(terms), "sum": float(np.sum(terms)),
            "mean": float(np.sum(terms)) / (denominator or 1.0)}[reduction]
    return loss, _finite_max(scale * grad)


def hint_cross_entropy(env, backward):
    loss, grad = _ce_hints(env, env["logits"])
    if backward:
        return {(): grad}
    return {(): loss, (0,): loss, (1,): grad}


def hint_linear_cross_entropy(env):
    hidden, weight = _f64(env["hidden"]), _f64(env["weight"])
    logits = hidden @ weight.T + _opt(env, "bias", 0.0)
    loss, grad = _ce_hints(env, logits, weight_name="class_weight")
    return {(): loss, (0,): loss, (1,): grad * _finite_max(np.abs(weight).sum(axis=0)),
            (2,): grad * _finite_max(np.abs(hidden).sum(axis=0)), (3,): grad * hidden.shape[0]}


HINTS = {
    "cross_entropy": lambda env: hint_cross_entropy(env, False),
    "cross_entropy_backward": lambda env: hint_cross_entropy(env, True),
    "linear_cross_entropy": hint_linear_cross_entropy,
    "softmax_backward": hint_softmax_backward,
    "log_softmax_backward": lambda env: hint_softmax_backward(env, log=True),
    "masked_softmax_backward": lambda env: hint_softmax_backward(
        env, axis_key="(last)", scale=_real(env, "scale", 1.0)),
    "layer_norm": lambda env: hint_row_norm(env, True),
    "rms_norm": lambda env: hint_row_norm(env, False),
    "layer_norm_backward": lambda env: hint_row_norm_backward(env, True),
    "rms_norm_backward": lambda env: hint_row_norm_backward(env, False),
    "group_norm": lambda env: hint_channel_norm(env, "group"),
    "instance_norm": lambda env: hint_channel_norm(env, "instance"),
    "batch_norm": lambda env: hint_channel_norm(env, "batch"),
    "group_norm_backward": lambda env: hint_channel_norm_backward(env, "group"),
    "instance_norm_backward": lambda env: hint_channel_norm_backward(env, "instance"),
    "batch_norm_backward": lambda env: hint_channel_norm_backward(env, "batch"),
}


def hints_for(name, env):
    """The magnitude hints of a call that returned (an empty dict when they cannot be made)."""
    if name not in HINTS:
        return {}
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return HINTS[name](env)
    except Exception:                   # noqa: BLE001 - no hint: the result's own magnitude
        return {}


def res_dtype(res):
    return (res[0] if isinstance(res, tuple) else res).dtype


def summary_of(v):
    if isinstance(v, tuple):
        return "(" + ", ".join(summary_of(a) for a in v) + ")"
    if isinstance(v, np.ndarray):
        return f"array{v.shape}:{v.dtype}"
    return type(v).__name__


def describe(v, limit=12):
    """A short description of an argument value (for reports)."""
    if isinstance(v, np.ndarray):
        flags = []
        if v.ndim > 1 and not v.flags.c_contiguous:
            flags.append("F" if v.flags.f_contiguous else f"strides={v.strides}")
        elif v.ndim == 1 and not v.flags.c_contiguous:
            flags.append(f"strides={v.strides}")
        if not v.flags.aligned:
            flags.append("misaligned")
        if not v.flags.writeable:
            flags.append("read-only")
        vals = v.ravel()[:limit].tolist() if v.dtype.kind != "V" else \
            v.astype(np.float32).ravel()[:limit].tolist()
        more = ", ..." if v.size > limit else ""
        return (f"array(shape={v.shape}, dtype={v.dtype}{', ' if flags else ''}"
                f"{', '.join(flags)}, values={vals}{more})")
    if isinstance(v, list):
        return f"list(len={len(v)})"
    return repr(v)


def names_argument(message, case, env):
    """Does the message name an argument (see the module docstring)?"""
    def has(word):                      # the word, or its plural
        return re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}s?(?![A-Za-z0-9_])", message)
    params = list(SIGNATURES[case.name].parameters)
    if len(case.faults) == 1:
        names, _ = case.faults[0]
        return any(has(w) for w in names)
    dtypes = [str(v.dtype) for v in env.values() if isinstance(v, np.ndarray)]
    return any(has(p) for p in params + dtypes)


CALL_STATS = collections.defaultdict(collections.Counter)
FAILURES = {}           # (function, kind, message template) -> the smallest failing case seen
EXAMPLES_OF = collections.defaultdict(dict)     # (name, outcome) -> {template: replay}
LAST_CALL = [None]


def template(message):
    """A message with its numbers and shapes blanked: one entry per kind of error."""
    return re.sub(r"-?\d+(\.\d+)?(e-?\d+)?", "#", message)[:160]


def run_reference(case, args, kwargs):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return getattr(cb.reference, case.name)(*args, **kwargs), None
        except Exception as e:        # noqa: BLE001 - any exception is an outcome
            return None, e


def check_case(case, verbose=False):
    """Run one case against the reference (see the module docstring). Raises FuzzFailure."""
    name = case.name
    fn = getattr(cb, name)
    stats = CALL_STATS[name]
    stats["calls"] += 1
    r_args, r_kwargs, _ = case.build()
    ref, ref_exc = run_reference(case, r_args, r_kwargs)
    args, kwargs, env = case.build()
    pristine = case.build()[2]
    if LAST_CALL[0]:
        with open(LAST_CALL[0], "w") as f:
            f.write(f"{case!r}\n")
            f.write(f"cb.{name}(" + ", ".join(
                [describe(a) for a in args] + [f"{k}={describe(v)}" for k, v in kwargs.items()])
                + ")\n")
    exc = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = fn(*args, **kwargs)
        except Exception as e:        # noqa: BLE001
            exc = e
    try:
        outcome = judge(case, res if exc is None else None, exc, ref, ref_exc, env, pristine,
                        r_kwargs)
    except FuzzFailure as failure:
        stats["FAILED"] += 1
        text = (f"[{failure.kind}] {failure.message}\n  case: {case!r}\n  call: cb.{name}("
                + ", ".join([describe(a) for a in args]
                            + [f"{k}={describe(v)}" for k, v in kwargs.items()])
                + ")\n  cyburn: " + ("returned" if exc is None else
                                     f"{type(exc).__name__}: {exc}")
                + "\n  reference: " + ("returned" if ref_exc is None else
                                       f"{type(ref_exc).__name__}: {ref_exc}"))
        key = (name, failure.kind, template(failure.message.split("\n")[0]))
        if key not in FAILURES or len(text) < len(FAILURES[key]):     # keep the smallest
            FAILURES[key] = text
        if verbose:
            print(text)
        return "FAILED"
    stats[outcome] += 1
    if exc is not None:
        stats[f"  {type(exc).__name__}"] += 1
        key = template(f"{type(exc).__name__}: {exc}")
        EXAMPLES_OF[(name, outcome)].setdefault(key, repr(case))
    if verbose:
        print(outcome, "" if exc is None else f"{type(exc).__name__}: {exc}")
    return outcome


def judge(case, res, exc, ref, ref_exc, env, pristine, r_env):
    """The outcome of one call (a string), or FuzzFailure."""
    single = len(case.faults) <= 1
    if exc is None:
        if (ref_exc is not None and not case.faults and isinstance(ref_exc, ValueError)
                and "zero-size array" in str(ref_exc)):
            # the reference cannot reduce over nothing; the API: zero-size in, zero-size out
            if all(a.size == 0 for a in (res if isinstance(res, tuple) else (res,))
                   if isinstance(a, np.ndarray) and a.ndim):
                return "ok, zero-size (the reference raised)"
        if ref_exc is not None:
            raise FuzzFailure("succeeded-where-reference-raised",
                              f"cyburn returned {summary_of(res)}; the reference raised "
                              f"{type(ref_exc).__name__}: {ref_exc}")
        compare(res, ref, "result", hints_for(case.name, pristine))
        for out_name in ("out", "grad_out"):
            if out_name in env and env[out_name] is not None:
                returned = res[-1] if out_name == "grad_out" else (
                    res[0] if isinstance(res, tuple) else res)
                if returned is not env[out_name]:
                    raise FuzzFailure("out-not-returned", f"{out_name}= is not the array "
                                      f"returned")
        for rname in ("running_mean", "running_var"):
            if isinstance(env.get(rname), np.ndarray):
                # the batch statistics come in the compute dtype of x (float32 for halves)
                work = np.dtype(np.float32) if res_dtype(res).itemsize <= 4 else None
                close(env[rname], r_env[rname], f"{rname} (updated in place)",
                      hint=_finite_max(pristine[rname]), compute=work)
        check_inputs_unchanged(case, env, pristine)
        return "ok"
    if not isinstance(exc, ALLOWED):
        raise FuzzFailure("exception-type", f"raised {type(exc).__name__} (not TypeError, "
                          f"ValueError, IndexError or AxisError): {exc}\n"
                          + "".join(traceback.format_exception(exc)[-4:]))
    message = str(exc)
    if not names_argument(message, case, env):
        raise FuzzFailure("unnamed", f"{type(exc).__name__} whose message names no argument "
                          f"{'of the fault' if len(case.faults) == 1 else ''}: {message!r}")
    if ref_exc is None:
        return "raised, reference returned"
    if "zero-size array" in str(ref_exc):
        # the reference cannot reduce over nothing (see above): it has no say on the type
        return "raised, as the reference"
    if single and isinstance(ref_exc, ALLOWED) and not isinstance(exc, type(ref_exc)):
        raise FuzzFailure("type-differs", f"cyburn raised {type(exc).__name__}, the reference "
                          f"{type(ref_exc).__name__}: {ref_exc}")
    return "raised, as the reference"


def check_inputs_unchanged(case, env, pristine):
    """Every input array that is not an output (nor shares memory with one) is left alone."""
    outputs = [env[n] for n in OUTPUT_ARGS if isinstance(env.get(n), np.ndarray)]
    for n, v in env.items():
        if n in OUTPUT_ARGS or not isinstance(v, np.ndarray):
            continue
        if any(np.shares_memory(v, o) for o in outputs):
            continue
        p = pristine[n]
        if is_float(v.dtype):
            same = np.array_equal(v.astype(np.float64), p.astype(np.float64), equal_nan=True)
        else:
            same = v.dtype.kind in "OUM" or np.array_equal(v, p)
        if not same:
            raise FuzzFailure("input-modified", f"input {n} was modified")


# ================================================================================================
# The child
# ================================================================================================

def fuzz_function(name, examples):
    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), print_blob=False,
              phases=[Phase.generate, Phase.shrink], report_multiple_bugs=True)
    @given(case=cases(name))
    def run(case):
        check_case(case)
    run()


def main(last_call=None, names=None, examples=None):
    faulthandler.enable()
    warnings.simplefilter("ignore")
    LAST_CALL[0] = last_call
    examples = examples or EXAMPLES
    names = names or FUNCTIONS
    failures = {}
    start = time.perf_counter()
    print(f"cyburn {cb.__version__}, SIMD {cb.simd_path()}, {cb.get_num_threads()} threads; "
          f"{examples} examples per function", flush=True)
    for name in names:
        t0 = time.perf_counter()
        try:
            fuzz_function(name, examples)
        except BaseException as e:          # noqa: BLE001 - report and go on
            failures[name] = "".join(traceback.format_exception(e))
        found = [text for key, text in FAILURES.items() if key[0] == name]
        if found:
            failures[name] = "\n\n".join(found)
        st_ = CALL_STATS[name]
        print(f"{name:24s} {time.perf_counter() - t0:6.1f} s  {st_['calls']:5d} calls  "
              f"{'FAILED' if name in failures else 'ok'}", flush=True)
    print("\nFUZZ SUMMARY (outcomes per function; exception types of cyburn's raises)")
    for name in names:
        st_ = CALL_STATS[name]
        parts = [f"{k}={v}" for k, v in sorted(st_.items()) if k != "calls"]
        print(f"  {name}: calls={st_['calls']}  " + "  ".join(parts))
    print("\ncyburn raised where the reference returned (allowed; one example of each kind):")
    for (name, outcome), msgs in sorted(EXAMPLES_OF.items()):
        if outcome == "raised, reference returned":
            for msg, example in msgs.items():
                print(f"  {name}: {msg}\n      {example}")
    print(f"\n{len(names)} functions, {sum(CALL_STATS[n]['calls'] for n in names)} calls, "
          f"{time.perf_counter() - start:.1f} s, {len(failures)} failing")
    for name, text in failures.items():
        print(f"\n==== FAILURE in {name} ====\n{text}")
    return 1 if failures else 0


def replay(name, spec, faults=()):
    """Rebuild and check one case (for a failure's reproducer); prints the outcome."""
    case = Case(name, spec, tuple(faults))
    args, kwargs, _ = case.build()
    print(f"cb.{name}(" + ", ".join([describe(a) for a in args]
                                    + [f"{k}={describe(v)}" for k, v in kwargs.items()]) + ")")
    try:
        return check_case(case, verbose=True)
    except FuzzFailure as e:
        print(e)
        return e


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
