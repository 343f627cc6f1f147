"""softmax, log_softmax, softmax_backward, log_softmax_backward: correctness, dtypes, layouts,
edge values, gradients, out=, errors, the thread-count API and PyTorch's autograd. (The
contracts every public function keeps: tests/test_contracts.py.)"""
import math
import re
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.exceptions import AxisError

import cyburn as cb
from helpers import (ALL_FUNCS, BACKWARD, F16, F32, FORWARD, LAYOUTS, REFERENCE,
                     assert_bitwise_equal, assert_within, check_against_reference,
                     check_against_truth, eps, in_layout, random_array, random_inputs,
                     shapes, tolerance)

FUNC_NAMES = list(ALL_FUNCS)
FLOATS = [np.float32, np.float64]


def call(name, args, axis=-1, **kw):
    return ALL_FUNCS[name](*args, axis=axis, **kw)


def assert_same_result(actual, expected, name, args, axis, what):
    """actual is `expected` (cyburn's result for args) computed again another way (into out=,
    in place, from a copy): equal within rounding; bitwise equality is only promised across
    thread counts."""
    dtype = expected.dtype
    if dtype == F16:
        _, tol = tolerance(name, args, axis, F32, k=8, s=32)
        tol = tol + half_ulp(expected)
    else:
        _, tol = tolerance(name, args, axis, dtype, k=8, s=32)
    assert_within(actual, expected, tol, what)


# ================================================================================================
# Correctness against float64 truth and cyburn.reference, any shape / axis / layout
# ================================================================================================

