/* The CPU solver's Gram-Schmidt and the two halves of a Golub-Kahan step for one matrix, in C.
 *
 * A step of the recurrence on the host is two products and, beside them, the reorthogonalization
 * and the small matrices' bookkeeping: about twenty numpy and BLAS calls of 0.5-3 us each, which
 * took longer than the products at 384x384. Here each half step is one call. The Python twins of
 * these functions (riemsvd/_subspace.py: _gk_left_py, _gk_right_py, _orth_py) serve where this
 * module was not built, and the tests compare the two. For a dense A of more than 1 MiB, gk_fused
 * makes a step's two products in one pass over A, on threads of its own (below); it has no twin:
 * without this module the steps take the two products.
 *
 * Arrays come through the buffer protocol (no numpy headers): vectors are columns of column-major
 * float32 or float64 buffers, the small matrices H and C row-major float64. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define DGKS 0.70710678118654752440 /* 1/sqrt(2): _tolerance.DGKS */
#define LOST (-1.0)
/* sums of squares outside this range may have lost digits to underflow or overflow */
#define SAFE_LOW 1e-280
#define SAFE_HIGH 1e280

/* The loops over vectors in AVX2 with FMA (x86-64-v3) where the CPU has them, else AVX2, else the
 * baseline instruction set (the choice made at load time); their sums may be reassociated (setup.py's
 * flags), as BLAS's are. GCC's "avx2" target alone has no FMA: a multiply and an add per term made
 * the one pass over A 1.02-1.12x the time (GCC 12; x86-64-v4's 512-bit vectors gained nothing more). */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && defined(__GLIBC__) /* ifunc: glibc's */
#if __GNUC__ >= 12 /* the ISA levels as targets of a clone */
#define VECTORIZED __attribute__((target_clones("arch=x86-64-v3", "avx2", "default")))
#else
#define VECTORIZED __attribute__((target_clones("avx2", "default")))
#endif
#else
#define VECTORIZED
#endif

/* max_abs's one pass in AVX2 intrinsics where the CPU has them (the choice made at import), with
 * VEC the vector type and SIMD(op) the intrinsic _mm256_op_pd or _ps of each dtype's include. */
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define MAX_ABS_AVX2
static int avx2; /* whether this CPU has AVX2: set at import */
#endif

#define T double
#define NAME(x) x##_d
#define VEC __m256d
#define SIMD(op) _mm256_##op##_pd
#include "_steps_impl.h"
#undef T
#undef NAME
#undef VEC
#undef SIMD
#define T float
#define NAME(x) x##_s
#define VEC __m256
#define SIMD(op) _mm256_##op##_ps
#include "_steps_impl.h"
#undef T
#undef NAME
#undef VEC
#undef SIMD

/* A buffer seen as a matrix: rows x cols, element (i, j) at data + (i * rs + j * cs) elements. */
typedef struct {
    Py_buffer view;
    char kind; /* 'd' or 'f' */
    Py_ssize_t rows, cols, rs, cs;
} Array;

