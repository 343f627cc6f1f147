"""The fast lane of a call (kernels.ready_call): the arrays it passes straight to a kernel,
and the ones it leaves to the general path, which must give the same results."""
import numpy as np
import pytest

import cyburn as cb
from cyburn._dispatch import kernels


def _x(shape=(4, 64), dtype=np.float32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_usual_calls_take_the_lane(dtype):
    x, dy = _x(dtype=dtype), _x(dtype=dtype)
    out = np.empty_like(x)
    target, axis = kernels.ready_call(x, None, None, -1, True)
    assert target.shape == x.shape and target.dtype == x.dtype and axis == 1
    assert kernels.ready_call(x, None, out, 0, True)[0] is out
    assert kernels.ready_call(x, None, x, 1, True)[0] is x             # in place
    assert kernels.ready_call(dy, x, x, 1, True)[0] is x
    assert kernels.ready_call(dy, x, out, -2, False) == (out, 0)


def test_everything_else_is_left_to_the_general_path():
    x = _x()
    out = np.empty_like(x)
    big_endian = x.astype(">f4")
    unaligned = np.frombuffer(np.zeros(x.nbytes + 1, np.uint8)[1:].data, np.float32
                              ).reshape(x.shape)
    read_only = np.empty_like(x)
    read_only.flags.writeable = False
    left = [
        (x.tolist(), None, None, -1, True),                 # not an ndarray
        (x.astype(np.float16), None, None, -1, True),       # half type: computed in float32
        (big_endian, None, None, -1, True),
        (np.asfortranarray(x), None, None, -1, True),
        (x[:, ::2], None, None, -1, True),
        (unaligned, None, None, -1, True),
        (x[:0], None, None, -1, True),                      # empty
        (x, None, None, np.int64(1), True),                 # axis not a Python int
        (x, None, None, True, True),
        (x, None, None, 2, True), (x, None, None, -3, True),
        (x, None, None, 1 << 63, True), (x, None, None, -(1 << 70), True),
        (x, x.astype(np.float64), None, -1, True),          # mixed dtypes
        (x, x[:2], None, -1, True),                         # mixed shapes
        (x, None, out[:2], -1, True),
        (x, None, out.astype(np.float64), -1, True),
        (x, None, read_only, -1, True),
        (x, None, np.asfortranarray(out), -1, True),
        (x, None, list(out), -1, True),
        (x, x, x, -1, False),                               # out may not be an input
        (x, _x(), x, -1, False),
    ]
    for args in left:
        assert kernels.ready_call(*args) is None, args


def test_out_overlapping_an_input_gives_the_separate_result():
    """out = x shifted by one element overlaps x without being its elements: the general
    path computes into a new array, then copies."""
    buffer = np.random.default_rng(1).standard_normal(4 * 64 + 1).astype(np.float32)
    x = buffer[:-1].reshape(4, 64)
    shifted = buffer[1:].reshape(4, 64)
    assert kernels.ready_call(x, None, shifted, -1, True) is None
    expected = cb.softmax(x.copy())
    np.testing.assert_array_equal(cb.softmax(x, out=shifted), expected)
    x = buffer[:-1].reshape(4, 64)
    expected = cb.gelu(x.copy())
    np.testing.assert_array_equal(cb.gelu(x, out=buffer[1:].reshape(4, 64)), expected)


def _unaligned(a):
    """a's values in a C-contiguous array whose data is not aligned (the general path copies)."""
    raw = np.zeros(a.nbytes + 1, np.uint8)[1:]
    b = np.frombuffer(raw.data, a.dtype).reshape(a.shape)
    b[...] = a
    assert not b.flags.aligned
    return b


def test_lane_and_general_path_agree():
    """The same values through the lane and through the general path's aligned copy."""
    x, dy = _x((64, 48)), _x((64, 48))[::-1].copy()
    u_x, u_dy = _unaligned(x), _unaligned(dy)
    for fn, args, u_args in [(cb.softmax, (x,), (u_x,)), (cb.log_softmax, (x,), (u_x,)),
                             (cb.softmax_backward, (dy, x), (u_dy, u_x)),
                             (cb.log_softmax_backward, (dy, x), (u_dy, u_x)),
                             (cb.relu, (x,), (u_x,)), (cb.silu, (x,), (u_x,)),
                             (cb.gelu_backward, (dy, x), (u_dy, u_x))]:
        np.testing.assert_array_equal(fn(*args), fn(*u_args))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("target", ["new", "out", "in place"])
def test_masked_softmax_lane_gives_the_general_result(dtype, causal, target):
    """masked_softmax and its backward without a mask, scale a float: the lane; the same values
    unaligned (or scale an int) take the general path: the same bits, into out= and in place
    (the forward's out may be x; the backward's may be dy or y)."""
    rng = np.random.default_rng(3)
    x, dy = (rng.standard_normal((2, 3, 5, 9)).astype(dtype) for _ in range(2))
    y = cb.masked_softmax(x, causal=causal)
    for fn, args, kw in [(cb.masked_softmax, (x,), {"causal": causal, "scale": 0.25}),
                         (cb.masked_softmax_backward, (dy, y), {"scale": 0.25})]:
        general = fn(*(_unaligned(a) for a in args), **kw)
        lane_args = [a.copy() for a in args]
        if target == "new":
            lane = fn(*lane_args, **kw)
        elif target == "out":
            out = np.empty_like(x)
            lane = fn(*lane_args, **kw, out=out)
            assert lane is out
        else:
            lane = fn(*lane_args, **kw, out=lane_args[0])
            assert lane is lane_args[0]
        assert kernels.ready_call(lane_args[-1], None, None, -1, True) is not None
        assert lane.dtype == general.dtype == dtype
        np.testing.assert_array_equal(lane, general)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_lane_gives_the_general_result(reduction, dtype):
    """The usual call (int64 targets, defaults) against the same problem through the general
    path (int32 targets are converted there): the same bits, dtype and shape."""
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((37, 53)).astype(dtype)
    target = rng.integers(0, 53, 37)
    target[::5] = -100                                   # ignored rows
    lane = cb.cross_entropy(logits, target, reduction=reduction)
    general = cb.cross_entropy(logits, target.astype(np.int32), reduction=reduction)
    assert lane.dtype == general.dtype == dtype and lane.shape == general.shape == ()
    np.testing.assert_array_equal(lane, general)
    target[3] = 53                                       # out of range: the general path's error
    with pytest.raises(IndexError, match="out of range"):
        cb.cross_entropy(logits, target, reduction=reduction)


@pytest.mark.parametrize("shape, dtype", [((12288, 1024), np.float32), ((1000, 7), np.float64),
                                          ((3, 5, 700), np.float32), ((1024,), np.float32)])
def test_outputs_of_a_page_or_more_start_on_a_cache_line(shape, dtype):
    """kernels.empty (and the lane's new outputs): data on a 64-byte boundary, C-contiguous,
    writeable, owning their memory through their base; NumPy's own start 16 bytes past one."""
    a = kernels.empty(shape, dtype)
    assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    assert a.ctypes.data % 64 == 0
    a[...] = 1                                      # every byte is the array's to write
    x = np.ones(shape, dtype)
    y = cb.softmax(x, axis=-1)
    assert y.ctypes.data % 64 == 0 and y.flags.c_contiguous
    assert kernels.ready_call(x, None, None, -1, True)[0].ctypes.data % 64 == 0


@pytest.mark.parametrize("offset", [0, 16, 48, 64, 1040, 4080])
def test_new_outputs_start_at_their_inputs_offset_in_a_page(offset):
    """A new output starts where its input does in a 4 KiB page, rounded down to a line: a
    load of x[i] then never waits on an older store to y whose address has the same low 12
    bits (with y 48 bytes past x in the page, the GELU took twice as long). Without an input
    to follow, on a page boundary."""
    rows, n = 64, 256
    buffer = np.zeros(rows * n + 2048, np.float32)
    start = (-buffer.ctypes.data % 4096 + offset) // 4
    x = buffer[start: start + rows * n].reshape(rows, n)
    x[...] = np.linspace(-3, 3, x.size, dtype=np.float32).reshape(rows, n)
    w = np.ones(n, np.float32)
    _, mean, rstd = cb.layer_norm(x, w, w, return_stats=True)
    x64 = x.astype(np.float64)
    for source, y in [(x, cb.gelu(x)), (x, cb.softmax(x)), (x, cb.rms_norm(x, w)),
                      (x64, cb.softmax(x64)), (x, kernels.empty(x.shape, np.float32, x)),
                      (x, cb.layer_norm_backward(x, x, w, mean, rstd)[0])]:
        assert y.ctypes.data % 4096 == source.ctypes.data % 4096 // 64 * 64
        assert y.flags.c_contiguous
    np.testing.assert_array_equal(cb.gelu(x), cb.gelu(np.array(x)))   # wherever it starts
    assert kernels.empty((rows, n), np.float32).ctypes.data % 4096 == 0


def test_empty_takes_what_np_empty_takes():
    assert kernels.empty(5, np.float32).shape == (5,)
    assert kernels.empty((), np.float64).shape == ()
    assert kernels.empty((0, 3), np.float32).shape == (0, 3)
    with pytest.raises(ValueError):
        kernels.empty((-1, 3), np.float32)


@pytest.mark.parametrize("centered", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("return_stats", [True, False])
def test_row_norm_lanes_give_the_general_results(centered, dtype, affine, residual, return_stats):
    """layer_norm / rms_norm and their backward: ndarrays the kernels take as they are go the
    fast lane, the same values in strided views go the general path: the same bits."""
    def strided(a):
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    rng = np.random.default_rng(1)
    x, r, dy = (rng.standard_normal((5, 3, 40)).astype(dtype) for _ in range(3))
    w, b = (rng.standard_normal(40).astype(dtype) for _ in range(2))
    forward, backward = ((cb.layer_norm, cb.layer_norm_backward) if centered
                         else (cb.rms_norm, cb.rms_norm_backward))
    args = (x, w, b) if centered else (x, w)
    if not affine:
        args = (x,)
    kw = {"residual": r} if residual else {}
    lane = forward(*args, return_stats=return_stats, **kw)
    general = forward(*(strided(a) for a in args), return_stats=return_stats,
                      **{k: strided(v) for k, v in kw.items()})
    for got, want in zip(lane if isinstance(lane, tuple) else (lane,),
                         general if isinstance(general, tuple) else (general,)):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype == dtype
    _, *stats = forward(*args, return_stats=True)
    weight = w if affine else None
    lane = backward(dy, x, weight, *stats)
    general = backward(strided(dy), strided(x), None if weight is None else strided(weight),
                       *(strided(s[..., None])[..., 0] for s in stats))
    assert len(lane) == len(general)
    for got, want in zip(lane, general):
        if want is None:
            assert got is None
        else:
            np.testing.assert_array_equal(got, want)
            assert got.dtype == want.dtype
