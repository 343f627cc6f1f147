"""Fit the polynomials of the float32 erf GELU (pyx/cyburn_vmath.h, cyb_gelu_f32).

With a = |x|, Q(a) = Phi(-a) = erfc(a / sqrt 2) / 2 and D(a) = Q(a) - a phi(a) (phi the
normal density), Phi(x) is Q(a) or 1 - Q(a) and gelu'(x) = Phi(x) + x phi(x) is D(a) or
1 - D(a), for x < 0 or x >= 0.

Pieces (float32 tables). For a < 3.5 the kernel evaluates, in float32, one polynomial of
degree 9 in t = a - (k + 1/2), that of the piece k = round(a): [0, 1/2], [1/2, 3/2],
[3/2, 5/2] or [5/2, 7/2], t in [-1, 0] (piece 0: [-1/2, 0]). Each piece is expanded about its
right end (t = 0), where Q and D are smallest: every term then has the sign of the value,
and the float32 evaluation does not cancel. Each fit is
near-minimax (Lawson's iteratively reweighted least squares) for the error relative to Q(a),
or to Q(a) + a phi(a), the scale of D's two terms (D crosses zero at a = 0.75); the
coefficients are rounded to float32 one at a time, lowest degree first, the others refitted
after each rounding.

Tail (float32). For 3.5 <= a <= 20, a Q(a) = exp(-a^2 / 2) P(1 / a^2) and
a phi(a) - Q(a) = a exp(-a^2 / 2) H(1 / a^2), H(s) = 1 / sqrt(2 pi) - s P(s): P and H are
fitted for their relative error, in the variable 16 / a^2 (in [0.04, 1.3], for a
well-conditioned fit), the coefficients then scaled by powers of 16 (exactly) and rounded to
float32 as the pieces' are.

Only NumPy and the standard library's erfc are used. `python tools/fit_gelu_erf.py` prints
the header's tables and the maximum errors.
"""
import math

import numpy as np

DEGREE = 9
PIECES = 4                      # a in [k - 1/2, k + 1/2], k = 0..3 (piece 0 from 0)
TAIL_DEGREE = 7
TAIL = (3.5, 20.0)
NODES = 2000
ITERATIONS = 150

_erfc = np.frompyfunc(math.erfc, 1, 1)


def normal_tail(a):
    """Q(a) = Phi(-a) in float64."""
    return np.asarray(_erfc(a / math.sqrt(2.0)), dtype=np.float64) / 2


def normal_pdf(a):
    return np.exp(-a * a / 2) / math.sqrt(2 * math.pi)


PIECEWISE = {  # table name: (f, the scale its error is relative to)
    "q": (normal_tail, normal_tail),
    "d": (lambda a: normal_tail(a) - a * normal_pdf(a),
          lambda a: normal_tail(a) + a * normal_pdf(a)),
}


def chebyshev_nodes(lo, hi):
    return (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.linspace(0.0, np.pi, NODES))


def lawson(V, f, weight):
    """Coefficients c minimizing max |V c - f| * weight (near-minimax)."""
    u = np.full(len(f), 1.0 / len(f))
    for _ in range(ITERATIONS):
        s = np.sqrt(u) * weight
        c = np.linalg.lstsq(V * s[:, None], f * s, rcond=None)[0]
        u = u * np.abs(V @ c - f) * weight
        u = u / u.sum()
    return c


def piece(k):
    """The interval of piece k (piece 0 is fitted on [-1/2, 1/2], as wide as the others, for a
    well-conditioned fit: Q and D are smooth through 0)."""
    return k - 0.5, k + 0.5


def fit_piece(f, scale, k):
    """float32 coefficients c[0..DEGREE] of piece k, in t = a - (k + 1/2)."""
    lo, hi = piece(k)
    t = chebyshev_nodes(lo - hi, 0.0)
    a = t + hi
    V = np.vander(t, DEGREE + 1, increasing=True)
    target, weight = f(a), 1 / scale(a)
    c = np.zeros(DEGREE + 1)
    for j in range(DEGREE + 1):
        rest = lawson(V[:, j:], target - V[:, :j] @ c[:j], weight)
        c[j] = np.float32(rest[0])
    return c


def float32_horner(c, t):
    """The kernel's evaluation (with FMA: one rounding a step) at float32 t."""
    p = np.full(t.shape, c[-1], np.float32)
    for cj in c[-2::-1]:
        p = (p.astype(np.float64) * t + cj).astype(np.float32)
    return p


def tail_p(a):
    """P(1 / a^2) = a Q(a) exp(a^2 / 2)."""
    return normal_tail(a) * a * np.exp(a * a / 2)


TAIL_FUNCTIONS = {  # name: the function of a
    "p": tail_p,
    "h": lambda a: 1 / math.sqrt(2 * math.pi) - tail_p(a) / (a * a),
}


def fit_tail(f):
    """float32 coefficients of f in s = 1 / a^2, and the maximum relative error."""
    sigma = chebyshev_nodes(16 / TAIL[1] ** 2, 16 / TAIL[0] ** 2)
    target = f(4 / np.sqrt(sigma))
    V = np.vander(sigma, TAIL_DEGREE + 1, increasing=True)
    c = np.zeros(TAIL_DEGREE + 1)
    for j in range(TAIL_DEGREE + 1):
        rest = lawson(V[:, j:], target - V[:, :j] @ c[:j], 1 / target)
        c[j] = np.float32(rest[0] * 16.0 ** j) / 16.0 ** j
    c = c * 16.0 ** np.arange(TAIL_DEGREE + 1)
    a = np.linspace(*TAIL, 200_001)
    return c, np.max(np.abs(np.polyval(c[::-1], 1 / (a * a)) / f(a) - 1))


def c_rows(values, per_line, fmt, indent):
    items = [fmt(v) for v in values]
    return (",\n" + indent).join(", ".join(items[i:i + per_line])
                                 for i in range(0, len(items), per_line))


def main():
    for name, (f, scale) in PIECEWISE.items():
        pieces = [fit_piece(f, scale, k) for k in range(PIECES)]
        errors = []
        for k, c in enumerate(pieces):
            lo, hi = piece(k)
            a = np.linspace(max(lo, 0.0), hi, 100_001).astype(np.float32)
            t = (a - np.float32(k + 0.5)).astype(np.float64)
            a64 = a.astype(np.float64)
            exact, s = f(a64), scale(a64)
            fit = np.abs(np.vander(t, DEGREE + 1, increasing=True) @ c - exact) / s
            evaluated = np.abs(float32_horner(c, t) - exact) / s
            errors.append(f"{fit.max() / 2**-24:.2f}/{evaluated.max() / 2**-24:.2f}")
        print(f"/* {name.upper()}: " + ", ".join(errors) + " */")
        print(f"static const float cyb_gelu_{name}_table[{DEGREE + 1}][{PIECES}] = {{")
        for j in range(DEGREE + 1):
            row = c_rows([c[j] for c in pieces], 4, lambda v: f"{float(np.float32(v)):.9e}f",
                         "     ")
            print(f"    {{{row}}},")
        print("};")
    for name, f in TAIL_FUNCTIONS.items():
        c, error = fit_tail(f)
        print(f"/* tail {name.upper()}: relative error {error:.2e} */")
        print(f"    float p = {float(np.float32(c[-1])):.9e}f;")
        for cj in c[-2::-1]:
            print(f"    p = p * s {'-' if cj < 0 else '+'} {abs(float(np.float32(cj))):.9e}f;")


if __name__ == "__main__":
    main()
