"""Fit the polynomial of the float32 exp of the sigmoid activations (pyx/cyburn_vmath.h,
cyb_exp_nonpositive_f32).

exp(n) = 2^k exp(r) with r = n - k ln 2 in [-ln 2 / 2, ln 2 / 2]; exp(r) = 1 + r + r^2 P(r),
P of degree 4 (the whole polynomial of degree 6; the Taylor polynomial needs degree 7 for the
same accuracy). P's coefficients are near-minimax (Lawson's iteratively reweighted least
squares, as tools/fit_gelu_erf.py) for the error relative to exp(r), rounded to float32 one at a
time, lowest degree first, the others refitted after each rounding.

Only NumPy is used. `python tools/fit_exp.py` prints the coefficients and the maximum relative
error of the fit and of its float32 evaluation (with FMA), in units of 2^-24.
"""
import math

import numpy as np

DEGREE = 6
NODES = 4000
ITERATIONS = 200
HALF = math.log(2) / 2


def lawson(V, f, weight):
    """Coefficients c minimizing max |V c - f| * weight (near-minimax)."""
    u = np.full(len(f), 1.0 / len(f))
    for _ in range(ITERATIONS):
        s = np.sqrt(u) * weight
        c = np.linalg.lstsq(V * s[:, None], f * s, rcond=None)[0]
        u = u * np.abs(V @ c - f) * weight
        u = u / u.sum()
    return c


def fit():
    """float32 coefficients c[2..DEGREE] of exp(r) - 1 - r."""
    r = HALF * np.cos(np.linspace(0.0, np.pi, NODES))
    V = np.vander(r, DEGREE + 1, increasing=True)[:, 2:]
    target, weight = np.exp(r) - 1 - r, np.exp(-r)
    c = np.zeros(DEGREE - 1)
    for j in range(DEGREE - 1):
        rest = lawson(V[:, j:], target - V[:, :j] @ c[:j], weight)
        c[j] = np.float32(rest[0])
    return c


def float32_horner(c, r):
    """The kernel's evaluation: p = c6; p = p r + c_j down to c2; then p r + 1, p r + 1 (FMA:
    one rounding a step), at float32 r."""
    p = np.full(r.shape, c[-1], np.float32)
    for cj in list(c[-2::-1]) + [1.0, 1.0]:
        p = (p.astype(np.float64) * r + cj).astype(np.float32)
    return p


def main():
    c = fit()
    r = np.linspace(-HALF, HALF, 1_000_001).astype(np.float32)
    r64 = r.astype(np.float64)
    exact = np.exp(r64)
    fitted = 1 + r64 + r64 * r64 * np.polyval(c[::-1], r64)
    print(f"/* relative error: fit {np.max(np.abs(fitted / exact - 1)) / 2**-24:.3f}, "
          f"float32 evaluation {np.max(np.abs(float32_horner(c, r) / exact - 1)) / 2**-24:.3f}"
          " (units of 2^-24) */")
    for j, cj in enumerate(c, start=2):
        print(f"    c{j} = {float(np.float32(cj)):.9e}f")


if __name__ == "__main__":
    main()
