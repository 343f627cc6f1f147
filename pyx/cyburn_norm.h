/*
 * cyburn_norm.h -- the sums and loops of the normalization kernels (pyx/row_norm.pxi,
 * pyx/channel_norm.pxi) beyond the general ones of cyburn_vmath.h.
 *
 * 1. Shifted sums. A set's mean is taken as c + mean(x - c), c its first element, and the
 *    backward's mean(g) as g_0 + mean(g - g_0): the deviations of a constant set are then
 *    exactly 0, so its mean is its value, it normalizes to exactly the bias, and a constant g
 *    gives dx = 0 exactly. (sum(x) / n rounds to a neighbour of the value for most values:
 *    in float32, seven 0.3s sum to 2.1000001.) The subtraction hides behind the sum's chain
 *    of additions. The rounding errors are those of a sum of the deviations: no larger than
 *    those of the values unless the first element lies far out in the set's tail, and much
 *    smaller where the mean is large against the spread (1e4 + N(0, 1)). A sum of deviations
 *    that is not finite (an infinite or NaN term, inf - inf when c is infinite, deviations
 *    beyond the range of T) is taken again without the shift by the caller.
 *
 * 2. Segment sums. Group norm of an (N, C) input cuts each row into segments of L = C / G
 *    elements, often 12 to 64. When 8 <= L <= CYB_BLOCK (cyb_norm_lane_wise), a segment's
 *    sum is taken in 16 lanes (8 when L < 16) -- lane j adds elements j, j + 16, j + 32, ...
 *    in T -- and the lanes are added as a tree: lanes j and j + 8, then j + 4, j + 2, j + 1.
 *    Adding one segment's lanes alone is a chain of shuffles, each waiting for the last: on
 *    a segment of 32, more than the rest of its work. Here the vectors are 32 bytes (V = 8
 *    floats, 4 doubles), and the tree's last steps take V segments at once, as a transpose:
 *    V vectors of lanes in, one vector of V totals out, a few shuffles per segment. The
 *    loops over a segment (the sums, the normalization, the backward's dx) take the same
 *    vectors; the last L % V elements are the segment's last V, read again, with the lanes
 *    already counted masked off (L >= V, so no vector leaves its segment).
 *
 * 3. Segment statistics. cyb_norm_segments_forward and _backward take a batch of a row's
 *    segments step by step -- every sum, then every mean, every sum of squared deviations,
 *    every rstd, then the normalization -- so that the work of different segments overlaps,
 *    and compute the statistics in T, as vectors (a row's single statistic is computed in
 *    double; 32 of them in double would cost a tenth of a row of 1024 floats in divisions
 *    and square roots). Measured on (4096, 4 L) float32 against float64: rstd within 2.6 ulp
 *    for N(0, 1) data and 4.7 for 1e4 + N(0, 1), as layer norm's rows of the same data (2.3
 *    and 4.2). The variance stays two-pass: a one-pass sum of squares of x - x_0 ran 20 %
 *    faster but lost up to log2(L) bits (80 ulp of rstd for L = 32 when x_0 is an outlier,
 *    419 for 256). A batch is 2 V segments forward and V backward: short batches read the
 *    next segments while the last ones' results are being written, which a row's statistics
 *    cannot. On the EPYC (Zen 3) of the README, a C program timing these functions against
 *    layer norm's on the same rows, (16384, 1024) float32 in 32 groups, one thread: forward
 *    with batches of 64, 16 and 8 segments 1.02x, 0.75x and 0.69x from memory, 0.89x, 0.98x
 *    and 1.12x in L1 (where the latency of a batch's statistics shows once per batch);
 *    backward about 1.13x, 1.12x and 0.94x from memory, 1.08x, 1.06x and 1.11x in L1. The
 *    rows of segments are not prefetched (see row_norm.pxi).
 *
 * 4. Constant lengths. L = 8, 12, 16, 24, 32, 48 and 64 (C / 32 for C of 256 to 2048, and C
 *    / G of GPT-2's 768 channels) are compiled as constants (CYB_NORM_WITH_CONSTANT_L): a
 *    segment's loops then unroll completely, with no counters or branches, which otherwise
 *    cost as much as the arithmetic on segments of a few vectors (in L1, L = 32 forward: 290
 *    ns per row of 1024 floats as a variable, 226 as a constant).
 *
 * Every function exists for float (_f32) and double (_f64). The segment functions use GCC's
 * or clang's vector extensions, as setup.py's compilers (GCC's flags) all have.
 */