/* obj's buffer, asked writable unless the kernel only reads it (a basis in orth, its known part) */
static int take_as(PyObject *obj, Array *a, const char *what, int writable)
{
    if (PyObject_GetBuffer(obj, &a->view, PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    Py_buffer *v = &a->view;
    const char *f = v->format ? v->format : "B";
    const int probe = 1;
    const char native = *(const char *)&probe ? '<' : '>'; /* this machine's byte order */
    if (*f == native || *f == '=' || *f == '@')
        f++;
    a->kind = f[0];
    int ok = f[1] == '\0' && ((a->kind == 'd' && v->itemsize == 8) || (a->kind == 'f' && v->itemsize == 4)) &&
             (v->ndim == 1 || v->ndim == 2);
    if (ok) {
        a->rows = v->shape[0];
        a->cols = v->ndim == 2 ? v->shape[1] : 1;
        a->rs = v->strides[0] / v->itemsize;
        a->cs = v->ndim == 2 ? v->strides[1] / v->itemsize : 0;
        ok = v->strides[0] % v->itemsize == 0 && (v->ndim == 1 || v->strides[1] % v->itemsize == 0);
    }
    if (!ok) {
        PyBuffer_Release(v);
        PyErr_Format(PyExc_TypeError, "riemsvd._steps: %s must be a 1-D or 2-D float32 or float64 array",
                     what);
        return -1;
    }
    return 0;
}

/* column-major with contiguous columns, of the given element kind */
static int columns(const Array *a, char kind, const char *what)
{
    if (a->kind != kind || (a->rs != 1 && a->rows > 1)) {
        PyErr_Format(PyExc_TypeError, "riemsvd._steps: %s must have contiguous columns of the basis dtype", what);
        return -1;
    }
    return 0;
}

/* row-major float64 with contiguous rows (H, C: indexed with their row stride) */
static int rows_f64(const Array *a, const char *what)
{
    if (a->kind != 'd' || a->view.ndim != 2 || (a->cs != 1 && a->cols > 1)) {
        PyErr_Format(PyExc_TypeError, "riemsvd._steps: %s must be a 2-D float64 array with contiguous rows", what);
        return -1;
    }
    return 0;
}

/* a contiguous 1-D float64 vector (read or written as rows consecutive doubles) */
static int vector_f64(const Array *a, const char *what)
{
    if (a->kind != 'd' || a->view.ndim != 1 || (a->rs != 1 && a->rows > 1)) {
        PyErr_Format(PyExc_TypeError, "riemsvd._steps: %s must be a contiguous 1-D float64 array", what);
        return -1;
    }
    return 0;
}

/* whether the buffer is aligned to its element size, as reading it as floats or doubles needs
 * (numpy's and torch's are); else a TypeError naming it */
static int aligned(const Array *a, const char *what)
{
    if ((uintptr_t)a->view.buf % (uintptr_t)a->view.itemsize) {
        PyErr_Format(PyExc_TypeError, "riemsvd._steps: %s must be aligned to its element size", what);
        return -1;
    }
    return 0;
}

static PyObject *out_of_range(const char *what)
{
    PyErr_Format(PyExc_ValueError, "riemsvd._steps: %s out of the buffers' range", what);
    return NULL;
}

static void release(Array *arrays, int n)
{
    for (int i = 0; i < n; i++)
        PyBuffer_Release(&arrays[i].view);
}

/* Takes the buffers of objs[from:n] into arrays[from:n], writable where bit i of `written` is set;
 * on a failure releases those taken and returns -1. */
static int take_all(PyObject **objs, Array *arrays, const char **names, int from, int n, unsigned written)
{
    for (int i = from; i < n; i++)
        if (take_as(objs[i], &arrays[i], names[i], (written >> i) & 1u) < 0) {
            release(arrays + from, i - from);
            return -1;
        }
    return 0;
}

/* orth_d or orth_s by the vectors' kind, on untyped pointers */
static double orth_kind(char kind, const void *B, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t q, void *x,
                        Py_ssize_t j, const double *known, Py_ssize_t nk, int subtracted, double *coef,
                        double *again, double eps)
{
    return kind == 'd' ? orth_d((const double *)B, ld, rows, q, (double *)x, j, known, nk, subtracted, coef, again, eps)
                       : orth_s((const float *)B, ld, rows, q, (float *)x, j, known, nk, subtracted, coef, again,
                                eps);
}

/* the start of column `col` of a column-major buffer */
static char *column(const Array *a, Py_ssize_t col)
{
    return (char *)a->view.buf + (size_t)(col * a->cs) * (size_t)a->view.itemsize;
}

/* H's new row pu (zero but for alpha at pv) and column pv (coef, pu entries) after a left half step;
 * H row-major float64 */
static void write_h(const Array *h, Py_ssize_t pu, Py_ssize_t pv, const double *coef, double alpha)
{
    double *hb = (double *)h->view.buf;
    Py_ssize_t ld = h->rs;
    for (Py_ssize_t t = 0; t < pv; t++)
        hb[pu * ld + t] = 0.0;
    for (Py_ssize_t t = 0; t < pu; t++)
        hb[t * ld + pv] = coef[t];
    hb[pu * ld + pv] = alpha;
}

/* where the coefficients a left half takes as known begin: C's first row (pu entries) from its first
 * nonzero on (the last one alone in the recurrence, all of them after a restart) */
static Py_ssize_t first_known(const double *crow, Py_ssize_t pu)
{
    Py_ssize_t j = 0;
    while (j < pu && crow[j] == 0.0)
        j++;
    return j;
}

/* gk_left's work on taken arrays, coef room for 2 (pu + 1) doubles; returns alpha or -1 */
static double left_half(const Array *u, const Array *av, const Array *h, const Array *c, Py_ssize_t pu, Py_ssize_t pv,
                        double eps, double *coef)
{
    const double *crow = (const double *)c->view.buf;
    Py_ssize_t j = first_known(crow, pu);
    char *x = column(u, pu);
    memcpy(column(av, pv), x, (size_t)u->rows * (size_t)u->view.itemsize);
    double alpha =
        orth_kind(u->kind, u->view.buf, u->cs, u->rows, pu, x, j, crow + j, pu - j, 0, coef, coef + pu + 1, eps);
    if (alpha >= 0)
        write_h(h, pu, pv, coef, alpha);
    return alpha;
}

/* gk_left(ubuf, avbuf, h, c, pu, pv, eps) -> alpha: after A f was written into ubuf[:, pu], a copy of
 * it into avbuf[:, pv]; then less its parts along ubuf[:, :pu] (those of C's first row from its first
 * nonzero on taken as known) and normalized; H's new row pu (zero but for alpha) and column pv. Returns
 * alpha, the norm left, or -1 where the product held only rounding noise (nothing written to H). */
static PyObject *gk_left(PyObject *self, PyObject *args)
{
    PyObject *o[4];
    Py_ssize_t pu, pv;
    double eps, alpha = LOST;
    if (!PyArg_ParseTuple(args, "OOOOnnd", &o[0], &o[1], &o[2], &o[3], &pu, &pv, &eps))
        return NULL;
    Array a[4];
    const char *names[4] = {"ubuf", "avbuf", "h", "c"};
    if (take_all(o, a, names, 0, 4, 0xFu) < 0)
        return NULL;
    Array *u = &a[0], *av = &a[1], *h = &a[2], *c = &a[3];
    if (columns(u, u->kind, "ubuf") < 0 || columns(av, u->kind, "avbuf") < 0 || rows_f64(h, "h") < 0 ||
        rows_f64(c, "c") < 0)
        goto fail;
    if (pu < 0 || pv < 0 || pu >= u->cols || pv >= av->cols || av->rows != u->rows || pu >= h->rows ||
        pv >= h->cols || pu > c->cols || c->rows < 1) {
        release(a, 4);
        return out_of_range("pu or pv");
    }
    double *coef = PyMem_Malloc(2 * (size_t)(pu + 1) * sizeof(double));
    if (!coef) {
        PyErr_NoMemory();
        goto fail;
    }
    alpha = left_half(u, av, h, c, pu, pv, eps, coef);
    PyMem_Free(coef);
    release(a, 4);
    return PyFloat_FromDouble(alpha);
fail:
    release(a, 4);
    return NULL;
}

/* gk_right's work on taken arrays, coef room for 2 (pv + w + 1) doubles; returns beta or -1 */
static double right_half(const Array *v, const Array *atu, const Array *c, Py_ssize_t pu, Py_ssize_t pv, Py_ssize_t w,
                         double alpha, double eps, double *coef)
{
    Py_ssize_t q = pv + w;
    char *y = column(v, q);
    memcpy(column(atu, pu), y, (size_t)v->rows * (size_t)v->view.itemsize);
    double beta = orth_kind(v->kind, v->view.buf, v->cs, v->rows, q, y, pv, &alpha, 1, 0, coef, coef + q + 1, eps);
    if (beta >= 0) {
        double *cb = (double *)c->view.buf;
        Py_ssize_t ld = c->rs;
        for (Py_ssize_t r = 0; r + 1 < w; r++) {
            memmove(cb + r * ld, cb + (r + 1) * ld, (size_t)pu * sizeof(double));
            cb[r * ld + pu] = coef[pv + 1 + r];
        }
        for (Py_ssize_t t = 0; t < pu; t++)
            cb[(w - 1) * ld + t] = 0.0;
        cb[(w - 1) * ld + pu] = beta;
    }
    return beta;
}

/* gk_right(vbuf, atubuf, c, pu, pv, w, alpha, eps) -> beta: after A^T of U's new column was written
 * into vbuf[:, pv + w], a copy of it into atubuf[:, pu]; then less alpha f (f = vbuf[:, pv], known)
 * and its other parts along vbuf[:, :pv + w], and normalized: F's new column. C's rows move up one
 * for F's columns that stay, its new column pu holding their coefficients, and the last row is beta
 * at pu. Returns beta, or -1 where the product held only rounding noise (nothing written to C). */
static PyObject *gk_right(PyObject *self, PyObject *args)
{
    PyObject *o[3];
    Py_ssize_t pu, pv, w;
    double alpha, eps, beta = LOST;
    if (!PyArg_ParseTuple(args, "OOOnnndd", &o[0], &o[1], &o[2], &pu, &pv, &w, &alpha, &eps))
        return NULL;
    Array a[3];
    const char *names[3] = {"vbuf", "atubuf", "c"};
    if (take_all(o, a, names, 0, 3, 0x7u) < 0)
        return NULL;
    Array *v = &a[0], *atu = &a[1], *c = &a[2];
    if (columns(v, v->kind, "vbuf") < 0 || columns(atu, v->kind, "atubuf") < 0 || rows_f64(c, "c") < 0)
        goto fail;
    /* pv + w < cols, written so that it cannot overflow */
    if (pu < 0 || pv < 0 || w < 1 || pv >= v->cols || w >= v->cols - pv || pu >= atu->cols ||
        atu->rows != v->rows || w > c->rows || pu >= c->cols) {
        release(a, 3);
        return out_of_range("pu, pv or w");
    }
    double *coef = PyMem_Malloc(2 * (size_t)(pv + w + 1) * sizeof(double));
    if (!coef) {
        PyErr_NoMemory();
        goto fail;
    }
    beta = right_half(v, atu, c, pu, pv, w, alpha, eps, coef);
    PyMem_Free(coef);
    release(a, 3);
    return PyFloat_FromDouble(beta);
fail:
    release(a, 3);
    return NULL;
}

/* orth(basis, q, x, j, known, coef, eps) -> norm: x (a contiguous vector of basis's dtype) less its
 * parts along basis[:, :q] and normalized, in place, as the halves above do; coef (float64, q or more)
 * receives its coefficients. basis may be None where q is 0. Returns the norm left, or -1. */
static PyObject *orth(PyObject *self, PyObject *args)
{
    PyObject *o[4];
    Py_ssize_t q, j;
    double eps, norm = LOST;
    if (!PyArg_ParseTuple(args, "OnOnOOd", &o[0], &q, &o[1], &j, &o[2], &o[3], &eps))
        return NULL;
    Array a[4];
    const char *names[4] = {"basis", "x", "known", "coef"};
    int first = o[0] == Py_None ? 1 : 0;
    if (first && q != 0) {
        PyErr_SetString(PyExc_ValueError, "riemsvd._steps: orth without a basis takes q = 0");
        return NULL;
    }
    if (take_all(o, a, names, first, 4, 0xAu) < 0) /* x and coef are written; the basis and known read */
        return NULL;
    Array *x = &a[1], *known = &a[2], *coef = &a[3];
    Array *b = first ? x : &a[0];
    Py_ssize_t nk = known->rows;
    if (x->view.ndim != 1 || (x->rs != 1 && x->rows > 1)) {
        PyErr_SetString(PyExc_TypeError, "riemsvd._steps: x must be a contiguous 1-D float32 or float64 array");
        goto fail;
    }
    if ((!first && columns(b, x->kind, "basis") < 0) || vector_f64(known, "known") < 0 ||
        vector_f64(coef, "coef") < 0)
        goto fail;
    /* j + nk <= q, written so that it cannot overflow */
    if (q < 0 || q > b->cols || (!first && b->rows != x->rows) || coef->rows < q || j < 0 || j > q || nk > q - j) {
        release(a + first, 4 - first);
        return out_of_range("q, j or known");
    }
    double *again = PyMem_Malloc((size_t)(q + 1) * sizeof(double));
    if (!again) {
        PyErr_NoMemory();
        goto fail;
    }
    double *kn = (double *)known->view.buf, *cf = (double *)coef->view.buf;
    norm = orth_kind(x->kind, b->view.buf, b->cs, x->rows, q, x->view.buf, j, kn, nk, 0, cf, again, eps);
    PyMem_Free(again);
    release(a + first, 4 - first);
    return PyFloat_FromDouble(norm);
fail:
    release(a + first, 4 - first);
    return NULL;
}

/* The reflection I - tau a a^T whose first column is -+d/|d| (d: w coordinates in F = v[:, pv:pv + w])
 * applied to F (F <- F (I - tau a a^T)) and to C's first w rows (C <- (I - tau a a^T) C, its first pu
 * columns), so that F's first column is the direction F d and F C is unchanged; `a` has room for w
 * doubles. Returns |d|; nothing is done where it is 0 or NaN. */
static double reflect_f(const Array *v, Py_ssize_t pv, Py_ssize_t w, const Array *c, Py_ssize_t pu, const double *d,
                        double *a)
{
    double norm = 0.0, aa = 0.0;
    for (Py_ssize_t j = 0; j < w; j++)
        norm += d[j] * d[j];
    norm = sqrt(norm);
    if (!(norm > 0))
        return norm;
    for (Py_ssize_t j = 0; j < w; j++)
        a[j] = d[j] / norm;
    a[0] += a[0] >= 0 ? 1.0 : -1.0; /* |a_0| >= 1: no cancellation */
    for (Py_ssize_t j = 0; j < w; j++)
        aa += a[j] * a[j];
    double tau = 2.0 / aa;
    if (v->kind == 'd')
        reflect_columns_d((double *)column(v, pv), v->cs, v->rows, w, a, tau);
    else
        reflect_columns_s((float *)column(v, pv), v->cs, v->rows, w, a, tau);
    /* C's first w rows, row-major: the same update with its rows as the columns and pu entries */
    reflect_columns_d((double *)c->view.buf, c->rs, pu, w, a, tau);
    return norm;
}

/* reflect(vbuf, pv, w, c, pu, d) -> norm: reflect_f's reflection by d (w float64 coordinates in F =
 * vbuf[:, pv:pv + w]). */
static PyObject *reflect(PyObject *self, PyObject *args)
{
    PyObject *o[3];
    Py_ssize_t pv, w, pu;
    if (!PyArg_ParseTuple(args, "OnnOnO", &o[0], &pv, &w, &o[1], &pu, &o[2]))
        return NULL;
    Array b[3];
    const char *names[3] = {"vbuf", "c", "d"};
    if (take_all(o, b, names, 0, 3, 0x3u) < 0)
        return NULL;
    Array *v = &b[0], *c = &b[1], *dv = &b[2];
    if (columns(v, v->kind, "vbuf") < 0 || rows_f64(c, "c") < 0 || vector_f64(dv, "d") < 0)
        goto fail;
    /* pv + w <= cols, written so that it cannot overflow */
    if (pv < 0 || w < 1 || pu < 0 || pv > v->cols || w > v->cols - pv || dv->rows != w || w > c->rows ||
        pu > c->cols) {
        release(b, 3);
        return out_of_range("pv, w, pu or d");
    }
    double *a = PyMem_Malloc((size_t)w * sizeof(double));
    if (!a) {
        PyErr_NoMemory();
        goto fail;
    }
    double norm = reflect_f(v, pv, w, c, pu, dv->view.buf, a);
    PyMem_Free(a);
    release(b, 3);
    return PyFloat_FromDouble(norm);
fail:
    release(b, 3);
    return NULL;
}

/* ---- The fused step's pass over A on several threads ----
 *
 * A step's two products read A twice; the fused pass (gk_rows) reads it once, and on the threads the
 * products would have had: the calling thread takes the first share of the rows, workers the others,
 * each summing A^T w of its rows into its own vector. The workers are made at the first pass that
 * needs them. After a share a worker waits for the next pass spinning for POOL_SPIN_NS, then sleeps on
 * a condition variable: a step's other work takes 10-60 us, and waking a sleeping worker took about
 * 50 us (a 2-core VM); OpenBLAS's threads, which spin 0.1-0.2 s, slowed the calls after them 2-4x.
 *
 * Each worker is kept on a CPU of its own other than the calling thread's (on Linux, within the
 * process's affinity mask): woken by the caller, the scheduler put a worker on the caller's CPU, and
 * the two shares then ran one after the other, every pass of a solve 4x slower than on two CPUs
 * (1536x384 float64: 390 us a pass against 90). Where the mask leaves no other CPU the pass runs on
 * the calling thread alone. One pass at a time: a second caller (another Python thread) finds the
 * pool busy and makes its pass alone. A forked child starts without workers (fork copies none). */
typedef void (*part_fn)(void *arg, int part, int parts); /* share `part` of `parts` */
#define POOL_MAX 16 /* parts at most */

#if !defined(_WIN32)
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <sched.h>
#include <time.h>
#define POOL_SPIN_NS 200000L
#if defined(__linux__) && defined(CPU_SET)
#define POOL_PLACE 1
#endif

static struct {
    pthread_mutex_t mu;
    pthread_cond_t go[POOL_MAX]; /* worker p sleeps on go[p], signalled for the rounds it has a share of */
    int started;         /* workers made: parts 1..started */
    unsigned long round; /* bumped for each pass (atomic) */
    /* share p of round r: state 2r while open, 2r + 1 once taken (by its worker or by the caller);
     * done r once its worker finished it (atomic) */
    unsigned long state[POOL_MAX], done[POOL_MAX];
    part_fn fn;
    void *arg;
    int parts;
    pthread_t thread[POOL_MAX];
    int cpu[POOL_MAX]; /* the CPU each worker is kept on, -1 where none yet */
} pool = {PTHREAD_MUTEX_INITIALIZER}; /* go: pool_init */
static pthread_mutex_t pool_busy = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

typedef struct {
    int part;
    unsigned long seen;
} WorkerStart;

/* whether a new round was posted within POOL_SPIN_NS */
static int pool_round_soon(unsigned long seen)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0;; i++) {
        if (__atomic_load_n(&pool.round, __ATOMIC_ACQUIRE) != seen)
            return 1;
        if (i % 64 == 63) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > POOL_SPIN_NS)
                return 0;
        }
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
}