@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", FUNC_NAMES)
@given(data=st.data())
def test_matches_truth_any_shape_axis_layout(name, dtype, data):
    shape = data.draw(shapes(), label="shape")
    ndim = len(shape)
    axis = data.draw(st.integers(-ndim, ndim - 1), label="axis")
    layout = data.draw(st.sampled_from(LAYOUTS), label="layout")
    scale = data.draw(st.sampled_from([1e-3, 1.0, 4.0, 30.0]), label="scale")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    args = random_inputs(name, rng, shape, dtype, axis, layout, scale)
    before = [a.copy() for a in args]

    result = call(name, args, axis)

    assert type(result) is np.ndarray
    assert result.shape == shape and result.dtype == dtype
    assert not any(np.shares_memory(result, a) for a in args)
    for a, b in zip(args, before):                 # inputs are left alone
        assert_bitwise_equal(a, b, "input modified")
    check_against_truth(name, result, args, axis, dtype)
    check_against_reference(name, result, args, axis, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", FUNC_NAMES)
@pytest.mark.parametrize("shape, axis", [
    ((3, 1030), -1), ((3, 1030), 0), ((1030, 3), 0), ((1030, 3), 1),
    ((2, 130, 129), 1), ((2, 130, 129), -1), ((2, 130, 129), 0), ((129, 2, 5), 0),
    ((1, 1), 0), ((7, 1), -1), ((1, 7), 0), ((5,), 0), ((1, 17), -1), ((33, 65), -1),
    ((2, 3, 4, 257), 2), ((257, 3, 2, 2), -4),
])
@pytest.mark.parametrize("layout", ["C", "strided-transposed"])
def test_matches_truth_explicit_shapes(name, dtype, shape, axis, layout, rng):
    args = random_inputs(name, rng, shape, dtype, axis, layout, 5.0)
    result = call(name, args, axis)
    assert result.shape == shape and result.dtype == dtype
    check_against_truth(name, result, args, axis, dtype)
    check_against_reference(name, result, args, axis, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", FUNC_NAMES)
@pytest.mark.parametrize("shape, axis", [
    ((1, 50257), -1),          # one long row: vector main loop + tail, single thread
    ((4, 50257), -1),          # threads over rows
    ((256, 1024), -1),         # many rows, threads
    ((1024, 256), 0),          # reduced axis not last: threads over column tiles
    ((3, 50257), 0),           # short reduced axis, very wide tile range
])
def test_large_rows(name, dtype, shape, axis, rng):
    args = random_inputs(name, rng, shape, dtype, axis, "C", 4.0)
    result = call(name, args, axis)
    check_against_truth(name, result, args, axis, dtype)
    check_against_reference(name, result, args, axis, dtype)
    if name == "softmax":
        n = shape[axis]
        sums = result.sum(axis=axis, dtype=np.float64)
        assert np.all(np.abs(sums - 1) <= 4 * math.sqrt(n) * eps(dtype) + 8 * eps(dtype)), \
            np.abs(sums - 1).max()


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", FUNC_NAMES)
@pytest.mark.parametrize("shape, axis", [
    ((12288, 200), 0),         # long reduced axis, rows 48 KiB apart: narrow column tiles
    ((2, 1500, 1030), 1),      # several tiles per outer index, a ragged last tile
    ((64, 12288), -1),         # rows a multiple of 4 KiB long
    ((4100, 1024), 0),         # a result of 16 MiB or more (32 MiB in float64)
])
def test_large_arrays(name, dtype, shape, axis, rng):
    args = random_inputs(name, rng, shape, dtype, axis, "C", 4.0)
    result = call(name, args, axis)
    assert result.shape == shape and result.dtype == dtype
    check_against_truth(name, result, args, axis, dtype)


@pytest.mark.parametrize("name", FUNC_NAMES)
@pytest.mark.parametrize("offset", [1, 4, 36])
def test_large_result_into_unaligned_out(name, offset, rng):
    """A large result (>= 16 MiB) written into a user's out= that starts off any alignment."""
    shape, axis = (4100, 1024), 0
    args = random_inputs(name, rng, shape, np.float32, axis, "C", 4.0)
    expected = call(name, args, axis)
    buf = np.zeros(expected.nbytes + 64 + offset, np.uint8)
    out = np.ndarray(shape, np.float32, buffer=buf, offset=offset)
    guard_before = buf[:offset].copy()
    assert call(name, args, axis, out=out) is out
    assert_same_result(out, expected, name, args, axis, f"{name} into out at offset {offset}")
    assert np.array_equal(buf[:offset], guard_before) and not buf[offset + out.nbytes:].any(), \
        "wrote outside out"


@pytest.mark.parametrize("name", list(FORWARD))
@pytest.mark.parametrize("dtype", FLOATS)
@given(data=st.data())
def test_arbitrary_finite_values(name, dtype, data):
    """Any finite values, from subnormal to the largest (differences may overflow)."""
    shape = data.draw(shapes(max_dims=3, max_side=12, max_size=200), label="shape")
    width = 32 if dtype == np.float32 else 64
    x = data.draw(hnp.arrays(dtype, shape, elements=st.floats(
        allow_nan=False, allow_infinity=False, width=width)), label="x")
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    result = FORWARD[name](x, axis=axis)
    assert np.all(np.isfinite(result) | (result == -np.inf)), "finite input, non-finite output"
    check_against_truth(name, result, (x,), axis, dtype)
    if name == "softmax":
        assert np.all((result >= 0) & (result <= 1))


# ================================================================================================
# dtypes
# ================================================================================================

def half_ulp(x):
    """One unit in the last place of float16 at |x| (the smallest subnormal at 0)."""
    return np.spacing(np.abs(np.asarray(x, dtype=np.float64)).astype(np.float16)).astype(np.float64)


@pytest.mark.parametrize("name", FUNC_NAMES)
@pytest.mark.parametrize("shape, axis", [((5, 37), -1), ((37, 5), 0), ((3, 40, 7), 1),
                                         ((4, 1030), -1)])
def test_float16_computed_in_float32(name, shape, axis, rng):
    args = random_inputs(name, rng, shape, np.float16, axis, "C", 3.0)
    result = call(name, args, axis)
    assert result.dtype == np.float16 and result.shape == shape
    # the float32 computation, rounded once to float16
    via32 = call(name, [a.astype(np.float32) for a in args], axis).astype(np.float16)
    assert_within(result, via32, half_ulp(via32), f"{name} float16 vs float32 result cast")
    # and the truth: one float16 rounding plus float32-sized errors (not float16 accumulation)
    truth, tol32 = tolerance(name, args, axis, np.float32)
    assert_within(result, truth, half_ulp(truth) + tol32, f"{name} float16 vs truth")


def test_float16_accumulates_in_float32():
    """2048 equal float16 entries: summing in float16 would stall (2048 + 1 == 2048 in float16),
    float32 accumulation gives exactly 1/2048."""
    x = np.zeros((2, 4096), np.float16)
    y = cb.softmax(x)
    assert y.dtype == np.float16
    assert np.all(y == np.float16(1 / 4096))
    ly = cb.log_softmax(x)
    assert np.all(ly == np.float16(-math.log(4096)))


def test_bfloat16_if_available(rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    x = rng.standard_normal((4, 33)).astype(bf16)
    y = cb.softmax(x)
    assert y.dtype == bf16
    expected = cb.softmax(x.astype(np.float32)).astype(bf16)
    assert np.allclose(y.astype(np.float32), expected.astype(np.float32), rtol=2**-7, atol=0)


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.uint8, np.int16, np.int32, np.int64,
                                   np.uint64])
@pytest.mark.parametrize("name", list(FORWARD))
def test_integer_and_bool_inputs_give_float64(name, dtype, rng):
    x = rng.integers(0, 2 if dtype == np.bool_ else 50, (6, 9)).astype(dtype)
    for axis in (-1, 0):
        y = FORWARD[name](x, axis=axis)
        assert y.dtype == np.float64
        as_float = x.astype(np.float64)
        assert_same_result(y, FORWARD[name](as_float, axis=axis), name, (as_float,), axis,
                           f"{name} of {np.dtype(dtype).name}")
        out = np.empty(x.shape)
        assert FORWARD[name](x, axis=axis, out=out) is out
        assert_same_result(out, y, name, (as_float,), axis, "out=")


@pytest.mark.parametrize("name", list(BACKWARD))
@pytest.mark.parametrize("dy_dtype, y_dtype, expected", [
    (np.int64, np.float32, np.float64), (np.bool_, np.float64, np.float64),
    (np.float32, np.float64, np.float64), (np.float16, np.float32, np.float32),
    (np.float16, np.float16, np.float16), (np.int32, np.int32, np.float64),
])
def test_backward_mixed_dtypes(name, dy_dtype, y_dtype, expected, rng):
    dy = rng.integers(-3, 4, (5, 8)).astype(dy_dtype)
    y = cb.reference.softmax(rng.standard_normal((5, 8)))
    if name == "log_softmax_backward":
        y = np.log(y)
    y = y.astype(y_dtype)
    result = BACKWARD[name](dy, y)
    assert result.dtype == expected
    if result.dtype == F16:
        want = BACKWARD[name](dy.astype(np.float32), y.astype(np.float32)).astype(np.float16)
        assert_within(result, want, half_ulp(want), f"{name} float16")
    else:
        check_against_reference(name, result, (dy, y), -1, expected)


def test_reference_takes_a_numpy_integer_axis_and_out():
    """(The signatures themselves: tests/test_contracts.py.)"""
    x = np.full((2, 3), 0.25)
    for name in FUNC_NAMES:
        args = (x,) if name in FORWARD else (x, x)
        out = np.empty((2, 3))
        assert REFERENCE[name](*args, axis=np.int64(0), out=out) is out
        assert_same_result(call(name, args, axis=np.int64(0)), out, name, args, 0,
                           "vs reference")


BAD_DTYPES = [np.complex64, np.complex128, object, "U3", "S3"]


def bad_array(dtype):
    if dtype is object:
        return np.array([[1.0, 2.0], [3.0, 4.0]], dtype=object)
    if dtype in ("U3", "S3"):
        return np.array([["1", "2"], ["3", "4"]], dtype=dtype)
    return np.ones((2, 2), dtype=dtype)


@pytest.mark.parametrize("dtype", BAD_DTYPES)
@pytest.mark.parametrize("name", FUNC_NAMES)
def test_unsupported_dtypes_raise_type_error(name, dtype):
    bad = bad_array(dtype)
    good = np.full((2, 2), 0.5)
    if name in FORWARD:
        cases = [(bad,)]
    else:
        cases = [(bad, good), (good, bad)]
    for args in cases:
        d = np.dtype(dtype)
        with pytest.raises(TypeError, match=f"{re.escape(str(d))}|{re.escape(d.name)}"):
            call(name, args)


@pytest.mark.parametrize("name", list(FORWARD))
def test_non_native_byte_order(name, rng):
    """Byte-swapped float32 data is computed like float32 and returned in native order."""
    x = rng.standard_normal((3, 10)).astype(np.float32)
    swapped = x.astype(x.dtype.newbyteorder())
    y = FORWARD[name](swapped)
    assert y.dtype == np.float32
    assert_same_result(y, FORWARD[name](x), name, (x,), -1, "byte order")
    dy = rng.standard_normal((3, 10)).astype(np.float64)
    backward = getattr(cb, name + "_backward")
    dx = backward(dy.astype(">f8"), y.astype(">f4"))
    assert dx.dtype == np.float64
    np.testing.assert_array_equal(dx, backward(dy, y.astype(np.float64)))


# ================================================================================================
# Extreme values, on the last axis and on other axes
# ================================================================================================

def embeddings(rows):
    """The same rows (k, n) reduced along the last axis, the first axis, and a middle axis.
    Yields (label, x, axis, back) with back(result) -> the (k, n) rows of the result."""
    rows = np.asarray(rows)
    yield "last", rows.copy(), -1, lambda y: y
    yield "first", np.ascontiguousarray(rows.T), 0, lambda y: y.T
    mid = np.ascontiguousarray(np.broadcast_to(rows.T[None], (2,) + rows.T.shape))
    yield "middle", mid, 1, lambda y: y[1].T
    yield "fortran", np.asfortranarray(rows), -1, lambda y: y
    spaced = np.full((rows.shape[0], 2 * rows.shape[1]), np.nan, rows.dtype)
    spaced[:, ::-2] = rows
    yield "strided", spaced[:, ::-2], -1, lambda y: y


def results_in_rows(func, rows):
    """func applied to `rows` in every embedding, as (label, rows of result) pairs."""
    out = []
    for label, x, axis, back in embeddings(rows):
        with np.errstate(all="ignore"):
            y = func(x, axis=axis)
        if label == "middle":
            np.testing.assert_allclose(y[0], y[1], rtol=8 * eps(y.dtype), atol=0,
                                       err_msg="middle embedding: identical blocks differ")
        out.append((label, back(y)))
    return out


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", list(FORWARD))
def test_extreme_finite_values(name, dtype):
    big = 3e38 if dtype == np.float32 else 1.7e308
    rows = np.array([
        [1e4, -1e4, 0.0, 1e4 - 1],
        [big, -big, 0.0, -big],
        [big, big, -big, big],
        [-big, -big, -big, -big],
        [-1e4, -1e4, -1e4, -1e4 + 2],
        [1e-30, -1e-30, 0.0, 5e-324 if dtype == np.float64 else 1e-45],
    ], dtype=dtype)
    for label, y in results_in_rows(FORWARD[name], rows):
        what = f"{name} {label}"
        check_against_truth(name, y, (rows,), -1, dtype)
        if name == "softmax":
            assert np.all(np.isfinite(y)), what
            assert y[1].tolist() == [1.0, 0.0, 0.0, 0.0], what      # no overflow
            assert y[3].tolist() == [0.25] * 4, what
            assert np.all(y[2] == np.array([1, 1, 0, 1], dtype) / dtype(3)), what
        else:
            assert y[1][0] == 0 and y[2][0] == y[2][1] == y[2][3], what
            assert np.all(y[1][1:] < -1e38), what                  # -2*big (-inf in float32)
            np.testing.assert_allclose(y[3], -math.log(4), rtol=4 * eps(dtype), err_msg=what)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", list(FORWARD))
def test_minus_inf_entries_have_zero_weight(name, dtype):
    rows = np.array([[-np.inf, 0.0, 1.0, -np.inf, 2.0],
                     [3.0, -np.inf, -np.inf, -np.inf, -np.inf]], dtype=dtype)
    finite = np.array([[0.0, 1.0, 2.0]], dtype=dtype)
    expected_finite = FORWARD[name](finite)
    for label, y in results_in_rows(FORWARD[name], rows):
        what = f"{name} {label}"
        if name == "softmax":
            assert np.all(y[0][[0, 3]] == 0) and not np.signbit(y[0][[0, 3]]).any(), what
            assert y[1].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0], what
        else:
            assert np.all(y[0][[0, 3]] == -np.inf), what
            assert y[1][0] == 0 and np.all(y[1][1:] == -np.inf), what
        np.testing.assert_allclose(y[0][[1, 2, 4]], expected_finite[0], rtol=4 * eps(dtype),
                                   err_msg=what)