#ifndef CYBURN_NORM_H
#define CYBURN_NORM_H

#include "cyburn_vmath.h"      /* CYB_INLINE, CYB_PRAGMA, CYB_BLOCK, CYB_BLOCKED_SUM */

/* ---- shifted sums over a span ---------------------------------------------------------- */

#define CYB_TERM_DEVIATION_(L) (L(x) - c)    /* on the loads L of CYB_BLOCKED_SUM_f32 */

#define CYB_DEFINE_NORM_SHIFTED_SUMS(T, SUFFIX)                                              \
/* sum(x - c), blocked like cyb_sum: the first pass of a shifted mean */                     \
CYB_INLINE double cyb_norm_sum_dev_##SUFFIX(const T *x, T c, ptrdiff_t n)                    \
{                                                                                            \
    double s;                                                                                \
    CYB_BLOCKED_SUM_##SUFFIX(s, n, CYB_TERM_DEVIATION_);                                     \
    return s;                                                                                \
}

CYB_DEFINE_NORM_SHIFTED_SUMS(float, f32)
CYB_DEFINE_NORM_SHIFTED_SUMS(double, f64)

/* sum(g - c) into *sum_g and sum(g * (x - m)) into *sum_gx in one pass, g = dy * w (g = dy
   when w is NULL; the loop is unswitched), blocked like cyb_sum: the two sums of a
   normalization's backward */
CYB_INLINE void cyb_norm_sums_shifted_centered_f64(const double *dy, const double *w, double c,
                                                   const double *x, double m, ptrdiff_t n,
                                                   double *sum_g, double *sum_gx)
{
    double s = 0.0, sx = 0.0;
    for (ptrdiff_t start = 0; start < n; start += CYB_BLOCK) {
        ptrdiff_t end = n - start < CYB_BLOCK ? n : start + CYB_BLOCK;
        double block = 0, block_x = 0;
        CYB_PRAGMA(omp simd reduction(+ : block, block_x))
        for (ptrdiff_t i = start; i < end; i++) {
            double g = w ? dy[i] * w[i] : dy[i];
            block += g - c;
            block_x += g * (x[i] - m);
        }
        s += block;
        sx += block_x;
    }
    *sum_g = s;
    *sum_gx = sx;
}

/* The same in float32 on whole vectors, blocked like CYB_BLOCKED_SUM_f32 with two chains per
   sum (vectors 0, 2, 4, ... of a block and 1, 3, 5, ...; the first also the last whole one
   when their count is odd): GCC's code for the loop above
   spills its lanes after every block and waits on one chain per sum (in L1 on the README's
   EPYC, Zen 3, one thread: 0.14 ns per element). */
/* g = dy * w (dy when w is NULL) at i, a vector */
CYB_INLINE cyb_vf32 cyb_norm_g_f32(const float *dy, const float *w, ptrdiff_t i)
{
    return w ? cyb_load_f32(dy + i) * cyb_load_f32(w + i) : cyb_load_f32(dy + i);
}

CYB_INLINE void cyb_norm_sums_shifted_centered_f32(const float *dy, const float *w, float c,
                                                   const float *x, float m, ptrdiff_t n,
                                                   double *sum_g, double *sum_gx)
{
    double s = 0.0, sx = 0.0;
    for (ptrdiff_t start = 0; start < n; start += CYB_BLOCK) {
        ptrdiff_t end = n - start < CYB_BLOCK ? n : start + CYB_BLOCK, i, k;
        cyb_vf32 dev[2] = {{0}, {0}}, prod[2] = {{0}, {0}}, g;
        for (i = start; i + 2 * CYB_WIDTH_F32 <= end; i += 2 * CYB_WIDTH_F32)
            for (int h = 0; h < 2; h++) {
                g = cyb_norm_g_f32(dy, w, i + h * CYB_WIDTH_F32);
                dev[h] += g - c;
                prod[h] += g * (cyb_load_f32(x + i + h * CYB_WIDTH_F32) - m);
            }
        if (i + CYB_WIDTH_F32 <= end) {
            g = cyb_norm_g_f32(dy, w, i);
            dev[0] += g - c;
            prod[0] += g * (cyb_load_f32(x + i) - m);
            i += CYB_WIDTH_F32;
        }
        if (i < end) {
            k = end - i;
            g = cyb_load_first_f32(dy + i, k);
            if (w)
                g *= cyb_load_first_f32(w + i, k);
            dev[0] += cyb_first_lanes_f32(g - c, k);
            prod[0] += cyb_first_lanes_f32(g * (cyb_load_first_f32(x + i, k) - m), k);
        }
        s += cyb_lanes_sum_f32(dev[0] + dev[1]);
        sx += cyb_lanes_sum_f32(prod[0] + prod[1]);
    }
    *sum_g = s;
    *sum_gx = sx;
}

