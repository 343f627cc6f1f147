# One step of AdamW (torch.optim.AdamW with amsgrad and maximize off) on one parameter, in
# place, with t = step (counting from 1), g = grad, m = exp_avg, v = exp_avg_sq:
#
#   param <- param * (1 - lr * weight_decay)                (decoupled weight decay)
#   m     <- m + (1 - beta1) (g - m)             (= beta1 m + (1 - beta1) g, as torch's lerp)
#   v     <- beta2 v + (1 - beta2) g^2
#   param <- param - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
#
# The last line is computed as  param - (step_size c2) m / (sqrt(v) + eps c2),  with
# step_size = lr / (1 - beta1^t) and c2 = sqrt(1 - beta2^t): the same quantity with one
# division per element instead of two. A vector division or square root occupies the same
# divider for several cycles, and with two divisions the update is bound by it even from
# memory (see adamw_span). The scalar factors are computed once in double and rounded to the
# parameter's type. One pass over memory: four arrays read, three written, each element
# independently, so any split between threads gives the same bits.

from libc.math cimport pow as c_pow, sqrt as c_sqrt, sqrtf as c_sqrtf


cdef inline real adamw_sqrt(real x) noexcept nogil:
    """sqrt in x's own type (a vector instruction once -fno-math-errno drops errno)."""
    if real is float:
        return c_sqrtf(x)
    else:
        return c_sqrt(x)


cdef void adamw_span(real *param, const real *grad, real *m, real *v, Py_ssize_t n,
                     real decay, real one_minus_beta1, real beta2, real one_minus_beta2,
                     real scaled_step, real scaled_eps) noexcept nogil:
    """The update above for n elements (this loop is the one that must vectorize), given
    scaled_step = step_size c2 and scaled_eps = eps c2. Its square root and division bound
    it: on the README's EPYC (Zen 3), one thread over arrays in the L3 took 0.56-0.67 ns per
    float32 element with two divisions, against 0.36-0.40 for the probe of its memory
    pattern."""
    cdef Py_ssize_t i
    cdef real g, m_new, v_new
    for i in range(n):
        g = grad[i]
        m_new = m[i] + one_minus_beta1 * (g - m[i])
        v_new = beta2 * v[i] + one_minus_beta2 * g * g
        m[i] = m_new
        v[i] = v_new
        param[i] = param[i] * decay - scaled_step * m_new / (adamw_sqrt(v_new) + scaled_eps)


cdef void adamw(real *param, const real *grad, real *m, real *v, Py_ssize_t n, double lr,
                double beta1, double beta2, double eps, double weight_decay, long long step,
                int threads) noexcept nogil:
    """adamw_span over n elements, threads taking contiguous runs of whole blocks."""
    cdef double c2 = c_sqrt(1 - c_pow(beta2, <double>step))
    cdef real decay = <real>(1 - lr * weight_decay)
    cdef real scaled_step = <real>(lr / (1 - c_pow(beta1, <double>step)) * c2)
    cdef real scaled_eps = <real>(eps * c2)
    cdef Py_ssize_t blocks = (n + ELEMENT_BLOCK - 1) // ELEMENT_BLOCK, first, last
    cdef int c
    if threads == 1:
        adamw_span(param, grad, m, v, n, decay, <real>(1 - beta1), <real>beta2,
                   <real>(1 - beta2), scaled_step, scaled_eps)
        return
    for c in prange(threads, num_threads=threads, schedule='static'):
        first = min(n, chunk_start(blocks, c, threads) * ELEMENT_BLOCK)
        last = min(n, chunk_start(blocks, c + 1, threads) * ELEMENT_BLOCK)
        adamw_span(param + first, grad + first, m + first, v + first, last - first, decay,
                   <real>(1 - beta1), <real>beta2, <real>(1 - beta2), scaled_step, scaled_eps)
    team_finished()


# ---- Python entry points ----------------------------------------------------------------------

def adamw_step(cnp.ndarray param not None, cnp.ndarray grad not None,
               cnp.ndarray exp_avg not None, cnp.ndarray exp_avg_sq not None, double lr,
               double beta1, double beta2, double eps, double weight_decay, long long step,
               int num_threads):
    """One AdamW step in place (see the formula above) on C-contiguous arrays of one size and
    float dtype that do not overlap (cyburn.optim checks that); step >= 1."""
    cdef void *data[4]
    cdef int typenum = four_operands(param, grad, exp_avg, exp_avg_sq, data)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(param)
    cdef int threads = team_size(n, (n + ELEMENT_BLOCK - 1) // ELEMENT_BLOCK, num_threads)
    if step < 1:
        raise ValueError("cyburn kernel: step must be >= 1")
    with nogil:
        if typenum == cnp.NPY_FLOAT:
            adamw(<float *>data[0], <const float *>data[1], <float *>data[2], <float *>data[3],
                  n, lr, beta1, beta2, eps, weight_decay, step, threads)
        else:
            adamw(<double *>data[0], <const double *>data[1], <double *>data[2],
                  <double *>data[3], n, lr, beta1, beta2, eps, weight_decay, step, threads)