@pytest.mark.parametrize("dtype", FLOATS + [np.float16])
@pytest.mark.parametrize("name", list(FORWARD))
@pytest.mark.parametrize("n", [1, 2, 5, 16, 37, 1030])
def test_nan_and_infinite_rows(name, dtype, n, rng):
    """A NaN anywhere makes its row NaN; an all -inf row is NaN; a +inf entry gives NaN
    (inf - inf), as in PyTorch and cyburn.reference. Other rows are unaffected."""
    positions = sorted({0, n // 2, n - 1})
    k = 2 + 2 * len(positions) + 1
    rows = (rng.standard_normal((k, n)) * 3).astype(dtype)
    special = {}
    r = 1
    for p in positions:
        rows[r, p] = np.nan
        special[r] = "nan"
        rows[r + 1, p] = np.inf
        special[r + 1] = "+inf"
        r += 2
    rows[r] = -np.inf
    special[r] = "all -inf"
    normal = [i for i in range(k) if i not in special]
    expected_normal = FORWARD[name](rows[normal])
    with np.errstate(all="ignore"):
        ref = REFERENCE[name](rows)
    for label, y in results_in_rows(FORWARD[name], rows):
        for i, kind in special.items():
            assert np.all(np.isnan(y[i])), f"{name} {label}: {kind} row {i} -> {y[i]}"
        assert np.array_equal(np.isnan(y), np.isnan(ref)), f"{name} {label} vs reference"
        assert not np.isnan(y[normal]).any(), f"{name} {label}: NaN leaked into other rows"
        np.testing.assert_allclose(y[normal], expected_normal, rtol=8 * eps(dtype),
                                   atol=8 * eps(dtype), err_msg=f"{name} {label}")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", list(FORWARD))
def test_nan_in_long_rows_at_every_position_class(name, dtype):
    """NaN at each position modulo 64 of a long row (main vector loop, tail, first element)."""
    n = 200
    rows = np.zeros((n, n), dtype)
    rows[np.arange(n), np.arange(n)] = np.nan
    for label, y in results_in_rows(FORWARD[name], rows):
        assert np.all(np.isnan(y)), f"{name} {label}: {np.isnan(y).all(axis=1).sum()} of {n}"


@pytest.mark.parametrize("name", list(BACKWARD))
def test_backward_propagates_nan(name):
    y = np.full((3, 6), 1 / 6)
    dy = np.ones((3, 6))
    dy[1, 4] = np.nan
    dx = BACKWARD[name](dy, y if name == "softmax_backward" else np.log(y))
    assert np.all(np.isnan(dx[1])) and not np.isnan(dx[[0, 2]]).any()
    dx0 = BACKWARD[name](dy.T.copy(), (y if name == "softmax_backward" else np.log(y)).T.copy(),
                         axis=0)
    assert np.all(np.isnan(dx0[:, 1])) and not np.isnan(dx0[:, [0, 2]]).any()


# ================================================================================================
# Gradients by central finite differences (float64)
# ================================================================================================

def numerical_gradient(forward, x, g, axis, h=1e-5):
    """d/dx sum(g * forward(x)) by central differences, all perturbations in one call."""
    size = x.size
    batch = np.broadcast_to(x, (2 * size,) + x.shape).copy()
    flat = batch.reshape(2 * size, size)
    idx = np.arange(size)
    flat[idx, idx] += h
    flat[size + idx, idx] -= h
    batch_axis = axis if axis < 0 else axis + 1
    f = forward(batch, axis=batch_axis)
    loss = np.sum((f * g).reshape(2 * size, size), axis=1)
    return ((loss[:size] - loss[size:]) / (2 * h)).reshape(x.shape)


@pytest.mark.parametrize("name", list(FORWARD))
@given(data=st.data())
def test_backward_is_the_gradient(name, data):
    shape = data.draw(shapes(max_dims=3, max_side=8, max_size=40), label="shape")
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = rng.standard_normal(shape) * 2
    g = rng.standard_normal(shape)
    forward = FORWARD[name]
    backward = BACKWARD[name + "_backward"]
    numeric = numerical_gradient(forward, x, g, axis)
    analytic = backward(g, forward(x, axis=axis), axis=axis)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", list(FORWARD))
@pytest.mark.parametrize("shape, axis", [((4, 7), -1), ((7, 4), 0), ((3, 5, 4), 1),
                                         ((2, 3, 200), -1)])
def test_backward_is_the_gradient_explicit(name, shape, axis, rng):
    x = rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    numeric = numerical_gradient(FORWARD[name], x, g, axis)
    analytic = BACKWARD[name + "_backward"](g, FORWARD[name](x, axis=axis), axis=axis)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


# ================================================================================================
# out=
# ================================================================================================

@pytest.mark.parametrize("dtype", FLOATS + [np.float16])
@pytest.mark.parametrize("name", FUNC_NAMES)
@pytest.mark.parametrize("out_layout", ["C", "F", "strided", "negative"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_out_is_written_and_returned(name, dtype, out_layout, axis, rng):
    shape = (6, 45)
    args = random_inputs(name, rng, shape, dtype, axis, "C", 3.0)
    expected = call(name, args, axis)
    out = in_layout(np.full(shape, 7, dtype), out_layout, rng)
    result = call(name, args, axis, out=out)
    assert result is out
    assert_same_result(out, expected, name, args, axis, f"{name} out={out_layout}")


@pytest.mark.parametrize("dtype", FLOATS + [np.float16])
@pytest.mark.parametrize("name", list(FORWARD))
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape, axis", [((6, 45), -1), ((6, 45), 0), ((3, 4, 140), 1)])
def test_in_place(name, dtype, layout, shape, axis, rng):
    x = random_array(rng, shape, dtype, layout, 3.0)
    original = x.copy()
    result = FORWARD[name](x, axis=axis, out=x)
    assert result is x
    if dtype == np.float16:
        expected = FORWARD[name](original, axis=axis)
        assert_within(x, expected, half_ulp(expected), f"{name} in-place float16")
    else:
        check_against_truth(name, x, (original,), axis, dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", FUNC_NAMES)
@pytest.mark.parametrize("axis", [-1, 0])
def test_out_partially_overlapping_input(name, dtype, axis, rng):
    """out= a view overlapping the input (not the same elements) gives the right answer."""
    shape = (5, 40)
    # out is the input reversed along the first axis
    args = [a.copy() for a in random_inputs(name, rng, shape, dtype, axis, "C", 3.0)]
    args_before = [a.copy() for a in args]
    expected = call(name, args_before, axis)
    out = args[-1][::-1]
    assert call(name, args, axis, out=out) is out
    assert_same_result(out, expected, name, args_before, axis, "out=x[::-1]")
    # out is the input shifted by one element
    args = [a.copy() for a in random_inputs(name, rng, shape, dtype, axis, "C", 3.0)]
    buf = np.zeros(args[-1].size + 1, dtype)
    buf[:-1] = args[-1].ravel()
    args[-1] = buf[:-1].reshape(shape)
    args_before = [a.copy() for a in args]
    expected = call(name, args_before, axis)
    out = buf[1:].reshape(shape)
    assert call(name, args, axis, out=out) is out
    assert_same_result(out, expected, name, args_before, axis, "out shifted by one element")


@pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward"])
@pytest.mark.parametrize("shape", [(3, 70), (5, 2500), (40, 3000)])
@pytest.mark.parametrize("which", ["dy", "y"])
def test_backward_out_is_an_input(name, shape, which, rng):
    """out= may be dy or y itself: the result is still right (rows of 2500 floats take the
    long-row path of log_softmax_backward, which writes exp(y) before it reads dy again)."""
    dy = rng.standard_normal(shape).astype(np.float32)
    y = (cb.softmax if name == "softmax_backward" else cb.log_softmax)(
        rng.standard_normal(shape).astype(np.float32))
    expected = getattr(cb, name)(dy, y)
    out = dy if which == "dy" else y
    assert getattr(cb, name)(dy, y, out=out) is out
    assert_bitwise_equal(out, expected, f"{name} out={which}")


# ================================================================================================
# Unusual inputs: zero-size, 0-d, read-only, broadcast, unaligned
# ================================================================================================

@pytest.mark.parametrize("name", FUNC_NAMES)
def test_zero_dim_input_has_no_axis(name):
    x = np.float64(0.5)
    args = (x,) if name in FORWARD else (x, x)
    for axis in (-1, 0):
        with pytest.raises(AxisError):
            call(name, args, axis)


@pytest.mark.parametrize("name", FUNC_NAMES)
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_axis_out_of_range(name, ndim):
    x = np.ones((2,) * ndim)
    args = (x,) if name in FORWARD else (x, x)
    for axis in (ndim, ndim + 5, -ndim - 1):
        with pytest.raises(AxisError):
            call(name, args, axis)
    assert isinstance(AxisError(0), (ValueError, IndexError))


@pytest.mark.parametrize("name", list(BACKWARD))
def test_backward_shape_mismatch_names_both_shapes(name):
    with pytest.raises(ValueError) as info:
        BACKWARD[name](np.ones((2, 3)), np.ones((3, 2)))
    assert "(2, 3)" in str(info.value) and "(3, 2)" in str(info.value)
    with pytest.raises(ValueError) as info:
        BACKWARD[name](np.ones((4, 1)), np.ones((4, 5)))       # no broadcasting either
    assert "(4, 1)" in str(info.value) and "(4, 5)" in str(info.value)


@pytest.mark.parametrize("name", FUNC_NAMES)
@pytest.mark.parametrize("axis", [-1, 0])
def test_read_only_and_broadcast_inputs(name, axis, rng):
    args = [a.copy() for a in random_inputs(name, rng, (8, 50), np.float32, axis, "C")]
    expected = call(name, args, axis)
    for a in args:
        a.flags.writeable = False
    assert_bitwise_equal(call(name, args, axis), expected, "read-only input")
    # stride-0 inputs: one row repeated
    row = [a[:1] for a in args]
    bcast = [np.broadcast_to(a, (8, 50)) for a in row]
    got = call(name, bcast, axis)
    want = call(name, [b.copy() for b in bcast], axis)
    check_against_truth(name, got, [b.copy() for b in bcast], axis, np.float32)
    np.testing.assert_allclose(got, want, rtol=4 * eps(np.float32), atol=1e-30)


ODD_SIZE_ONE_VIEWS = [  # (base shape, index): length-1 axes with unusual strides
    ((2, 3, 2), np.s_[::2, ::3, ::2]),         # (1, 1, 1)
    ((4, 2), np.s_[:, 1:]),                    # (4, 1), the column 2 elements apart
    ((3, 4), np.s_[::3]),                      # (1, 4)
    ((5, 6), np.s_[:, 2:3]),                   # (5, 1)
    ((4, 6, 5), np.s_[:, 1:2, ::-2]),          # (4, 1, 3)
    ((1, 6), np.s_[:, ::-1]),                  # (1, 6), negative stride
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", FUNC_NAMES)
@pytest.mark.parametrize("base_shape, index", ODD_SIZE_ONE_VIEWS)
def test_length_one_axes_with_unusual_strides(name, dtype, base_shape, index, rng):
    base = (rng.standard_normal(base_shape) * 3).astype(dtype)
    x = base[index]
    for axis in range(-x.ndim, x.ndim):
        what = f"{name} shape {x.shape} strides {x.strides} axis {axis}"
        if name in FORWARD:
            args = (x,)
        else:
            y = (cb.reference.softmax if name == "softmax_backward"
                 else cb.reference.log_softmax)(x, axis=axis).astype(dtype)
            y_base = np.zeros_like(base)
            y_base[index] = y
            args = (x, y_base[index])
        result = call(name, args, axis)
        assert result.shape == x.shape, what
        check_against_truth(name, result, args, axis, dtype)
        if name in FORWARD:
            inplace = base.copy()[index]
            assert call(name, (inplace,), axis, out=inplace) is inplace, what
            assert_same_result(inplace, result, name, args, axis, what + " in place")


def unaligned(shape, dtype, offset=1):
    """A C-contiguous array whose data starts `offset` bytes past an aligned address."""
    buf = np.zeros(math.prod(shape) * np.dtype(dtype).itemsize + 64 + offset, np.uint8)
    start = (-buf.ctypes.data) % 64 + offset
    u = np.ndarray(shape, dtype, buffer=buf, offset=start)
    assert not u.flags.aligned and u.flags.c_contiguous
    return u


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", FUNC_NAMES)
@pytest.mark.parametrize("shape, axis", [((30, 67), -1), ((30, 67), 0), ((64, 1030), -1),
                                         ((4, 300, 7), 1)])
def test_unaligned_inputs_and_out(name, dtype, shape, axis, rng):
    """Misaligned data (NumPy allows it, e.g. from a byte buffer) is read and written right
    (not necessarily bitwise as aligned data: a vector loop may start at another element)."""
    args = random_inputs(name, rng, shape, dtype, axis, "C", 3.0)
    expected = call(name, args, axis)
    _, tol = tolerance(name, args, axis, dtype, k=8, s=32)
    moved = []
    for a in args:
        u = unaligned(shape, dtype)
        u[...] = a
        moved.append(u)
    assert_within(call(name, moved, axis), expected, tol, "unaligned inputs")
    out = unaligned(shape, dtype, offset=3)
    assert call(name, moved, axis, out=out) is out
    assert_within(out, expected, tol, "unaligned inputs and out")
    check_against_truth(name, out, args, axis, dtype)
    if name in FORWARD:
        assert call(name, moved, axis, out=moved[0]) is moved[0]
        assert_within(moved[0], expected, tol, "unaligned in place")


# ================================================================================================
# Threads
# ================================================================================================

def test_num_threads_api(restore_threads):
    start = cb.get_num_threads()
    assert isinstance(start, int) and start >= 1
    cb.set_num_threads(3)
    assert cb.get_num_threads() == 3
    cb.set_num_threads(np.int64(2))
    assert cb.get_num_threads() == 2
    with cb.num_threads(1):
        assert cb.get_num_threads() == 1
        with cb.num_threads(5):
            assert cb.get_num_threads() == 5
        assert cb.get_num_threads() == 1
    assert cb.get_num_threads() == 2
    with pytest.raises(RuntimeError):
        with cb.num_threads(4):
            raise RuntimeError("boom")
    assert cb.get_num_threads() == 2


def test_num_threads_block_is_local_to_its_python_thread(restore_threads):
    """A `with num_threads(n)` block in one Python thread leaves the others' count alone."""
    cb.set_num_threads(2)
    inside, seen_elsewhere = threading.Event(), []

    def other():
        inside.wait()
        seen_elsewhere.append(cb.get_num_threads())

    worker = threading.Thread(target=other)
    worker.start()
    with cb.num_threads(1):
        inside.set()
        worker.join()
        assert cb.get_num_threads() == 1
    assert seen_elsewhere == [2]
    assert cb.get_num_threads() == 2


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-1, ValueError), ("2", TypeError),
                                        (2.0, TypeError), (None, TypeError), (True, TypeError),
                                        (10**6, ValueError), (2**40, ValueError)])
def test_set_num_threads_rejects(bad, error, restore_threads):
    cb.set_num_threads(2)
    with pytest.raises(error):
        cb.set_num_threads(bad)
    assert cb.get_num_threads() == 2
    with pytest.raises(error):
        with cb.num_threads(bad):
            pass                                # pragma: no cover
    assert cb.get_num_threads() == 2


# ================================================================================================
# PyTorch parity
# ================================================================================================

def test_matches_pytorch_autograd(torch, rng):
    x = rng.standard_normal((5, 33))
    g = rng.standard_normal((5, 33))
    for name, axis in [("softmax", -1), ("log_softmax", 0)]:
        tx = torch.tensor(x, requires_grad=True)
        getattr(torch, name)(tx, dim=axis).backward(torch.from_numpy(g))
        got = BACKWARD[name + "_backward"](g, FORWARD[name](x, axis=axis), axis=axis)
        np.testing.assert_allclose(got, tx.grad.numpy(), rtol=1e-12, atol=1e-14)