/* ---- the segments of a row ------------------------------------------------------------- */

#if !defined(__GNUC__) && !defined(__clang__)
#error "cyburn_norm.h needs GCC's or clang's vector extensions"
#endif

#if defined(__clang__)
#define CYB_SHUFFLE(M, a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define CYB_SHUFFLE(M, a, b, ...) __builtin_shuffle(a, b, (M){__VA_ARGS__})
#endif

typedef float cyb_f32x8 __attribute__((vector_size(32)));
typedef int32_t cyb_i32x8 __attribute__((vector_size(32)));
typedef double cyb_f64x4 __attribute__((vector_size(32)));
typedef int64_t cyb_i64x4 __attribute__((vector_size(32)));

/* The rest of the tree of V segments, a[k] the V lanes of segment k (the lanes beyond V
   already added down): their totals, segment k's in lane k.
   float: p(a, b) = [a_j + a_{j+4} for j < 4, b_j + b_{j+4} for j < 4], then lanes j and
   j + 2 of each half of two p's, then lanes j and j + 1; segment k lands in lane k when the
   p's take segments (0, 4), (1, 5), (2, 6), (3, 7). */
CYB_INLINE cyb_f32x8 cyb_norm_segment_totals_f32(const cyb_f32x8 *a)
{
#define CYB_P(x, y) (CYB_SHUFFLE(cyb_i32x8, x, y, 0, 1, 2, 3, 8, 9, 10, 11)                  \
                     + CYB_SHUFFLE(cyb_i32x8, x, y, 4, 5, 6, 7, 12, 13, 14, 15))
#define CYB_Q(x, y) (CYB_SHUFFLE(cyb_i32x8, x, y, 0, 1, 8, 9, 4, 5, 12, 13)                  \
                     + CYB_SHUFFLE(cyb_i32x8, x, y, 2, 3, 10, 11, 6, 7, 14, 15))
    cyb_f32x8 q0 = CYB_Q(CYB_P(a[0], a[4]), CYB_P(a[1], a[5]));
    cyb_f32x8 q1 = CYB_Q(CYB_P(a[2], a[6]), CYB_P(a[3], a[7]));
#undef CYB_P
#undef CYB_Q
    return CYB_SHUFFLE(cyb_i32x8, q0, q1, 0, 2, 8, 10, 4, 6, 12, 14)
           + CYB_SHUFFLE(cyb_i32x8, q0, q1, 1, 3, 9, 11, 5, 7, 13, 15);
}

/* double: p(a, b) = [a_j + a_{j+2} for j < 2, b_j + b_{j+2} for j < 2], then lanes j and
   j + 1 of two p's. */
CYB_INLINE cyb_f64x4 cyb_norm_segment_totals_f64(const cyb_f64x4 *a)
{
#define CYB_P(x, y) (CYB_SHUFFLE(cyb_i64x4, x, y, 0, 1, 4, 5)                                \
                     + CYB_SHUFFLE(cyb_i64x4, x, y, 2, 3, 6, 7))
    cyb_f64x4 p0 = CYB_P(a[0], a[1]), p1 = CYB_P(a[2], a[3]);
#undef CYB_P
    return CYB_SHUFFLE(cyb_i64x4, p0, p1, 0, 2, 4, 6)
           + CYB_SHUFFLE(cyb_i64x4, p0, p1, 1, 3, 5, 7);
}

