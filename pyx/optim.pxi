# One step of AdamW (torch.optim.AdamW with amsgrad and maximize off) on one parameter, in
# place, with t = step (counting from 1), g = grad, m = exp_avg, v = exp_avg_sq:
#
#   param <- param * (1 - lr * weight_decay)                (decoupled weight decay)
#   m     <- m + (1 - beta1) (g - m)             (= beta1 m + (1 - beta1) g, as torch's lerp)
#   v     <- beta2 v + (1 - beta2) g^2
#   param <- param - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
#
# The scalar factors are computed once in double and rounded to the parameter's type, as
# PyTorch's fused CPU kernel does. One pass over memory: four arrays read, three written,
# each element independently, so any split between threads gives the same bits.

from libc.math cimport pow as c_pow, sqrt as c_sqrt, sqrtf as c_sqrtf


cdef inline real adamw_sqrt(real x) noexcept nogil:
    """sqrt in x's own type (a vector instruction once -fno-math-errno drops errno)."""
    if real is float:
        return c_sqrtf(x)
    else:
        return c_sqrt(x)


cdef void adamw_span(real *param, const real *grad, real *m, real *v, Py_ssize_t n,
                     real decay, real one_minus_beta1, real beta2, real one_minus_beta2,
                     real step_size, real bias2_sqrt, real eps) noexcept nogil:
    """The update above for n elements (this loop is the one that must vectorize)."""
    cdef Py_ssize_t i
    cdef real g, m_new, v_new
    for i in range(n):
        g = grad[i]
        m_new = m[i] + one_minus_beta1 * (g - m[i])
        v_new = beta2 * v[i] + one_minus_beta2 * g * g
        m[i] = m_new
        v[i] = v_new
        param[i] = (param[i] * decay
                    - step_size * m_new / (adamw_sqrt(v_new) / bias2_sqrt + eps))


cdef void adamw(real *param, const real *grad, real *m, real *v, Py_ssize_t n, double lr,
                double beta1, double beta2, double eps, double weight_decay, long long step,
                int threads) noexcept nogil:
    """adamw_span over n elements, threads taking contiguous runs of whole blocks."""
    cdef real decay = <real>(1 - lr * weight_decay)
    cdef real step_size = <real>(lr / (1 - c_pow(beta1, <double>step)))
    cdef real bias2_sqrt = <real>c_sqrt(1 - c_pow(beta2, <double>step))
    cdef Py_ssize_t blocks = (n + ELEMENT_BLOCK - 1) // ELEMENT_BLOCK, first, last
    cdef int c
    if threads == 1:
        adamw_span(param, grad, m, v, n, decay, <real>(1 - beta1), <real>beta2,
                   <real>(1 - beta2), step_size, bias2_sqrt, <real>eps)
        return
    for c in prange(threads, num_threads=threads, schedule='static'):
        first = min(n, chunk_start(blocks, c, threads) * ELEMENT_BLOCK)
        last = min(n, chunk_start(blocks, c + 1, threads) * ELEMENT_BLOCK)
        adamw_span(param + first, grad + first, m + first, v + first, last - first, decay,
                   <real>(1 - beta1), <real>beta2, <real>(1 - beta2), step_size, bias2_sqrt,
                   <real>eps)
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