/* whether this thread took share p of round r (it was still open) */
static int pool_take(int p, unsigned long r)
{
    unsigned long open = 2 * r;
    return __atomic_compare_exchange_n(&pool.state[p], &open, 2 * r + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* A worker spins for the next round only after a round it had a share of; after one without (a smaller
 * pass than those that made it), it sleeps until a round it has a share of signals it: every worker
 * had been woken for every round and had spun after it, so that 600x400 solves (k = 4) after a round
 * that made 15 workers took 26.0 ms against 5.7 on 2 cores (a review); now 5.96 against 5.92. */
static void *pool_worker(void *p)
{
    WorkerStart start = *(WorkerStart *)p;
    PyMem_RawFree(p);
    unsigned long seen = start.seen;
    int spin = 0;
    for (;;) {
        if (!spin || !pool_round_soon(seen)) {
            pthread_mutex_lock(&pool.mu);
            while (__atomic_load_n(&pool.round, __ATOMIC_ACQUIRE) == seen)
                pthread_cond_wait(&pool.go[start.part], &pool.mu);
            pthread_mutex_unlock(&pool.mu);
        }
        pthread_mutex_lock(&pool.mu);
        seen = pool.round;
        part_fn fn = pool.fn;
        void *arg = pool.arg;
        int parts = pool.parts;
        pthread_mutex_unlock(&pool.mu);
        spin = start.part < parts;
        if (spin && pool_take(start.part, seen)) {
            fn(arg, start.part, parts); /* arg stays valid: the caller waits for a share taken */
            __atomic_store_n(&pool.done[start.part], seen, __ATOMIC_RELEASE);
        }
    }
    return NULL;
}

static void pool_init_go(void)
{
    for (int p = 0; p < POOL_MAX; p++)
        pthread_cond_init(&pool.go[p], NULL);
}

static void pool_after_fork_child(void)
{
    pthread_mutex_init(&pool.mu, NULL);
    pool_init_go();
    pthread_mutex_init(&pool_busy, NULL);
    pool.started = 0;
}

/* once, before the first worker: the condition variables, and a forked child's fresh pool */
static void pool_init(void)
{
    pool_init_go();
    pthread_atfork(NULL, NULL, pool_after_fork_child);
}

/* Keeps workers 1..parts-1 on CPUs of their own other than this thread's; returns the parts that
 * have one (1 where the affinity mask leaves no other CPU). Called with pool.mu held. */
static int pool_place(int parts)
{
#ifdef POOL_PLACE
    int here = sched_getcpu();
    cpu_set_t allowed;
    if (here < 0 || sched_getaffinity(0, sizeof allowed, &allowed) != 0)
        return parts;
    int ok = 1;
    for (int p = 1; p < parts && ok; p++)
        ok = pool.cpu[p] >= 0 && pool.cpu[p] != here && CPU_ISSET(pool.cpu[p], &allowed);
    if (ok)
        return parts; /* as placed before: no system call */
    int placed = 1;
    for (int p = 1, c = 0; p < parts; p++) {
        while (c < CPU_SETSIZE && (c == here || !CPU_ISSET(c, &allowed)))
            c++;
        if (c >= CPU_SETSIZE)
            break;
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(c, &one);
        if (pthread_setaffinity_np(pool.thread[p], sizeof one, &one) != 0)
            break;
        pool.cpu[p] = c++;
        placed = p + 1;
    }
    return placed;
#else
    return parts;
#endif
}

/* fn(arg, part, parts) for part = 0 .. parts - 1, part 0 on this thread; returns the parts made (1
 * where the pool is busy or no worker could be made or placed: fn then runs once with parts = 1).
 * Called without the GIL. */
static int pool_run(part_fn fn, void *arg, int parts)
{
    if (parts > POOL_MAX)
        parts = POOL_MAX;
    if (parts <= 1 || pthread_mutex_trylock(&pool_busy) != 0) {
        fn(arg, 0, 1);
        return 1;
    }
    pthread_once(&pool_once, pool_init);
    pthread_mutex_lock(&pool.mu);
    while (pool.started < parts - 1) {
        WorkerStart *start = PyMem_RawMalloc(sizeof(WorkerStart));
        int p = pool.started + 1;
        if (!start)
            break;
        start->part = p;
        start->seen = pool.round;
        if (pthread_create(&pool.thread[p], NULL, pool_worker, start) != 0) {
            PyMem_RawFree(start);
            break;
        }
        pthread_detach(pool.thread[p]);
#if defined(__GLIBC__)
        pthread_setname_np(pool.thread[p], "riemsvd-pass"); /* as top and ps show it */
#endif
        pool.cpu[p] = -1;
        pool.started = p;
    }
    if (parts > pool.started + 1)
        parts = pool.started + 1;
    parts = pool_place(parts);
    unsigned long r = pool.round + 1;
    for (int p = 1; p < parts; p++)
        __atomic_store_n(&pool.state[p], 2 * r, __ATOMIC_RELAXED);
    pool.fn = fn;
    pool.arg = arg;
    pool.parts = parts;
    __atomic_store_n(&pool.round, r, __ATOMIC_RELEASE);
    for (int p = 1; p < parts; p++)
        pthread_cond_signal(&pool.go[p]);
    pthread_mutex_unlock(&pool.mu);
    fn(arg, 0, parts);
    /* A share whose worker has not started yet is the caller's: a worker can wait for its CPU for
     * milliseconds (torch's OpenMP threads spinning there after the caller's last torch call: 2 ms a
     * solve right after a training step's backward). One a worker took is waited for, spinning,
     * yielding the CPU: it takes about as long as the caller's. */
    int mine[POOL_MAX] = {0};
    for (int p = 1; p < parts; p++)
        if ((mine[p] = pool_take(p, r)))
            fn(arg, p, parts);
    for (int p = 1; p < parts; p++)
        while (!mine[p] && __atomic_load_n(&pool.done[p], __ATOMIC_ACQUIRE) != r)
            sched_yield();
    pthread_mutex_unlock(&pool_busy);
    return parts;
}
#else
static int pool_run(part_fn fn, void *arg, int parts)
{
    (void)parts;
    fn(arg, 0, 1);
    return 1;
}
#endif

static void pool_nothing(void *arg, int part, int parts)
{
    (void)arg, (void)part, (void)parts;
}

/* wake(threads) -> None: a round with nothing to do, which returns at once and leaves the pool's
 * workers (up to threads - 1, made where missing) awake and spinning for POOL_SPIN_NS, ready for the
 * solve's first pass: asleep, their wake-up made a 384x384 float32 step take 33-35 us on two threads
 * against 21 on one and 12 with them spinning (the call alone), and a solve's first step 63 us
 * against 13 for each later one (16 with the wake). */
static PyObject *wake(PyObject *self, PyObject *args)
{
    int threads;
    if (!PyArg_ParseTuple(args, "i", &threads))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    pool_run(pool_nothing, NULL, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* A fused pass's arguments: rows of a (m x n, row stride rs) split into `parts` shares; part p > 0
 * sums into scratch + (p - 1) n, part 0 into z. `v` NULL: A^T x alone (at_rows). */
typedef struct {
    char kind;
    const void *a;
    Py_ssize_t rs, m, n, ld, j, nk;
    const void *v, *U, *x;
    const double *known;
    void *t, *w, *z, *scratch;
    double *tops; /* NULL; or each part's max |a_ij| over its rows (POOL_MAX entries) */
} Pass;

/* the pass's work on rows [lo, hi), its sums into z */
static void pass_rows(const Pass *s, Py_ssize_t lo, Py_ssize_t hi, void *z)
{
    if (s->kind == 'd') {
        if (s->v)
            gk_rows_d(s->a, s->rs, lo, hi, s->n, s->v, s->U, s->ld, s->j, s->known, s->nk, s->t, s->w, (double *)z);
        else
            at_rows_d(s->a, s->rs, lo, hi, s->n, s->x, (double *)z);
    }
    else {
        if (s->v)
            gk_rows_s(s->a, s->rs, lo, hi, s->n, s->v, s->U, s->ld, s->j, s->known, s->nk, s->t, s->w, (float *)z);
        else
            at_rows_s(s->a, s->rs, lo, hi, s->n, s->x, (float *)z);
    }
}

/* bytes of A's rows a pass with `tops` takes at a time, then reads again for their max |a_ij| while
 * they are in the core's cache (L2: 1 MiB a core on the AMD EPYC, 1.25-2 on the Intel Xeons) */
#define TOP_BLOCK (256 << 10)

/* the larger of two maxima, NaN where either is (NaN wins, then Inf, then the largest) */
static double larger(double a, double b)
{
    return a != a || b != b ? (double)NAN : a > b ? a : b;
}

static void pass_part(void *p, int part, int parts)
{
    Pass *s = p;
    Py_ssize_t lo = s->m * part / parts, hi = s->m * (part + 1) / parts;
    size_t size = s->kind == 'd' ? sizeof(double) : sizeof(float);
    char *z = part == 0 ? s->z : (char *)s->scratch + (size_t)(part - 1) * (size_t)s->n * size;
    memset(z, 0, (size_t)s->n * size);
    if (!s->tops) {
        pass_rows(s, lo, hi, z);
        return;
    }
    /* by blocks of rows, each pass_rows's sums in the same order as one call's (each column of z
     * gains the panels' terms in turn) */
    Py_ssize_t block = (Py_ssize_t)(TOP_BLOCK / ((size_t)s->n * size + 1)) / 4 * 4 + 4;
    double top = 0.0;
    for (Py_ssize_t b = lo; b < hi; b += block) {
        Py_ssize_t e = hi - b < block ? hi : b + block;
        pass_rows(s, b, e, z);
        for (Py_ssize_t i = b; i < e; i++)
            top = larger(top, s->kind == 'd' ? max_abs_d((const double *)s->a + i * s->rs, s->n)
                                             : max_abs_s((const float *)s->a + i * s->rs, s->n));
    }
    s->tops[part] = top;
}

/* the pass on up to `threads` threads, the shares' sums added into z; returns the parts it made */
static int run_pass(Pass *s, int threads)
{
    int parts = pool_run(pass_part, s, threads);
    for (int p = 1; p < parts; p++) {
        if (s->kind == 'd') {
            double *z = s->z, *y = (double *)s->scratch + (size_t)(p - 1) * (size_t)s->n;
            for (Py_ssize_t c = 0; c < s->n; c++)
                z[c] += y[c];
        }
        else {
            float *z = s->z, *y = (float *)s->scratch + (size_t)(p - 1) * (size_t)s->n;
            for (Py_ssize_t c = 0; c < s->n; c++)
                z[c] += y[c];
        }
    }
    return parts;
}

/* max_abs's shares: contiguous pieces of x, each at least MAX_ABS_SHARE bytes (a sleeping worker took
 * about 50 us to wake, a pass over 2 MiB about 75) */
#define MAX_ABS_SHARE (2 << 20)
typedef struct {
    const void *x;
    Py_ssize_t n;
    char kind;
    double top[POOL_MAX];
} MaxAbs;

static void max_abs_part(void *p, int part, int parts)
{
    MaxAbs *s = p;
    Py_ssize_t lo = s->n * part / parts, hi = s->n * (part + 1) / parts;
    s->top[part] = s->kind == 'd' ? max_abs_d((const double *)s->x + lo, hi - lo)
                                  : max_abs_s((const float *)s->x + lo, hi - lo);
}

/* max_abs(x, threads) -> max |x_i| over a contiguous, aligned float32 or float64 array (1-D or 2-D, C
 * or Fortran order): NaN where x holds one, Inf where it holds an infinity and no NaN, 0 where empty.
 * On up to `threads` threads (the one pass's pool), one per MAX_ABS_SHARE bytes: the check of a solve's
 * A before its first product took 1.18 ms of a 9.5 ms solve of a 4096x1024 float64 gradient on one. */
static PyObject *max_abs(PyObject *self, PyObject *args)
{
    PyObject *obj;
    int threads;
    if (!PyArg_ParseTuple(args, "Oi", &obj, &threads))
        return NULL;
    MaxAbs s;
    Array a;
    if (take_as(obj, &a, "x", 0) < 0)
        return NULL;
    if (!PyBuffer_IsContiguous(&a.view, 'A')) {
        PyBuffer_Release(&a.view);
        PyErr_SetString(PyExc_TypeError, "riemsvd._steps: x must be contiguous (C or Fortran order)");
        return NULL;
    }
    if (aligned(&a, "x") < 0) {
        PyBuffer_Release(&a.view);
        return NULL;
    }
    s.x = a.view.buf;
    s.n = a.view.len / a.view.itemsize;
    s.kind = a.kind;
    Py_ssize_t most = a.view.len / MAX_ABS_SHARE; /* pool_run takes POOL_MAX at most */
    int parts = threads < most ? threads : (int)(most < POOL_MAX ? most : POOL_MAX);
    double top = 0.0;
    Py_BEGIN_ALLOW_THREADS
    parts = pool_run(max_abs_part, &s, parts);
    for (int p = 0; p < parts; p++)
        top = larger(top, s.top[p]);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&a.view);
    return PyFloat_FromDouble(top);
}

/* ---- The float64 check's products of a float32 A ----
 *
 * Rows [lo, hi) of A (m x n float32, row i at a + i * rs) with the k rows x_c of X (k x n) and y_c of Y
 * (k x m), all double: AX[c m + i] = row i . x_c, and ATY (k x n, zeroed by the caller) += sum over i
 * of Y[c m + i] row i. WIDENED_ROWS rows at a time, in pieces of WIDENED_PIECE columns cast once into
 * `panel` (16 KiB), which each of the k columns then reads from the L1 cache; `sums` (WIDENED_ROWS k
 * doubles) holds the dot products over the pieces. Unlike the memory-bound passes, these loops are
 * bound by their multiply-adds, and are cloned for x86-64-v4's 512-bit vectors too.
 *
 * The loop before cast each entry again for each column (two FMA-port uops each), two rows at a time,
 * on one thread: 1.56-1.89x the time of BLAS on cast blocks at eight columns. On one thread at eight
 * columns (384x384 to 4000x2000) against those blocks: whole panels of four cast rows, read from L2
 * for each column, 1.2-1.4x; pieces in L1, 1.06-1.19x; with 512-bit clones, 0.86-0.95x; eight rows
 * instead of four, 0.87-1.12 of that.
 * A short last panel is padded with zeros, weighted 0 (a row read again with weight 0 made
 * inf * 0 = NaN in ATY where it held an infinity). */
#define WIDENED_ROWS 8
#define WIDENED_PIECE 256
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && defined(__GLIBC__) && __GNUC__ >= 12
#define VECTORIZED_WIDE __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "avx2", "default")))
#else
#define VECTORIZED_WIDE VECTORIZED
#endif
VECTORIZED_WIDE static void widened_rows(const float *a, Py_ssize_t rs, Py_ssize_t lo, Py_ssize_t hi,
                                         Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const double *X,
                                         const double *Y, double *AX, double *ATY, double *sums)
{
    double panel[WIDENED_ROWS * WIDENED_PIECE];
    const double *q0 = panel, *q1 = q0 + WIDENED_PIECE, *q2 = q1 + WIDENED_PIECE, *q3 = q2 + WIDENED_PIECE,
                 *q4 = q3 + WIDENED_PIECE, *q5 = q4 + WIDENED_PIECE, *q6 = q5 + WIDENED_PIECE,
                 *q7 = q6 + WIDENED_PIECE;
    for (Py_ssize_t i = lo; i < hi; i += WIDENED_ROWS) {
        Py_ssize_t r = hi - i < WIDENED_ROWS ? hi - i : WIDENED_ROWS;
        for (Py_ssize_t t = 0; t < WIDENED_ROWS * k; t++)
            sums[t] = 0.0;
        for (Py_ssize_t j0 = 0; j0 < n; j0 += WIDENED_PIECE) {
            Py_ssize_t len = n - j0 < WIDENED_PIECE ? n - j0 : WIDENED_PIECE;
            for (Py_ssize_t q = 0; q < WIDENED_ROWS; q++) {
                double *d = panel + q * WIDENED_PIECE;
                if (q < r) {
                    const float *row = a + (i + q) * rs + j0;
                    for (Py_ssize_t j = 0; j < len; j++)
                        d[j] = (double)row[j];
                }
                else
                    for (Py_ssize_t j = 0; j < len; j++)
                        d[j] = 0.0;
            }
            for (Py_ssize_t c = 0; c < k; c++) {
                const double *x = X + c * n + j0, *y = Y + c * m + i;
                double *aty = ATY + c * n + j0, e[WIDENED_ROWS];
                for (Py_ssize_t q = 0; q < WIDENED_ROWS; q++)
                    e[q] = q < r ? y[q] : 0.0;
                double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, s4 = 0.0, s5 = 0.0, s6 = 0.0, s7 = 0.0;
                for (Py_ssize_t j = 0; j < len; j++) {
                    double xj = x[j];
                    s0 += q0[j] * xj;
                    s1 += q1[j] * xj;
                    s2 += q2[j] * xj;
                    s3 += q3[j] * xj;
                    s4 += q4[j] * xj;
                    s5 += q5[j] * xj;
                    s6 += q6[j] * xj;
                    s7 += q7[j] * xj;
                    aty[j] += q0[j] * e[0] + q1[j] * e[1] + q2[j] * e[2] + q3[j] * e[3] + q4[j] * e[4] +
                              q5[j] * e[5] + q6[j] * e[6] + q7[j] * e[7];
                }
                double *s = sums + WIDENED_ROWS * c;
                s[0] += s0, s[1] += s1, s[2] += s2, s[3] += s3, s[4] += s4, s[5] += s5, s[6] += s6, s[7] += s7;
            }
        }
        for (Py_ssize_t c = 0; c < k; c++)
            for (Py_ssize_t q = 0; q < r; q++)
                AX[c * m + i + q] = sums[WIDENED_ROWS * c + q];
    }
}

/* widened_both's shares: part p takes rows [m p / parts, m (p + 1) / parts), its dot products' sums at
 * scratch + WIDENED_ROWS k p, and sums into ATY (part 0) or a k x n piece of scratch after all those
 * (part p > 0) */
typedef struct {
    const float *a;
    Py_ssize_t rs, m, n, k;
    const double *x, *y;
    double *ax, *aty, *scratch;
    int parts;
} Widened;

static void widened_part(void *p, int part, int parts)
{
    Widened *s = p;
    Py_ssize_t kn = s->k * s->n;
    double *aty = part == 0 ? s->aty : s->scratch + WIDENED_ROWS * s->k * (Py_ssize_t)s->parts + (part - 1) * kn;
    memset(aty, 0, (size_t)kn * sizeof(double));
    widened_rows(s->a, s->rs, s->m * part / parts, s->m * (part + 1) / parts, s->m, s->n, s->k, s->x, s->y, s->ax,
                 aty, s->scratch + WIDENED_ROWS * s->k * (Py_ssize_t)part);
}

/* Entries of A times columns that a share of widened_both takes at least: about 50 us of one thread's
 * work (10-11 a nanosecond at 384x384 to 4000x2000, eight columns), what a sleeping worker takes to
 * wake */
#define WIDENED_SHARE (1 << 19)

/* widened_both(a, x, y, ax, aty, threads): the float64 check's products of a float32 A in one pass
 * over it, without a float64 copy: ax = x A^T and aty = y A, that is A x and A^T y for each row x of
 * x (k x n) and y of y (k x m), into ax (k x m) and aty (k x n), on up to `threads` threads (the one
 * pass's pool). a is 2-D float32 with contiguous rows (a transposed view goes as its transpose, the
 * products' roles swapped); the others are 2-D C-contiguous float64, ax and aty apart from the inputs
 * (they are written as the inputs are read). */
static PyObject *widened_both(PyObject *self, PyObject *args)
{
    PyObject *o[5];
    int threads;
    if (!PyArg_ParseTuple(args, "OOOOOi", &o[0], &o[1], &o[2], &o[3], &o[4], &threads))
        return NULL;
    Array b[5];
    const char *names[5] = {"a", "x", "y", "ax", "aty"};
    if (take_all(o, b, names, 0, 5, 0x18u) < 0)
        return NULL;
    Array *a = &b[0];
    if (a->kind != 'f' || a->view.ndim != 2 || (a->cs != 1 && a->cols > 1)) {
        PyErr_SetString(PyExc_TypeError, "riemsvd._steps: a must be a 2-D float32 array with contiguous rows");
        goto fail;
    }
    for (int t = 1; t < 5; t++)
        if (b[t].kind != 'd' || b[t].view.ndim != 2 || !PyBuffer_IsContiguous(&b[t].view, 'C')) {
            PyErr_Format(PyExc_TypeError, "riemsvd._steps: %s must be a 2-D C-contiguous float64 array", names[t]);
            goto fail;
        }
    for (int t = 0; t < 5; t++)
        if (aligned(&b[t], names[t]) < 0)
            goto fail;
    Py_ssize_t m = a->rows, n = a->cols, k = b[1].rows;
    if (b[1].cols != n || b[2].rows != k || b[2].cols != m || b[3].rows != k || b[3].cols != m ||
        b[4].rows != k || b[4].cols != n) {
        release(b, 5);
        return out_of_range("the shapes of x, y, ax or aty");
    }
    double work = (double)m * (double)n * (double)k; /* no overflow where the sizes are large */
    int parts = threads < 1 ? 1 : threads > POOL_MAX ? POOL_MAX : threads;
    if (work / WIDENED_SHARE < parts)
        parts = work < WIDENED_SHARE ? 1 : (int)(work / WIDENED_SHARE);
    /* four panels a share at least: each share after the first zeroes and sums a k x n piece of its
     * own, on the calling thread, which for a short, wide A cost more than its share of the products
     * (a review: 64 x 1e6 at k = 64 on 16 threads would have taken 7.7 GB of scratch) */
    if (m / (4 * WIDENED_ROWS) < parts)
        parts = m < 4 * WIDENED_ROWS ? 1 : (int)(m / (4 * WIDENED_ROWS));
#if defined(_WIN32)
    parts = 1; /* no pool there: its one share needs no scratch for others */
#endif
    /* the dot products' sums, then A^T y of the shares after the first */
    double *scratch = PyMem_Malloc(((size_t)parts * WIDENED_ROWS * (size_t)k + (size_t)(parts - 1) * (size_t)(k * n)) *
                                       sizeof(double) + 1);
    if (!scratch) {
        PyErr_NoMemory();
        goto fail;
    }
    Widened s = {(const float *)a->view.buf, a->rs, m, n, k, b[1].view.buf, b[2].view.buf, b[3].view.buf,
                 b[4].view.buf, scratch, parts};
    Py_BEGIN_ALLOW_THREADS
    int made = pool_run(widened_part, &s, parts);
    double *aty = s.aty;
    for (int p = 1; p < made; p++) {
        const double *part = scratch + WIDENED_ROWS * k * (Py_ssize_t)parts + (p - 1) * k * n;
        for (Py_ssize_t j = 0; j < k * n; j++)
            aty[j] += part[j];
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(scratch);
    release(b, 5);
    Py_RETURN_NONE;
fail:
    release(b, 5);
    return NULL;
}

/* the bases, H and C of a step at pu, pv, w (b[1:7]: ubuf, avbuf, vbuf, atubuf, h, c) for an m x n A:
 * their kinds and layouts, and room for the step; -1 with the exception set where they do not serve */
static int check_bases(const Array *b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t pu, Py_ssize_t pv, Py_ssize_t w)
{
    const Array *u = &b[1], *av = &b[2], *v = &b[3], *atu = &b[4], *h = &b[5], *c = &b[6];
    if (columns(u, u->kind, "ubuf") < 0 || columns(av, u->kind, "avbuf") < 0 || columns(v, u->kind, "vbuf") < 0 ||
        columns(atu, u->kind, "atubuf") < 0 || rows_f64(h, "h") < 0 || rows_f64(c, "c") < 0)
        return -1;
    /* pv + w < cols, written so that it cannot overflow */
    if (pu < 0 || pv < 0 || w < 1 || u->rows != m || av->rows != m || v->rows != n || atu->rows != n ||
        pu >= u->cols || pv >= av->cols || pv >= v->cols || w >= v->cols - pv || pu > atu->cols ||
        pu >= h->rows || pv >= h->cols || pu > c->cols || c->rows < 1) {
        out_of_range("pu, pv, w or the shapes");
        return -1;
    }
    return 0;
}

/* gk_fused's and gk_run's arrays (a, ubuf, avbuf, vbuf, atubuf, h, c; `written` as take_all's) taken
 * into b and checked for a step at pu, pv, w; -1 with the exception set and nothing held where they
 * do not serve */
static int take_fused(PyObject **o, Array *b, unsigned written, Py_ssize_t pu, Py_ssize_t pv, Py_ssize_t w)
{
    const char *names[7] = {"a", "ubuf", "avbuf", "vbuf", "atubuf", "h", "c"};
    if (take_all(o, b, names, 0, 7, written) < 0)
        return -1;
    const Array *a = &b[0], *u = &b[1];
    if (a->view.ndim != 2 || (a->cs != 1 && a->cols > 1) || a->kind != u->kind) {
        PyErr_SetString(PyExc_TypeError, "riemsvd._steps: a must be 2-D with contiguous rows, of the bases' dtype");
        goto fail;
    }
    if (aligned(a, "a") < 0 || check_bases(b, a->rows, a->cols, pu, pv, w) < 0)
        goto fail;
    return 0;
fail:
    release(b, 7);
    return -1;
}

/* gk_fused's work on checked arrays, without the GIL: coef has room for 2 (pu + 1) doubles, scratch for
 * the sums of threads - 1 shares. Returns alpha (-1 where lost); *fresh = 1 where a second pass made
 * A^T u. */
static double fused_left(const Array *b, Py_ssize_t pu, Py_ssize_t pv, Py_ssize_t w, double eps, int threads,
                         double *coef, void *scratch, int *fresh, double *top)
{
    const Array *a = &b[0], *u = &b[1], *av = &b[2], *v = &b[3], *atu = &b[4], *h = &b[5], *c = &b[6];
    Py_ssize_t m = a->rows, n = a->cols;
    double *crow = (double *)c->view.buf;
    Py_ssize_t j = first_known(crow, pu);
    Pass s = {u->kind, a->view.buf, a->rs, m, n, u->cs, j, pu - j, column(v, pv), u->view.buf, NULL, crow + j,
              column(av, pv), column(u, pu), column(v, pv + w), scratch};
    /* d: the Gram-Schmidt's own coefficients (orth's `subtracted`); then H's column, the known ones
     * added, in the room orth used for its second pass */
    double *d = coef, *hcol = coef + pu + 1;
    *fresh = 0;
    double tops[POOL_MAX];
    s.tops = top ? tops : NULL;
    int parts = run_pass(&s, threads);
    if (top) {
        *top = 0.0;
        for (int p = 0; p < parts; p++)
            *top = larger(*top, tops[p]);
        s.tops = NULL;
    }
    double alpha = orth_kind(u->kind, u->view.buf, u->cs, m, pu, s.w, j, crow + j, pu - j, 1, d, hcol, eps);
    if (alpha >= 0) {
        double dd = 0.0;
        for (Py_ssize_t t = 0; t < pu; t++) {
            hcol[t] = d[t] + (t >= j ? crow[t] : 0.0);
            dd += d[t] * d[t];
        }
        write_h(h, pu, pv, hcol, alpha);
        if (sqrt(dd) <= alpha) { /* A^T u = (A^T w - (A^T U) d) / alpha */
            if (u->kind == 'd') {
                double *z = s.z;
                less_along_d(atu->view.buf, atu->cs, n, pu, d, z);
                for (Py_ssize_t i = 0; i < n; i++)
                    z[i] /= alpha;
            }
            else {
                float *z = s.z;
                less_along_s(atu->view.buf, atu->cs, n, pu, d, z);
                for (Py_ssize_t i = 0; i < n; i++)
                    z[i] = (float)((double)z[i] / alpha);
            }
        }
        else {
            s.v = NULL;
            s.x = s.w;
            run_pass(&s, threads);
            *fresh = 1;
        }
    }
    return alpha;
}

/* Room for gk_fused's and gk_run's steps: *coef for `coefs` doubles, and *scratch for the sums of the
 * pass's shares but the first (NULL for one thread), *threads clamped to the pool's 1 .. POOL_MAX (no
 * scratch for shares it would not make); -1 with MemoryError set and nothing held where they could
 * not be had */
static int fused_buffers(size_t coefs, int *threads, Py_ssize_t n, size_t size, double **coef, void **scratch)
{
    if (*threads < 1)
        *threads = 1;
    if (*threads > POOL_MAX)
        *threads = POOL_MAX;
    *coef = PyMem_Malloc(coefs * sizeof(double));
    *scratch = *threads > 1 ? PyMem_Malloc((size_t)(*threads - 1) * (size_t)n * size + 1) : NULL;
    if (*coef && (*threads == 1 || *scratch))
        return 0;
    PyMem_Free(*coef);
    PyMem_Free(*scratch);
    PyErr_NoMemory();
    return -1;
}

/* gk_fused(a, ubuf, avbuf, vbuf, atubuf, h, c, pu, pv, w, eps, threads[, top]) -> (alpha, fresh): the left
 * half of a Golub-Kahan step and the product of the right half in one pass over A (2-D, contiguous
 * rows, the bases' dtype). The pass writes A f (f = vbuf[:, pv]) into avbuf[:, pv], A f less its
 * known part (C's first row from its first nonzero, as gk_left takes it) into ubuf[:, pu], and A^T of
 * the latter into vbuf[:, pv + w]; then ubuf[:, pu] is orthogonalized and normalized as gk_left does,
 * H's new row and column written, and vbuf[:, pv + w] turned into A^T of the normalized column from
 * the columns of A^T U kept in atubuf[:, :pu] (u = (w - U d)/alpha, d the Gram-Schmidt's coefficients
 * beyond the known ones). Where |d| exceeds alpha, that combination would carry |d|/alpha times the
 * rounding of A^T U, and a second pass makes the product itself (fresh = 1). Returns alpha, or -1 as
 * gk_left where the column held only rounding noise (avbuf[:, pv] is written; ubuf[:, pu] and
 * vbuf[:, pv + w] are then spoiled). gk_right then takes the step on. With `top` (a float64 array of
 * one entry) the pass also reads max |a_ij| into it (NaN where A holds one, else Inf where it holds
 * an infinity), a block of rows at a time while the block is in the cache: a solve's first step
 * reads A's entries for the argument checks (riemsvd._operator.reads_entries_in_pass). */
static PyObject *gk_fused(PyObject *self, PyObject *args)
{
    PyObject *o[7], *top_obj = Py_None;
    Py_ssize_t pu, pv, w;
    double eps, alpha = LOST, top = 0.0;
    int threads, fresh = 0;
    if (!PyArg_ParseTuple(args, "OOOOOOOnnndi|O", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &pu, &pv, &w,
                          &eps, &threads, &top_obj))
        return NULL;
    Array b[7], t;
    if (top_obj != Py_None) {
        if (take_as(top_obj, &t, "top", 1) < 0)
            return NULL;
        if (vector_f64(&t, "top") < 0 || t.rows != 1) {
            PyBuffer_Release(&t.view);
            if (!PyErr_Occurred())
                out_of_range("top");
            return NULL;
        }
    }
    if (take_fused(o, b, 0x2Eu, pu, pv, w) < 0)
        goto fail_top;
    double *coef;
    void *scratch;
    if (fused_buffers(2 * (size_t)(pu + 1), &threads, b[0].cols, (size_t)b[1].view.itemsize, &coef, &scratch) < 0)
        goto fail;
    Py_BEGIN_ALLOW_THREADS
    alpha = fused_left(b, pu, pv, w, eps, threads, coef, scratch, &fresh, top_obj != Py_None ? &top : NULL);
    Py_END_ALLOW_THREADS
    PyMem_Free(coef);
    PyMem_Free(scratch);
    release(b, 7);
    if (top_obj != Py_None) {
        *(double *)t.view.buf = top;
        PyBuffer_Release(&t.view);
    }
    return Py_BuildValue("(di)", alpha, fresh);
fail:
    release(b, 7);
fail_top:
    if (top_obj != Py_None)
        PyBuffer_Release(&t.view);
    return NULL;
}

/* ---- Runs of steps in one call ----
 *
 * A run's step: the left half with its product and the product of the right half (A f into ubuf[:, pu],
 * A^T of U's new column into vbuf[:, pv + w]) by `left`, from `source` (a dense A's pass, a sparse A's
 * compressed rows), on the arrays b[1:7] (ubuf, avbuf, vbuf, atubuf, h, c); then right_half. `left`
 * returns alpha, or -1 where the column was lost (avbuf[:, pv] written), and sets *fresh to the
 * products it made beyond the step's two. */
typedef double (*left_fn)(const void *source, const Array *b, Py_ssize_t pu, Py_ssize_t pv, Py_ssize_t w, double eps,
                          double *coef, int *fresh);

typedef struct {
    Py_ssize_t done; /* steps completed */
    int lost;        /* 1: the last step's left half lost its column; 2: its right half */
    int fresh;       /* products beyond two a step, of all steps and the one left unfinished */
    double alpha;    /* the unfinished step's alpha */
} Run;

/* the steps, up to `steps`, that fit in m x n and in every buffer a step writes: _golub_kahan_step's
 * room (pu below m and ubuf's columns, pv + w + 1 up to n and vbuf's) and the columns of avbuf, H, A^T U
 * and C at pu + i or pv + i */
static Py_ssize_t steps_that_fit(const Array *b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t pu, Py_ssize_t pv, Py_ssize_t w,
                                 Py_ssize_t steps)
{
    const Array *u = &b[1], *av = &b[2], *v = &b[3], *atu = &b[4], *h = &b[5], *c = &b[6];
    Py_ssize_t fit[7] = {(m < u->cols ? m : u->cols) - pu, (n < v->cols ? n : v->cols) - pv - w, av->cols - pv,
                         h->cols - pv, h->rows - pu, atu->cols - pu, c->cols - pu};
    for (int t = 0; t < 7; t++)
        steps = fit[t] < steps ? fit[t] : steps;
    return steps;
}

/* The run's steps, without the GIL. With `probe`, each step first turns F's first column into F d by
 * reflect's reflection, d = C h (h H's newest column, pu + i entries). coef: room for
 * 2 (most + 1) + 2 w doubles, most the larger of pu and pv + w after the last step. */
static Run run_steps(left_fn left, const void *source, const Array *b, Py_ssize_t pu, Py_ssize_t pv, Py_ssize_t w,
                     double eps, Py_ssize_t steps, int probe, Py_ssize_t most, double *coef)
{
    const Array *v = &b[3], *atu = &b[4], *h = &b[5], *c = &b[6];
    double *d = coef + 2 * (most + 1), *a = d + w; /* a probe's direction and its reflection */
    const double *hb = h->view.buf, *cb = c->view.buf;
    Run r = {0, 0, 0, 0.0};
    for (; r.done < steps; r.done++) {
        Py_ssize_t at = pu + r.done, newest = pv + r.done - 1;
        if (probe) {
            for (Py_ssize_t row = 0; row < w; row++) {
                double sum = 0.0;
                for (Py_ssize_t t = 0; t < at; t++)
                    sum += cb[row * c->rs + t] * hb[t * h->rs + newest];
                d[row] = sum;
            }
            reflect_f(v, pv + r.done, w, c, at, d, a);
        }
        int again;
        r.alpha = left(source, b, at, pv + r.done, w, eps, coef, &again);
        r.fresh += again;
        if (r.alpha < 0) {
            r.lost = 1;
            break;
        }
        if (right_half(v, atu, c, at, pv + r.done, w, r.alpha, eps, coef) < 0) {
            r.lost = 2;
            break;
        }
    }
    return r;
}

/* a dense A's left half: fused_left on the pass's threads */
typedef struct {
    int threads;
    void *scratch;
} Threads;

static double dense_left(const void *source, const Array *b, Py_ssize_t pu, Py_ssize_t pv, Py_ssize_t w, double eps,
                         double *coef, int *fresh)
{
    const Threads *t = source;
    return fused_left(b, pu, pv, w, eps, t->threads, coef, t->scratch, fresh, NULL);
}

/* gk_run(a, ubuf, avbuf, vbuf, atubuf, h, c, pu, pv, w, eps, threads, steps, probe) -> (done, lost, fresh,
 * alpha): up to `steps` Golub-Kahan steps in one call, each gk_fused then gk_right at pu + i, pv + i,
 * while the bases have room for them (the room _golub_kahan_step asks). With `probe`, each step first
 * turns F's first column into F d by reflect's reflection, d = C h (h H's newest column, pu + i
 * entries): a probe's recurrence (riemsvd._subspace._Probe.direction after its start). Stops where a
 * half lost its column to rounding: lost = 1 after gk_fused's (the step's pass made, alpha -1), 2 after
 * gk_right's (alpha the step's); the caller then finishes that step as _golub_kahan_step does. done
 * counts the steps completed, fresh the second passes of all of them and of a step left unfinished.
 * Each step from Python had cost 20-40 us beside its C calls at 2000x1000, its objects cold after the
 * pass; a probe's 30-40 us at 384x384 (k = 8, float32). */
static PyObject *gk_run(PyObject *self, PyObject *args)
{
    PyObject *o[7];
    Py_ssize_t pu, pv, w, steps;
    double eps;
    int threads, probe;
    if (!PyArg_ParseTuple(args, "OOOOOOOnnndinp", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &pu, &pv, &w,
                          &eps, &threads, &steps, &probe))
        return NULL;
    Array b[7];
    if (take_fused(o, b, 0x7Eu, pu, pv, w) < 0)
        return NULL;
    if (w > b[6].rows || (probe && pv < 1)) {
        release(b, 7);
        return out_of_range("w or pv");
    }
    steps = steps_that_fit(b, b[0].rows, b[0].cols, pu, pv, w, steps);
    if (steps < 1) {
        release(b, 7);
        return Py_BuildValue("(niid)", (Py_ssize_t)0, 0, 0, 0.0);
    }
    Py_ssize_t most = pu + steps > pv + w + steps ? pu + steps : pv + w + steps;
    double *coef;
    Threads t = {threads, NULL};
    if (fused_buffers(2 * (size_t)(most + 1) + 2 * (size_t)w, &t.threads, b[0].cols, (size_t)b[1].view.itemsize,
                      &coef, &t.scratch) < 0) {
        release(b, 7);
        return NULL;
    }
    Run r;
    Py_BEGIN_ALLOW_THREADS
    r = run_steps(dense_left, &t, b, pu, pv, w, eps, steps, probe, most, coef);
    Py_END_ALLOW_THREADS
    PyMem_Free(coef);
    PyMem_Free(t.scratch);
    release(b, 7);
    return Py_BuildValue("(niid)", r.done, r.lost, r.fresh, r.alpha);
}

/* A sparse A as compressed rows (see the header's gather and scatter): those of A where by_rows (a
 * CSR A), else those of A^T (a CSC A's arrays), with indices of 32 or 64 bits (`wide`). */
typedef struct {
    char kind;
    int wide, by_rows;
    const void *ptr, *ind, *data;
    Py_ssize_t m, n;
} Sparse;

/* out <- A x (adjoint 0: x n entries, out m) or A^T x (adjoint 1: x m entries, out n) */
static void sparse_times(const Sparse *s, int adjoint, const void *x, void *out)
{
    int gather = s->by_rows != adjoint;
    Py_ssize_t rows = s->by_rows ? s->m : s->n, cols = s->by_rows ? s->n : s->m;
    if (s->kind == 'd' && !s->wide) {
        if (gather)
            gather_i32_d(s->ptr, s->ind, s->data, rows, x, out);
        else
            scatter_i32_d(s->ptr, s->ind, s->data, rows, cols, x, out);
    }
    else if (s->kind == 'd') {
        if (gather)
            gather_i64_d(s->ptr, s->ind, s->data, rows, x, out);
        else
            scatter_i64_d(s->ptr, s->ind, s->data, rows, cols, x, out);
    }
    else if (!s->wide) {
        if (gather)
            gather_i32_s(s->ptr, s->ind, s->data, rows, x, out);
        else
            scatter_i32_s(s->ptr, s->ind, s->data, rows, cols, x, out);
    }
    else {
        if (gather)
            gather_i64_s(s->ptr, s->ind, s->data, rows, x, out);
        else
            scatter_i64_s(s->ptr, s->ind, s->data, rows, cols, x, out);
    }
}

/* a sparse A's left half: A f, gk_left's work, then A^T of the new column (no second product: fresh 0) */
static double sparse_left(const void *source, const Array *b, Py_ssize_t pu, Py_ssize_t pv, Py_ssize_t w, double eps,
                          double *coef, int *fresh)
{
    const Sparse *s = source;
    const Array *u = &b[1], *av = &b[2], *v = &b[3], *h = &b[5], *c = &b[6];
    *fresh = 0;
    sparse_times(s, 0, column(v, pv), column(u, pu));
    double alpha = left_half(u, av, h, c, pu, pv, eps, coef);
    if (alpha >= 0)
        sparse_times(s, 1, column(u, pu), column(v, pv + w));
    return alpha;
}

/* an index array: 1-D, contiguous, int32 or int64 (*wide); -1 with TypeError set where it is not */
static int take_index(PyObject *obj, Py_buffer *view, int *wide, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    int ok = view->ndim == 1 && f[1] == '\0' && strchr("ilq", f[0]) && (view->itemsize == 4 || view->itemsize == 8) &&
             (uintptr_t)view->buf % (uintptr_t)view->itemsize == 0;
    if (!ok) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_TypeError, "riemsvd._steps: %s must be a contiguous, aligned 1-D int32 or int64 array",
                     what);
        return -1;
    }
    *wide = view->itemsize == 8;
    return 0;
}

/* gk_sparse_run(ptr, ind, data, by_rows, m, n, ubuf, avbuf, vbuf, atubuf, h, c, pu, pv, w, eps, steps,
 * probe) -> (done, lost, alpha): gk_run's steps for a sparse m x n A given by its compressed rows
 * (Sparse; ptr and ind of one integer type, data the bases' dtype), each step's two products one after
 * the other: A f, gk_left's work, A^T of the new column, gk_right's. lost as gk_run's, and also the
 * products the unfinished step made (A f alone where its left half lost the column). The caller
 * checked the indices (riemsvd._operator.SparseRows): each ptr entry from 0 up to len(ind), rising,
 * and each ind entry below the other side's length. From Python a step had taken 30 us, 10 of them
 * beside its four C calls (1536x384, 1% stored, k = 8). */
static PyObject *gk_sparse_run(PyObject *self, PyObject *args)
{
    PyObject *o[7], *ptr_obj, *ind_obj;
    Py_ssize_t m, n, pu, pv, w, steps;
    double eps;
    int by_rows, probe, wide, wide_ind;
    if (!PyArg_ParseTuple(args, "OOOpnnOOOOOOnnndnp", &ptr_obj, &ind_obj, &o[0], &by_rows, &m, &n, &o[1], &o[2],
                          &o[3], &o[4], &o[5], &o[6], &pu, &pv, &w, &eps, &steps, &probe))
        return NULL;
    Py_buffer ptr, ind;
    if (take_index(ptr_obj, &ptr, &wide, "ptr") < 0)
        return NULL;
    if (take_index(ind_obj, &ind, &wide_ind, "ind") < 0) {
        PyBuffer_Release(&ptr);
        return NULL;
    }
    Array b[7];
    const char *names[7] = {"data", "ubuf", "avbuf", "vbuf", "atubuf", "h", "c"};
    if (take_all(o, b, names, 0, 7, 0x7Eu) < 0) {
        PyBuffer_Release(&ptr);
        PyBuffer_Release(&ind);
        return NULL;
    }
    const Array *data = &b[0], *u = &b[1], *c = &b[6];
    Py_ssize_t rows = by_rows ? m : n, nnz = ind.len / ind.itemsize, nptr = ptr.len / ptr.itemsize;
    PyObject *result = NULL;
    if (wide != wide_ind || data->view.ndim != 1 || (data->rs != 1 && data->rows > 1) || data->kind != u->kind) {
        PyErr_SetString(PyExc_TypeError, "riemsvd._steps: ptr and ind must share an integer type, data be a "
                                         "contiguous 1-D array of the bases' dtype");
        goto done;
    }
    if (aligned(data, "data") < 0 || check_bases(b, m, n, pu, pv, w) < 0)
        goto done;
    if (m < 1 || n < 1 || nptr != rows + 1 || data->rows != nnz || w > c->rows || (probe && pv < 1)) {
        out_of_range("ptr, data, w or pv");
        goto done;
    }
    steps = steps_that_fit(b, m, n, pu, pv, w, steps);
    if (steps < 1) {
        result = Py_BuildValue("(nid)", (Py_ssize_t)0, 0, 0.0);
        goto done;
    }
    Py_ssize_t most = pu + steps > pv + w + steps ? pu + steps : pv + w + steps;
    double *coef = PyMem_Malloc((2 * (size_t)(most + 1) + 2 * (size_t)w) * sizeof(double));
    if (!coef) {
        PyErr_NoMemory();
        goto done;
    }
    Sparse s = {u->kind, wide, by_rows, ptr.buf, ind.buf, data->view.buf, m, n};
    Run r;
    Py_BEGIN_ALLOW_THREADS
    r = run_steps(sparse_left, &s, b, pu, pv, w, eps, steps, probe, most, coef);
    Py_END_ALLOW_THREADS
    PyMem_Free(coef);
    result = Py_BuildValue("(nid)", r.done, r.lost, r.alpha);
done:
    release(b, 7);
    PyBuffer_Release(&ptr);
    PyBuffer_Release(&ind);
    return result;
}

/* ---- A look's estimate from the eigenvectors of H H^T ----
 *
 * LAPACK's dsyevr, as scipy's Cython API exports it (scipy.linalg.cython_lapack: a capsule per routine,
 * integers of C's int), found at the first call; NULL where that module or routine is missing. */
typedef void (*dsyevr_fn)(char *jobz, char *range, char *uplo, int *n, double *a, int *lda, double *vl, double *vu,
                          int *il, int *iu, double *abstol, int *m, double *w, double *z, int *ldz, int *isuppz,
                          double *work, int *lwork, int *iwork, int *liwork, int *info);
typedef void (*dgesdd_fn)(char *jobz, int *m, int *n, double *a, int *lda, double *s, double *u, int *ldu,
                          double *vt, int *ldvt, double *work, int *lwork, int *iwork, int *info);
typedef void (*dgemm_fn)(char *transa, char *transb, int *m, int *n, int *k, double *alpha, double *a, int *lda,
                         double *b, int *ldb, double *beta, double *c, int *ldc);
static dsyevr_fn lapack_dsyevr;
static dgesdd_fn lapack_dgesdd;
static dgemm_fn blas_dgemm; /* finish's products of the bases, by BLAS as numpy's matmul made them */
static PyObject *lapack_module, *blas_module; /* kept imported: the capsules' pointers live in them */

/* the routine `name` of a scipy Cython API's exports (`capi`, NULL: none), or NULL */
static void *lapack_routine(PyObject *capi, const char *name)
{
    PyObject *cap = capi && PyDict_Check(capi) ? PyDict_GetItemString(capi, name) : NULL;
    return cap && PyCapsule_CheckExact(cap) ? PyCapsule_GetPointer(cap, PyCapsule_GetName(cap)) : NULL;
}

/* the exports of the scipy module `name`, imported into *module once (None where it is missing) */
static PyObject *capi_of(PyObject **module, const char *name)
{
    if (!*module) {
        *module = PyImport_ImportModule(name);
        if (!*module) {
            PyErr_Clear();
            *module = Py_None; /* looked for once */
            Py_INCREF(Py_None);
        }
    }
    PyObject *capi = *module == Py_None ? NULL : PyObject_GetAttrString(*module, "__pyx_capi__");
    PyErr_Clear();
    return capi;
}

/* finds the routines at the first call; 0 where one is missing (with RuntimeError set) */
static int find_lapack(void)
{
    if (!lapack_module) {
        PyObject *capi = capi_of(&lapack_module, "scipy.linalg.cython_lapack");
        lapack_dsyevr = (dsyevr_fn)lapack_routine(capi, "dsyevr");
        lapack_dgesdd = (dgesdd_fn)lapack_routine(capi, "dgesdd");
        Py_XDECREF(capi);
        capi = capi_of(&blas_module, "scipy.linalg.cython_blas");
        blas_dgemm = (dgemm_fn)lapack_routine(capi, "dgemm");
        Py_XDECREF(capi);
    }
    if (lapack_dsyevr && lapack_dgesdd && blas_dgemm)
        return 1;
    PyErr_SetString(PyExc_RuntimeError,
                    "riemsvd._steps: LAPACK's dsyevr and dgesdd and BLAS's dgemm were not found in scipy");
    return 0;
}

/* a residual r relative to s0, sigma_1: 0/0 = 0 (a zero matrix is solved exactly) and r/0 = inf */
static double relative(double r, double s0)
{
    return s0 > 0.0 ? r / s0 : r > 0.0 ? (double)INFINITY : 0.0;
}

/* ||C y_i|| / s0 for t vectors y_i = y + i * step (C's rows against them: their entries as many as C's
 * columns): the relative residuals of Ritz triplets, 0/0 = 0 and r/0 = inf, one row's as numpy's abs
 * takes it (no square to underflow) */
static void look_residuals(const Array *c, const double *y, Py_ssize_t step, Py_ssize_t t, double s0, double *rel)
{
    const double *cb = c->view.buf;
    for (Py_ssize_t i = 0; i < t; i++) {
        const double *yi = y + i * step;
        double res2 = 0.0, cy1 = 0.0;
        for (Py_ssize_t r = 0; r < c->rows; r++) {
            double cy = 0.0;
            for (Py_ssize_t l = 0; l < c->cols; l++)
                cy += cb[r * c->rs + l] * yi[l];
            res2 += cy * cy;
            cy1 = cy;
        }
        double res = c->rows == 1 ? fabs(cy1) : sqrt(res2);
        rel[i] = relative(res, s0);
    }
}

/* a look's arguments (h, c, t, then four arrays, the outputs: `names`) taken into b, LAPACK found;
 * -1 with the exception set */
static int take_look(PyObject *args, const char **names, Array *b, Py_ssize_t *t)
{
    PyObject *o[6];
    if (!PyArg_ParseTuple(args, "OOnOOOO", &o[0], &o[1], t, &o[2], &o[3], &o[4], &o[5]) || !find_lapack())
        return -1;
    return take_all(o, b, names, 0, 6, 0x3Cu); /* the outputs written, H and C read */
}

/* estimate(h, c, t, y, s, rel, slack) -> found: riemsvd._subspace._estimate for one matrix in one call
 * (its Python took 55 us of each estimate's 87 in solves at 2000x1000, cold after the pass; dsyevr
 * the rest). h (pu x pv) and c (w x pu) row-major float64 with contiguous rows; the top t (< pu)
 * eigenpairs of H H^T and the t + 1st eigenvalue, by dsyevr as scipy's wrapper calls it (upper
 * triangle, abstol 0, the least workspace): y (pu x t, C order) the eigenvectors, descending; s the
 * square roots of the eigenvalues (0 below 0); rel ||C y_i|| / s_0 (0/0 = 0, r/0 = inf); slack
 * sqrt(2) ||C||_F angle_i / max(s_0, tiny), angle_i = 4 pu eps lam_0 / max(gap_i, 2 pu eps lam_0 + tiny), gap_i
 * the distance from lam_i to the next eigenvalue (for i > 0 the lesser of it and the previous one's).
 * Returns 1, or 0 where dsyevr failed or found other than t + 1 eigenvalues, or a value or the slack
 * is not finite (the caller's exact SVD decides); -1 with an exception where LAPACK was not found. */
static PyObject *estimate(PyObject *self, PyObject *args)
{
    Py_ssize_t t;
    Array b[6];
    const char *names[6] = {"h", "c", "y", "s", "rel", "slack"};
    if (take_look(args, names, b, &t) < 0)
        return NULL;
    dsyevr_fn dsyevr = lapack_dsyevr;
    const Array *h = &b[0], *c = &b[1], *y = &b[2], *sv = &b[3], *rv = &b[4], *kv = &b[5];
    Py_ssize_t pu = h->rows, pv = h->cols, w = c->rows;
    PyObject *result = NULL;
    if (rows_f64(h, "h") < 0 || rows_f64(c, "c") < 0 || rows_f64(y, "y") < 0 || vector_f64(sv, "s") < 0 ||
        vector_f64(rv, "rel") < 0 || vector_f64(kv, "slack") < 0)
        goto done;
    if (t < 1 || t >= pu || pu > INT_MAX / 32 || c->cols != pu || y->rows != pu || y->cols != t || sv->rows != t ||
        rv->rows != t || kv->rows != t) {
        out_of_range("t or the shapes");
        goto done;
    }
    int n = (int)pu, il = n - (int)t, iu = n, m = 0, lwork = 26 * n, liwork = 10 * n, info = 0;
    double vl = 0.0, vu = 1.0, abstol = 0.0;
    size_t doubles = (size_t)n * (size_t)n + (size_t)n + (size_t)n * (size_t)(t + 1) + (size_t)lwork;
    double *hh = PyMem_Malloc(doubles * sizeof(double));
    int *ints = PyMem_Malloc((size_t)(2 * n + liwork) * sizeof(int));
    if (!hh || !ints) {
        PyMem_Free(hh);
        PyMem_Free(ints);
        PyErr_NoMemory();
        goto done;
    }
    double *lam = hh + (size_t)n * n, *z = lam + n, *work = z + (size_t)n * (t + 1);
    const double *hb = h->view.buf, *cb = c->view.buf;
    for (Py_ssize_t j = 0; j < pu; j++) /* H H^T's upper triangle, column-major */
        for (Py_ssize_t i = 0; i <= j; i++) {
            double sum = 0.0;
            for (Py_ssize_t l = 0; l < pv; l++)
                sum += hb[i * h->rs + l] * hb[j * h->rs + l];
            hh[i + j * pu] = sum;
        }
    char jobz = 'V', range = 'I', uplo = 'U';
    dsyevr(&jobz, &range, &uplo, &n, hh, &n, &vl, &vu, &il, &iu, &abstol, &m, lam, z, &n, ints, work, &lwork,
           ints + 2 * n, &liwork, &info);
    int found = info == 0 && m == (int)t + 1;
    for (Py_ssize_t i = 0; found && i <= t; i++)
        found = isfinite(lam[i]);
    if (found) {
        /* descending: eigenvalue i is lam[t - i], its vector z's column t - i */
        double *yb = y->view.buf, *s = sv->view.buf, *rel = rv->view.buf, *slack = kv->view.buf;
        double top = lam[t], perturbation = 4.0 * (double)pu * DBL_EPSILON * top, c2 = 0.0, before = 0.0;
        for (Py_ssize_t r = 0; r < w; r++)
            for (Py_ssize_t l = 0; l < pu; l++)
                c2 += cb[r * c->rs + l] * cb[r * c->rs + l];
        double s0 = sqrt(top > 0.0 ? top : 0.0), cnorm = sqrt(c2);
        for (Py_ssize_t i = 0; i < t; i++)
            for (Py_ssize_t l = 0; l < pu; l++)
                yb[l * y->rs + i] = z[(t - i) * pu + l];
        look_residuals(c, z + t * pu, -pu, t, s0, rel); /* z's columns t, t - 1, ..., 1 */
        for (Py_ssize_t i = 0; i < t; i++) {
            double gap = lam[t - i] - lam[t - i - 1];
            s[i] = sqrt(lam[t - i] > 0.0 ? lam[t - i] : 0.0);
            double least = i > 0 && before < gap ? before : gap; /* the previous one's gap, as it was */
            before = gap;
            double angle = perturbation / fmax(least, 0.5 * perturbation + DBL_MIN);
            slack[i] = M_SQRT2 * cnorm * angle / fmax(s0, DBL_MIN);
            found = found && isfinite(slack[i]);
        }
    }
    PyMem_Free(hh);
    PyMem_Free(ints);
    result = PyBool_FromLong(found);
done:
    release(b, 6);
    return result;
}

/* svd_look(h, c, t, y, s, z, rel) -> done: riemsvd._subspace._ritz for one matrix in one call: H =
 * Y diag(s) Z^T by LAPACK's dgesdd as scipy's wrapper calls it (thin vectors, the least workspace) and
 * rel the relative residuals ||C y_i|| / s_0 of the top t (<= min(pu, pv)) triplets. h (pu x pv) and
 * c (w x pu) row-major float64 with contiguous rows; y (pu x r) column-major (Fortran order), z
 * (pv x r) row-major (C order: Z^T as dgesdd writes it), s (r), rel (t), r = min(pu, pv). Returns
 * False where dgesdd failed (NaN in H) or s_0 or C is not finite, with y, s, z spoiled: the caller
 * raises. Its numpy calls had taken 33 us beside dgesdd's 80 in solves at 2000x1000 (k = 1). */
static PyObject *svd_look(PyObject *self, PyObject *args)
{
    Py_ssize_t t;
    Array b[6];
    const char *names[6] = {"h", "c", "y", "s", "z", "rel"};
    if (take_look(args, names, b, &t) < 0)
        return NULL;
    const Array *h = &b[0], *c = &b[1], *y = &b[2], *sv = &b[3], *z = &b[4], *rv = &b[5];
    Py_ssize_t pu = h->rows, pv = h->cols, r = pu < pv ? pu : pv;
    PyObject *result = NULL;
    if (rows_f64(h, "h") < 0 || rows_f64(c, "c") < 0 || rows_f64(z, "z") < 0 || vector_f64(sv, "s") < 0 ||
        vector_f64(rv, "rel") < 0)
        goto done;
    if (y->kind != 'd' || y->view.ndim != 2 || (y->rs != 1 && y->rows > 1)) {
        PyErr_SetString(PyExc_TypeError, "riemsvd._steps: y must be a float64 array in Fortran order");
        goto done;
    }
    /* LAPACK's C API takes int sizes: dgesdd's workspace, 4 r^2 + 9 r + max(pu, pv), must be one */
    if (r < 1 || t < 0 || t > r || r > 16384 || pu > INT_MAX / 4 || pv > INT_MAX / 4 || c->cols != pu ||
        y->rows != pu || y->cols != r || z->rows != pv || z->cols != r || z->rs != r || sv->rows != r ||
        rv->rows != t || (y->cols > 1 && y->cs != pu)) {
        out_of_range("t or the shapes");
        goto done;
    }
    int m = (int)pu, n = (int)pv, mn = (int)r, mx = m > n ? m : n, info = 0;
    int lwork = 4 * mn * mn + mx + 9 * mn; /* scipy's default for thin vectors */
    double *a = PyMem_Malloc(((size_t)m * (size_t)n + (size_t)lwork) * sizeof(double));
    int *iwork = PyMem_Malloc(8 * (size_t)mn * sizeof(int));
    if (!a || !iwork) {
        PyMem_Free(a);
        PyMem_Free(iwork);
        PyErr_NoMemory();
        goto done;
    }
    const double *hb = h->view.buf, *cb = c->view.buf;
    for (Py_ssize_t j = 0; j < pv; j++) /* H column-major, as LAPACK reads it */
        for (Py_ssize_t i = 0; i < pu; i++)
            a[i + j * pu] = hb[i * h->rs + j];
    double *s = sv->view.buf, *yb = y->view.buf;
    char jobz = 'S';
    lapack_dgesdd(&jobz, &m, &n, a, &m, s, yb, &m, z->view.buf, &mn, a + (size_t)m * n, &lwork, iwork, &info);
    int ok = info == 0 && isfinite(s[0]);
    for (Py_ssize_t i = 0; ok && i < c->rows * c->cols; i++)
        ok = isfinite(cb[(i / c->cols) * c->rs + i % c->cols]);
    if (ok)
        look_residuals(c, yb, pu, t, s[0], rv->view.buf);
    PyMem_Free(a);
    PyMem_Free(iwork);
    result = PyBool_FromLong(ok);
done:
    release(b, 6);
    return result;
}

/* out (rows x k, row-major) = B[:, :p] Y[:p, :k] by BLAS's dgemm (as numpy's matmul made it: the
 * entries' rounding is the check's, down to an error of m eps in sigma for a matrix of equal rows), B
 * column-major float64 (columns ld apart), Y row- or column-major: as column-major out^T = Y^T B^T */
static void combine(const double *B, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t p, const Array *y, Py_ssize_t k,
                    double *out)
{
    char ty = y->cs == 1 ? 'N' : 'T', tb = 'T';
    int m = (int)k, n = (int)rows, kk = (int)p, lda = (int)(y->cs == 1 ? y->rs : y->cs), ldc = (int)k;
    int ldb = p > 1 ? (int)ld : n; /* one column of B: any stride */
    if (ty == 'N' && lda < m)
        lda = m; /* one row of Y (p = 1): any stride */
    if (ty == 'T' && lda < kk)
        lda = kk; /* one column of Y (k = 1) */
    double one = 1.0, zero = 0.0;
    blas_dgemm(&ty, &tb, &m, &n, &kk, &one, (double *)y->view.buf, &lda, (double *)B, &ldb, &zero, out, &ldc);
}

/* kept_products(ubuf, avbuf, vbuf, atubuf, pu, pv, y, z, u, v, av, atu) -> None: the top k Ritz
 * vectors of one float64 matrix and their products from those the iteration kept, in one call
 * (riemsvd._subspace._vectors: its four numpy products): u = U y, A^T u = ATU y (U, ATU: pu columns),
 * v = V z, A v = AV z (V, AV: pv columns), the bases column-major with contiguous columns, y (pu x k)
 * and z (pv x k) in C or Fortran order; u, av (m x k) and v, atu (n x k) written row-major. */
static PyObject *kept_products(PyObject *self, PyObject *args)
{
    PyObject *o[10];
    Py_ssize_t pu, pv;
    if (!PyArg_ParseTuple(args, "OOOOnnOOOOOO", &o[0], &o[1], &o[2], &o[3], &pu, &pv, &o[4], &o[5], &o[6], &o[7],
                          &o[8], &o[9]) ||
        !find_lapack())
        return NULL;
    Array b[10];
    const char *names[10] = {"ubuf", "avbuf", "vbuf", "atubuf", "y", "z", "u", "v", "av", "atu"};
    if (take_all(o, b, names, 0, 10, 0x3C0u) < 0) /* the outputs written, the rest read */
        return NULL;
    const Array *U = &b[0], *AV = &b[1], *V = &b[2], *ATU = &b[3], *y = &b[4], *z = &b[5];
    Py_ssize_t m = U->rows, n = V->rows, k = y->cols;
    PyObject *result = NULL;
    for (int i = 0; i < 4; i++)
        if (columns(&b[i], 'd', names[i]) < 0)
            goto done;
    for (int i = 4; i < 10; i++) {
        int outputs = i >= 6; /* row-major and contiguous; y and z in either order */
        if (b[i].kind != 'd' || b[i].view.ndim != 2 || (outputs && (b[i].rs != k || b[i].cs != 1)) ||
            (b[i].rs != 1 && b[i].cs != 1)) {
            PyErr_Format(PyExc_TypeError, "riemsvd._steps: %s must be a 2-D float64 array in %s order", names[i],
                         outputs ? "C" : "C or Fortran");
            goto done;
        }
        if (aligned(&b[i], names[i]) < 0)
            goto done;
    }
    if (k < 1 || pu < 1 || pv < 1 || AV->rows != m || ATU->rows != n || pu > U->cols || pu > ATU->cols ||
        pv > V->cols || pv > AV->cols || y->rows != pu || z->rows != pv || z->cols != k || b[6].rows != m ||
        b[6].cols != k || b[7].rows != n || b[7].cols != k || b[8].rows != m || b[8].cols != k || b[9].rows != n ||
        b[9].cols != k || m > INT_MAX || n > INT_MAX || k > INT_MAX || y->rs > INT_MAX || y->cs > INT_MAX ||
        z->rs > INT_MAX || z->cs > INT_MAX || U->cs > INT_MAX || AV->cs > INT_MAX || V->cs > INT_MAX ||
        ATU->cs > INT_MAX || /* BLAS's int sizes; columns apart by their length at least: */
        (pu > 1 && (U->cs < m || ATU->cs < n)) || (pv > 1 && (V->cs < n || AV->cs < m))) {
        out_of_range("pu, pv or the shapes");
        goto done;
    }
    combine(U->view.buf, U->cs, m, pu, y, k, b[6].view.buf);
    combine(V->view.buf, V->cs, n, pv, z, k, b[7].view.buf);
    combine(AV->view.buf, AV->cs, m, pv, z, k, b[8].view.buf);
    combine(ATU->view.buf, ATU->cs, n, pu, y, k, b[9].view.buf);
    Py_INCREF(Py_None);
    result = Py_None;
done:
    release(b, 10);
    return result;
}

/* finish(u, v, av, atu, floor, drift, u_out, v_out, s, errors, each) -> residual: riemsvd._subspace.verify's
 * arithmetic for one matrix in one call (its twenty numpy and torch calls took 70-180 us a check,
 * cold after the passes: 384x384 to 2000x1000, k = 1), in the products' dtype as numpy makes it. u, av
 * (m x k) and v, atu (n x k): row-major float32 or float64 arrays, the products A v and A^T u of the
 * vectors' kind or float64 (a float32 solve's check by float64 products: the vectors widened, as numpy
 * widens them). For x_i = (u_i, v_i)/sqrt(2) as it is, x2_i = ||x_i||^2: s_i = u_i^T A v_i / x2_i, a
 * negative one's u_i negated and s_i = |s_i|; the triplets in descending s (stable), their vectors
 * written into u_out and v_out (row-major, the vectors' kind); errors_i = hypot(nu_i, nv_i)
 * sqrt(0.5 / x2_i) + (floor + drift) s_0 with nu_i = ||A v_i - s_i u_i||, nv_i = ||A^T u_i - s_i v_i||
 * (s_i rounded to the vectors' dtype), each_i = max(nu_i, nv_i); s, errors and each float64 (k), in
 * the triplets' order. Returns max_i each_i / s_0 + drift (0/0 = 0, r/0 = inf; no drift where s_0 = 0). */
static PyObject *finish(PyObject *self, PyObject *args)
{
    PyObject *o[9];
    double floor, drift;
    if (!PyArg_ParseTuple(args, "OOOOddOOOOO", &o[0], &o[1], &o[2], &o[3], &floor, &drift, &o[4], &o[5], &o[6],
                          &o[7], &o[8]))
        return NULL;
    Array b[9];
    const char *names[9] = {"u", "v", "av", "atu", "u_out", "v_out", "s", "errors", "each"};
    if (take_all(o, b, names, 0, 9, 0x1F0u) < 0) /* the outputs written, the rest read */
        return NULL;
    Py_ssize_t m = b[0].rows, n = b[1].rows, k = b[0].cols;
    char kind = b[0].kind;
    int widened = kind == 'f' && b[2].kind == 'd'; /* float32 vectors, float64 products */
    PyObject *result = NULL;
    for (int i = 0; i < 6; i++) {
        char want = widened && (i == 2 || i == 3) ? 'd' : kind;
        if (b[i].kind != want || b[i].view.ndim != 2 || b[i].cols != k || b[i].rs != k || b[i].cs != 1 ||
            b[i].rows != (i % 2 ? n : m)) {
            PyErr_Format(PyExc_TypeError, "riemsvd._steps: %s must be a 2-D array in C order of k columns and "
                         "u's dtype (av and atu: or float64), m rows for u, av and u_out, n for the others",
                         names[i]);
            goto done;
        }
        if (aligned(&b[i], names[i]) < 0)
            goto done;
    }
    if (vector_f64(&b[6], "s") < 0 || vector_f64(&b[7], "errors") < 0 || vector_f64(&b[8], "each") < 0)
        goto done;
    if (k < 1 || b[6].rows != k || b[7].rows != k || b[8].rows != k) {
        out_of_range("k");
        goto done;
    }
    /* finish_core's work, then (widened) the vectors in and out as float64: 2 (m + n) k doubles */
    if (widened && (size_t)(m + n) > SIZE_MAX / 16 / sizeof(double) / (size_t)k) {
        PyErr_NoMemory();
        goto done;
    }
    size_t wide = widened ? 2 * (size_t)(m + n) * (size_t)k : 0;
    /* 5k doubles, the vectors widened, finish_core's sums (6 + SUM_DEPTH) k (doubles hold a float32's
     * too), and k indices */
    size_t sums = (6 + SUM_DEPTH) * (size_t)k;
    double *work = PyMem_Malloc((5 * (size_t)k + wide + sums) * sizeof(double) + (size_t)k * sizeof(Py_ssize_t));
    if (!work) {
        PyErr_NoMemory();
        goto done;
    }
    double *sum_room = work + 5 * k + wide;
    Py_ssize_t *order = (Py_ssize_t *)(sum_room + sums);
    double *s = b[6].view.buf, *errors = b[7].view.buf, *each = b[8].view.buf, worst;
    if (widened) {
        double *u = work + 5 * k, *v = u + m * k, *u_out = v + n * k, *v_out = u_out + m * k;
        const float *uf = b[0].view.buf, *vf = b[1].view.buf;
        for (Py_ssize_t i = 0; i < m * k; i++)
            u[i] = (double)uf[i];
        for (Py_ssize_t i = 0; i < n * k; i++)
            v[i] = (double)vf[i];
        worst = finish_core_d(u, v, b[2].view.buf, b[3].view.buf, m, n, k, floor, drift, u_out, v_out, s, errors,
                              each, work, order, 1, sum_room);
        float *uo = b[4].view.buf, *vo = b[5].view.buf; /* exact: the columns reordered, perhaps negated */
        for (Py_ssize_t i = 0; i < m * k; i++)
            uo[i] = (float)u_out[i];
        for (Py_ssize_t i = 0; i < n * k; i++)
            vo[i] = (float)v_out[i];
    } else if (kind == 'd')
        worst = finish_core_d(b[0].view.buf, b[1].view.buf, b[2].view.buf, b[3].view.buf, m, n, k, floor, drift,
                              b[4].view.buf, b[5].view.buf, s, errors, each, work, order, 0, sum_room);
    else
        worst = finish_core_s(b[0].view.buf, b[1].view.buf, b[2].view.buf, b[3].view.buf, m, n, k, floor, drift,
                              b[4].view.buf, b[5].view.buf, s, errors, each, work, order, 0,
                              (float *)sum_room);
    PyMem_Free(work);
    /* the drift is relative to s_0 too: none where s_0 = 0 (a zero A's kept products are exactly 0) */
    result = PyFloat_FromDouble(relative(worst, s[0]) + (s[0] > 0.0 ? drift : 0.0));
done:
    release(b, 8);
    return result;
}

static PyMethodDef methods[] = {
    {"gk_left", gk_left, METH_VARARGS, "The left half of a Golub-Kahan step (see _steps.c)."},
    {"gk_right", gk_right, METH_VARARGS, "The right half of a Golub-Kahan step (see _steps.c)."},
    {"reflect", reflect, METH_VARARGS, "A reflection of F that makes F d its first column (see _steps.c)."},
    {"orth", orth, METH_VARARGS, "A column less its parts along a basis, normalized (see _steps.c)."},
    {"wake", wake, METH_VARARGS, "Wakes the pass's workers for a pass soon."},
    {"max_abs", max_abs, METH_VARARGS, "max |x_i| of a contiguous float array, NaN or Inf where it holds one."},
    {"gk_fused", gk_fused, METH_VARARGS, "A Golub-Kahan step's left half and A^T product in one pass over A."},
    {"gk_run", gk_run, METH_VARARGS, "Golub-Kahan steps of gk_fused and gk_right in one call."},
    {"gk_sparse_run", gk_sparse_run, METH_VARARGS, "Golub-Kahan steps of a sparse A in one call."},
    {"estimate", estimate, METH_VARARGS, "A look's estimate from the top eigenpairs of H H^T."},
    {"svd_look", svd_look, METH_VARARGS, "A look's SVD of H and residuals of its top triplets."},
    {"kept_products", kept_products, METH_VARARGS, "The top Ritz vectors and their kept products, one matrix."},
    {"finish", finish, METH_VARARGS, "A check's arithmetic on the top Ritz triplets, one matrix."},
    {"widened_both", widened_both, METH_VARARGS, "A x and A^T y in float64 for a float32 A, one pass."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "riemsvd._steps",
                                    "The CPU solver's Gram-Schmidt and Golub-Kahan half steps.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__steps(void)
{
#if defined(__GNUC__) && defined(__x86_64__)
    __builtin_cpu_init();
    avx2 = __builtin_cpu_supports("avx2") != 0;
#endif
    return PyModule_Create(&module);
}