/* The sums over segments: SUM_DEV sum(x - x[0]), SUM_SQ_DEV sum((x - m)^2), and
   SUMS_CENTERED sum(g - g[0]) and sum(g * (x - m)) with g = dy * w (g[0] rounded to T). */
enum { CYB_SUM_DEV, CYB_SUM_SQ_DEV, CYB_SUMS_CENTERED };

/* A segment is lane-wise when 8 <= L <= CYB_BLOCK: summed in 16 lanes when L >= 16,
   otherwise 8 (see 2.). */
CYB_INLINE int cyb_norm_lane_wise(ptrdiff_t L)
{
    return L >= 8 && L <= CYB_BLOCK;
}

/* the integers of a float's size */
#define CYB_INT_OF_f32 int32_t
#define CYB_INT_OF_f64 int64_t

/* f(L, ...), with L a compile-time constant when it is one of the common lengths (see 4.) */
#define CYB_NORM_WITH_CONSTANT_L(f, L, ...)                                                  \
    switch (L) {                                                                             \
    case 8: f(8, __VA_ARGS__); break;                                                        \
    case 12: f(12, __VA_ARGS__); break;                                                      \
    case 16: f(16, __VA_ARGS__); break;                                                      \
    case 24: f(24, __VA_ARGS__); break;                                                      \
    case 32: f(32, __VA_ARGS__); break;                                                      \
    case 48: f(48, __VA_ARGS__); break;                                                      \
    case 64: f(64, __VA_ARGS__); break;                                                      \
    default: f(L, __VA_ARGS__);                                                              \
    }

#define CYB_DEFINE_NORM_SEGMENTS(T, SUFFIX, VT, IT, IOTA, SQRT)                              \
enum { CYB_V_##SUFFIX = sizeof(VT) / sizeof(T) };                                            \
CYB_INLINE VT cyb_norm_load_##SUFFIX(const T *p)                                             \
{                                                                                            \
    VT v;                                                                                    \
    memcpy(&v, p, sizeof v);                                                                 \
    return v;                                                                                \
}                                                                                            \
/* The lanes of a span's last vector that the vectors before it have not covered, when the   \
   span's last `rest` (0 < rest < V) elements are taken as the vector of its last V: all     \
   lanes (-1) when rest = V */                                                               \
CYB_INLINE IT cyb_norm_new_lanes_##SUFFIX(ptrdiff_t rest)                                    \
{                                                                                            \
    return (IT)(IOTA >= (int)(CYB_V_##SUFFIX - rest));                                       \
}                                                                                            \
/* v where keep is all ones (-1), 0 where it is 0 */                                         \
CYB_INLINE VT cyb_norm_keep_##SUFFIX(VT v, IT keep)                                          \
{                                                                                            \
    return (VT)((IT)v & keep);                                                               \
}                                                                                            \
/* Adds the `kind` terms of the V elements at e (those of the `keep` lanes) to *s and *sx, c \
   being x[0] (SUM_DEV), m (SUM_SQ_DEV) or g[0] (SUMS_CENTERED) */                           \
CYB_INLINE void cyb_norm_add_terms_##SUFFIX(int kind, const T *dy, const T *w, const T *x,   \
                                           T c, T m, ptrdiff_t e, IT keep, VT *s, VT *sx)    \
{                                                                                            \
    if (kind == CYB_SUMS_CENTERED) {                                                         \
        VT g = cyb_norm_load_##SUFFIX(dy + e) * cyb_norm_load_##SUFFIX(w + e);               \
        *s += cyb_norm_keep_##SUFFIX(g - c, keep);                                           \
        *sx += cyb_norm_keep_##SUFFIX(g * (cyb_norm_load_##SUFFIX(x + e) - m), keep);        \
    } else {                                                                                 \
        VT d = cyb_norm_load_##SUFFIX(x + e) - c;                                            \
        *s += cyb_norm_keep_##SUFFIX(kind == CYB_SUM_DEV ? d : d * d, keep);                 \
    }                                                                                        \
}                                                                                            \
/* The `kind` sums of one segment of L >= V elements in `lanes` lanes (lanes / V vectors):   \
   the elements past the last whole step of `lanes` a vector at a time, and the last L % V   \
   as the segment's last vector with its new lanes kept; added down to V lanes (vectors j    \
   and j + h, h = lanes / 2V, ..., 1): the first sum's returned, the second's                \
   (SUMS_CENTERED) stored in *ax */                                                          \
CYB_INLINE VT cyb_norm_segment_lanes_##SUFFIX(int kind, int lanes, const T *dy, const T *w,  \
                                             const T *x, T m, ptrdiff_t L, VT *ax)           \
{                                                                                            \
    const IT all = cyb_norm_new_lanes_##SUFFIX(CYB_V_##SUFFIX);                              \
    VT s[16 / CYB_V_##SUFFIX], sx[16 / CYB_V_##SUFFIX];                                      \
    T c = kind == CYB_SUMS_CENTERED ? dy[0] * w[0] : kind == CYB_SUM_DEV ? x[0] : m;         \
    ptrdiff_t i = 0;                                                                         \
    for (int j = 0; j < lanes / CYB_V_##SUFFIX; j++)                                         \
        s[j] = sx[j] = (VT){0};                                                              \
    for (; i + lanes <= L; i += lanes)                                                       \
        for (int j = 0; j < lanes / CYB_V_##SUFFIX; j++)                                     \
            cyb_norm_add_terms_##SUFFIX(kind, dy, w, x, c, m, i + j * CYB_V_##SUFFIX, all,   \
                                        &s[j], &sx[j]);                                      \
    for (int j = 0; j < lanes / CYB_V_##SUFFIX - 1; j++)  /* fewer than `lanes` remain */    \
        if (i + CYB_V_##SUFFIX <= L) {                                                       \
            cyb_norm_add_terms_##SUFFIX(kind, dy, w, x, c, m, i, all, &s[j], &sx[j]);        \
            i += CYB_V_##SUFFIX;                                                             \
        }                                                                                    \
    if (i < L)                                                                               \
        cyb_norm_add_terms_##SUFFIX(kind, dy, w, x, c, m, L - CYB_V_##SUFFIX,                \
                                    cyb_norm_new_lanes_##SUFFIX(L - i), &s[0], &sx[0]);      \
    for (int h = lanes / CYB_V_##SUFFIX / 2; h >= 1; h /= 2)                                 \
        for (int j = 0; j < h; j++) {                                                        \
            s[j] += s[j + h];                                                                \
            sx[j] += sx[j + h];                                                              \
        }                                                                                    \
    *ax = sx[0];                                                                             \
    return s[0];                                                                             \
}                                                                                            \
/* The `kind` sums of n <= V segments of L elements (cyb_norm_lane_wise(L)), segment k at    \
   offset k L of dy, w and x, with m[k] (SUM_SQ_DEV, SUMS_CENTERED), in T: segment k's in    \
   lane k of the vector returned (0 in lanes n to V - 1), the second sum (SUMS_CENTERED)     \
   in *total_x */                                                                            \
CYB_INLINE VT cyb_norm_segment_sums_##SUFFIX(int kind, const T *dy, const T *w, const T *x,  \
                                            const T *m, ptrdiff_t L, ptrdiff_t n,            \
                                            VT *total_x)                                     \
{                                                                                            \
    VT a[CYB_V_##SUFFIX], ax[CYB_V_##SUFFIX];                                                \
    for (ptrdiff_t k = 0; k < CYB_V_##SUFFIX; k++) {                                         \
        ptrdiff_t at = k * L;                                                                \
        T mk = kind == CYB_SUM_DEV || k >= n ? 0 : m[k];                                     \
        if (k < n && L >= 16)           /* (a constant `lanes`: the loops unroll) */         \
            a[k] = cyb_norm_segment_lanes_##SUFFIX(kind, 16, dy + at, w + at, x + at, mk, L, \
                                                  &ax[k]);                                   \
        else if (k < n)                                                                      \
            a[k] = cyb_norm_segment_lanes_##SUFFIX(kind, 8, dy + at, w + at, x + at, mk, L,  \
                                                  &ax[k]);                                   \
        else                                                                                 \
            a[k] = ax[k] = (VT){0};                                                          \
    }                                                                                        \
    if (kind == CYB_SUMS_CENTERED)                                                           \
        *total_x = cyb_norm_segment_totals_##SUFFIX(ax);                                     \
    return cyb_norm_segment_totals_##SUFFIX(a);                                              \
}                                                                                            \
/* Whether every lane of t is finite: t * 0 is +-0 in those lanes, NaN in the others, and    \
   the bits of +-0 but the sign are 0 */                                                     \
CYB_INLINE int cyb_norm_all_finite_##SUFFIX(VT t)                                            \
{                                                                                            \
    IT bits = (IT)(t * 0) << 1;                                                              \
    CYB_INT_OF_##SUFFIX lanes[CYB_V_##SUFFIX], found = 0;                                    \
    memcpy(lanes, &bits, sizeof lanes);                                                      \
    for (int k = 0; k < CYB_V_##SUFFIX; k++)                                                 \
        found |= lanes[k];                                                                   \
    return found == 0;                                                                       \
}                                                                                            \
/* (x - m) * r * w + b for the V elements of x and those at w and b */                       \
CYB_INLINE VT cyb_norm_affine_##SUFFIX(VT x, T m, T r, const T *w, const T *b)               \
{                                                                                            \
    return (x - m) * r * cyb_norm_load_##SUFFIX(w) + cyb_norm_load_##SUFFIX(b);              \
}                                                                                            \
/* Layer norm of each of `count` segments x_k = x[k L : (k + 1) L] (cyb_norm_lane_wise(L)):  \
       y_k = (x_k - m_k) * r_k * w_k + b_k,  m_k = x_k[0] + sum(x_k - x_k[0]) / L            \
       (sum(x_k) / L when that sum is not finite),                                           \
       r_k = 1 / sqrt(sum((x_k - m_k)^2) / L + eps)                                          \
   with w_k, b_k and y_k at the same offsets, the statistics in T, for a batch of B = 2 V    \
   segments, then the batch normalized (see 3. above); m_k and r_k stored into mean[k] and   \
   rstd[k] when those are not NULL. A segment's last L % V elements are normalized as its    \
   last vector (its other lanes again, the same values), whose x is read before any of the   \
   segment is stored. */                                                                     \
CYB_INLINE void cyb_norm_segments_forward_L_##SUFFIX(ptrdiff_t L, const T *x, const T *w,    \
                                                    const T *b, T *y, ptrdiff_t count,       \
                                                    double eps, T *mean, T *rstd)            \
{                                                                                            \
    enum { V = CYB_V_##SUFFIX, B = 2 * V };                                                  \
    for (ptrdiff_t first = 0; first < count; first += B) {                                   \
        ptrdiff_t n = count - first < B ? count - first : B;                                 \
        const T *xs = x + first * L;                                                         \
        T sums[B], m[B], r[B];                                                               \
        int finite = 1;                                                                      \
        for (ptrdiff_t k = 0; k < B; k += V) {          /* n - k <= 0: zeros */              \
            VT t = cyb_norm_segment_sums_##SUFFIX(CYB_SUM_DEV, NULL, NULL, xs + k * L, NULL, \
                                                 L, n - k, NULL);                            \
            finite &= cyb_norm_all_finite_##SUFFIX(t);                                       \
            memcpy(sums + k, &t, sizeof t);                                                  \
        }                                                                                    \
        for (ptrdiff_t k = 0; k < B; k++)               /* lanes n to B - 1: unused */       \
            m[k] = xs[(k < n ? k : 0) * L] + sums[k] / (T)L;                                 \
        if (!finite)                                                                         \
            for (ptrdiff_t k = 0; k < n; k++)                                                \
                if (!isfinite(sums[k]))                                                      \
                    m[k] = (T)(cyb_sum_##SUFFIX(xs + k * L, L) / (double)L);                 \
        for (ptrdiff_t k = 0; k < B; k += V) {                                               \
            VT t = cyb_norm_segment_sums_##SUFFIX(CYB_SUM_SQ_DEV, NULL, NULL, xs + k * L,    \
                                                 m + k, L, n - k, NULL);                     \
            memcpy(sums + k, &t, sizeof t);                                                  \
        }                                                                                    \
        for (ptrdiff_t k = 0; k < B; k++)                                                    \
            r[k] = 1 / SQRT(sums[k] / (T)L + (T)eps);                                        \
        for (ptrdiff_t k = 0; k < n; k++) {                                                  \
            ptrdiff_t at = (first + k) * L, last = at + L - V, i = at;                       \
            VT tail = cyb_norm_load_##SUFFIX(x + last), v;                                   \
            for (; i + V <= at + L; i += V) {                                                \
                VT xi = cyb_norm_load_##SUFFIX(x + i);                                       \
                v = cyb_norm_affine_##SUFFIX(xi, m[k], r[k], w + i, b + i);                  \
                memcpy(y + i, &v, sizeof v);                                                 \
            }                                                                                \
            if (i < at + L) {                                                                \
                v = cyb_norm_affine_##SUFFIX(tail, m[k], r[k], w + last, b + last);          \
                memcpy(y + last, &v, sizeof v);                                              \
            }                                                                                \
        }                                                                                    \
        if (mean != NULL)                                                                    \
            for (ptrdiff_t k = 0; k < n; k++) {                                              \
                mean[first + k] = m[k];                                                      \
                rstd[first + k] = r[k];                                                      \
            }                                                                                \
    }                                                                                        \
}                                                                                            \
/* The backward of a normalization at the V elements at i, the `keep` lanes' terms added to  \
   dweight and dbias: dweight += dy * ((x - m) * r), dbias += dy,                            \
   dx = r * (dy * w - g_mean - (x - m) * q) */                                               \
CYB_INLINE void cyb_norm_backward_vector_##SUFFIX(const T *dy, const T *x, const T *w, T m,  \
                                                 T r, T g_mean, T q, T *dx, T *dweight,      \
                                                 T *dbias, ptrdiff_t i, IT keep)             \
{                                                                                            \
    VT d = cyb_norm_load_##SUFFIX(dy + i), c = cyb_norm_load_##SUFFIX(x + i) - m;            \
    VT v = cyb_norm_load_##SUFFIX(dweight + i) + cyb_norm_keep_##SUFFIX(d * (c * r), keep);  \
    memcpy(dweight + i, &v, sizeof v);                                                       \
    v = cyb_norm_load_##SUFFIX(dbias + i) + cyb_norm_keep_##SUFFIX(d, keep);                 \
    memcpy(dbias + i, &v, sizeof v);                                                         \
    v = r * (d * cyb_norm_load_##SUFFIX(w + i) - g_mean - c * q);                            \
    memcpy(dx + i, &v, sizeof v);                                                            \
}                                                                                            \
/* A normalization's backward over [0:n] in one pass (cyb_norm_backward_vector), V elements  \
   at a time, the last n % V as the last vector with its new lanes kept (its other lanes' dx \
   stored again, the same values); one by one when n < V. dx must not overlap dy or x. */    \
CYB_INLINE void cyb_norm_backward_span_##SUFFIX(const T *dy, const T *x, const T *w, T m,    \
                                               T r, T g_mean, T q, T *dx, T *dweight,        \
                                               T *dbias, ptrdiff_t n)                        \
{                                                                                            \
    ptrdiff_t i = 0;                                                                         \
    if (n < CYB_V_##SUFFIX) {                                                                \
        for (; i < n; i++) {                                                                 \
            T c = x[i] - m;                                                                  \
            dweight[i] += dy[i] * (c * r);                                                   \
            dbias[i] += dy[i];                                                               \
            dx[i] = r * (dy[i] * w[i] - g_mean - c * q);                                     \
        }                                                                                    \
        return;                                                                              \
    }                                                                                        \
    for (; i + CYB_V_##SUFFIX <= n; i += CYB_V_##SUFFIX)                                     \
        cyb_norm_backward_vector_##SUFFIX(dy, x, w, m, r, g_mean, q, dx, dweight, dbias, i,  \
                                          cyb_norm_new_lanes_##SUFFIX(CYB_V_##SUFFIX));      \
    if (i < n)                                                                               \
        cyb_norm_backward_vector_##SUFFIX(dy, x, w, m, r, g_mean, q, dx, dweight, dbias,     \
                                          n - CYB_V_##SUFFIX,                                \
                                          cyb_norm_new_lanes_##SUFFIX(n - i));               \
}                                                                                            \
/* The backward of cyb_norm_segments_forward, with xhat = (x_k - mean[k]) * rstd[k] and      \
   g = dy * w:  dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dweight += dy * xhat,    \
   dbias += dy, where mean(g) = g_0 + mean(g - g_0) (the mean of products, dot(dy, w) / L,   \
   when that sum is not finite) and xhat * mean(g * xhat) = (x - m) * q; the means in T, V   \
   segments at a time, as in the forward. */                                                 \
CYB_INLINE void cyb_norm_segments_backward_L_##SUFFIX(ptrdiff_t L, const T *dy, const T *x,  \
                                                     const T *w, const T *mean,              \
                                                     const T *rstd, T *dx, T *dweight,       \
                                                     T *dbias, ptrdiff_t count)              \
{                                                                                            \
    for (ptrdiff_t first = 0; first < count; first += CYB_V_##SUFFIX) {                      \
        ptrdiff_t n = count - first < CYB_V_##SUFFIX ? count - first : CYB_V_##SUFFIX;       \
        ptrdiff_t at = first * L;                                                            \
        T sum_g[CYB_V_##SUFFIX], sum_gx[CYB_V_##SUFFIX], g_mean[CYB_V_##SUFFIX],             \
          q[CYB_V_##SUFFIX];                                                                 \
        VT t_gx, t_g = cyb_norm_segment_sums_##SUFFIX(CYB_SUMS_CENTERED, dy + at, w + at,    \
                                                      x + at, mean + first, L, n, &t_gx);    \
        memcpy(sum_g, &t_g, sizeof t_g);                                                     \
        memcpy(sum_gx, &t_gx, sizeof t_gx);                                                  \
        for (ptrdiff_t k = 0; k < CYB_V_##SUFFIX; k++) {    /* lanes n to V - 1: unused */   \
            ptrdiff_t j = k < n ? k : 0, i = at + j * L;                                     \
            T r = rstd[first + j];                                                           \
            g_mean[k] = dy[i] * w[i] + sum_g[k] / (T)L;                                      \
            q[k] = sum_gx[k] / (T)L * r * r;                                                 \
        }                                                                                    \
        if (!cyb_norm_all_finite_##SUFFIX(t_g))                                              \
            for (ptrdiff_t k = 0; k < n; k++)                                                \
                if (!isfinite(sum_g[k]))                                                     \
                    g_mean[k] = (T)(cyb_dot_##SUFFIX(dy + at + k * L, w + at + k * L, L)     \
                                    / (double)L);                                            \
        for (ptrdiff_t k = 0; k < n; k++) {                                                  \
            ptrdiff_t i = at + k * L;                                                        \
            cyb_norm_backward_span_##SUFFIX(dy + i, x + i, w + i, mean[first + k],           \
                                           rstd[first + k], g_mean[k], q[k], dx + i,         \
                                           dweight + i, dbias + i, L);                       \
        }                                                                                    \
    }                                                                                        \
}                                                                                            \
/* The two above for any lane-wise L, the common lengths compiled as constants (see 4.) */   \
CYB_INLINE void cyb_norm_segments_forward_##SUFFIX(const T *x, const T *w, const T *b, T *y, \
                                                  ptrdiff_t L, ptrdiff_t count, double eps,  \
                                                  T *mean, T *rstd)                          \
{                                                                                            \
    CYB_NORM_WITH_CONSTANT_L(cyb_norm_segments_forward_L_##SUFFIX, L,                        \
                             x, w, b, y, count, eps, mean, rstd);                            \
}                                                                                            \
CYB_INLINE void cyb_norm_segments_backward_##SUFFIX(const T *dy, const T *x, const T *w,     \
                                                   const T *mean, const T *rstd, T *dx,      \
                                                   T *dweight, T *dbias, ptrdiff_t L,        \
                                                   ptrdiff_t count)                          \
{                                                                                            \
    CYB_NORM_WITH_CONSTANT_L(cyb_norm_segments_backward_L_##SUFFIX, L,                       \
                             dy, x, w, mean, rstd, dx, dweight, dbias, count);               \
}

CYB_DEFINE_NORM_SEGMENTS(float, f32, cyb_f32x8, cyb_i32x8, ((cyb_i32x8){0, 1, 2, 3, 4, 5, 6, 7}),
                         sqrtf)
CYB_DEFINE_NORM_SEGMENTS(double, f64, cyb_f64x4, cyb_i64x4, ((cyb_i64x4){0, 1, 2, 3}), sqrt)

#endif /* CYBURN_NORM_H */
