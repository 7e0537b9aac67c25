/* One dtype's kernels, included by _steps.c twice: with T double and NAME(x) x##_d, then with T
 * float and NAME(x) x##_s (and VEC, SIMD(op) the AVX2 vector type and intrinsics of that dtype).
 * Vectors are columns of column-major buffers (ld: the distance between columns, in elements); dot
 * products accumulate in double whatever T is. */

/* ||x||_2 of x[0:n], in double: a sum of squares, redone scaled by max|x_i| where it may have lost
 * digits to underflow or overflow (entries near 1e-160 in double); NaN where x holds one. */
VECTORIZED static double NAME(norm)(const T *x, Py_ssize_t n)
{
    double s = 0.0, top = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = (double)x[i];
        s += v * v;
    }
    if (s > SAFE_LOW && s < SAFE_HIGH)
        return sqrt(s);
    if (s != s)
        return s;
    for (Py_ssize_t i = 0; i < n; i++) {
        double a = fabs((double)x[i]);
        if (a > top)
            top = a;
    }
    if (top == 0.0 || isinf(top))
        return top;
    s = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = (double)x[i] / top;
        s += v * v;
    }
    return top * sqrt(s);
}

/* x -= B coef over the first q columns of B (column-major, ld between columns), four columns a pass
 * over x; x may be a later column of the same buffer as B. */
VECTORIZED static void NAME(less_along)(const T *B, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t q,
                                        const double *coef, T *x)
{
    Py_ssize_t j = 0;
    for (; j + 4 <= q; j += 4) {
        const T *b0 = B + j * ld, *b1 = b0 + ld, *b2 = b1 + ld, *b3 = b2 + ld;
        double c0 = coef[j], c1 = coef[j + 1], c2 = coef[j + 2], c3 = coef[j + 3];
        for (Py_ssize_t i = 0; i < rows; i++)
            x[i] = (T)((double)x[i] - (c0 * b0[i] + c1 * b1[i] + c2 * b2[i] + c3 * b3[i]));
    }
    for (; j < q; j++) {
        const T *b = B + j * ld;
        double c = coef[j];
        for (Py_ssize_t i = 0; i < rows; i++)
            x[i] = (T)((double)x[i] - c * b[i]);
    }
}

/* coef[0:q] = B^T x and x -= B coef, B the first q columns: classical Gram-Schmidt's pass. Four
 * columns a pass over x, as BLAS's gemv does (one a pass took 1.3x the time at 4096 rows and 32
 * columns). x may be a later column of the same buffer as B. */
VECTORIZED static void NAME(project_out)(const T *B, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t q, T *x,
                              double *coef)
{
    Py_ssize_t j = 0;
    for (; j + 4 <= q; j += 4) {
        const T *b0 = B + j * ld, *b1 = b0 + ld, *b2 = b1 + ld, *b3 = b2 + ld;
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
        for (Py_ssize_t i = 0; i < rows; i++) {
            double xi = (double)x[i];
            s0 += (double)b0[i] * xi;
            s1 += (double)b1[i] * xi;
            s2 += (double)b2[i] * xi;
            s3 += (double)b3[i] * xi;
        }
        coef[j] = s0;
        coef[j + 1] = s1;
        coef[j + 2] = s2;
        coef[j + 3] = s3;
    }
    for (; j < q; j++) {
        const T *b = B + j * ld;
        double s = 0.0;
        for (Py_ssize_t i = 0; i < rows; i++)
            s += (double)b[i] * (double)x[i];
        coef[j] = s;
    }
    NAME(less_along)(B, ld, rows, q, coef, x);
}

/* x less its parts along the first q columns of B, normalized, in place: first the nk coefficients
 * `known` along columns j.. that the recurrence gives in exact arithmetic, then classical
 * Gram-Schmidt with a second pass where the first removed more than 1 - 1/sqrt(2) of what was left
 * (DGKS). coef[0:q] receives x's coefficients, known ones included; `again` is room for q more. With
 * `subtracted`, the caller took the known part off x already, and coef receives the Gram-Schmidt's
 * coefficients alone (the caller's fused step needs them whole: added to the known ones, their
 * digits below the known ones' rounding were lost). Returns the norm left, or LOST where x held only
 * rounding noise or is not finite (x is then spoiled). */
static double NAME(orth)(const T *B, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t q, T *x,
                         Py_ssize_t j, const double *known, Py_ssize_t nk, int subtracted, double *coef,
                         double *again, double eps)
{
    double k2 = 0.0, n1;
    for (Py_ssize_t t = 0; t < nk; t++) {
        const T *b = B + (j + t) * ld;
        double kc = known[t];
        k2 += kc * kc;
        if (!subtracted)
            for (Py_ssize_t i = 0; i < rows; i++)
                x[i] = (T)((double)x[i] - kc * b[i]);
    }
    if (q == 0) {
        n1 = NAME(norm)(x, rows);
        if (!(n1 > 4 * eps * n1)) /* zero, or not finite */
            return LOST;
    }
    else {
        NAME(project_out)(B, ld, rows, q, x, coef);
        n1 = NAME(norm)(x, rows);
        double before = hypot(n1, norm_d(coef, q));
        if (n1 < DGKS * before) {
            NAME(project_out)(B, ld, rows, q, x, again);
            for (Py_ssize_t t = 0; t < q; t++)
                coef[t] += again[t];
            double n2 = NAME(norm)(x, rows);
            if (!(n2 > DGKS * n1))
                return LOST;
            n1 = n2;
        }
        if (!(n1 > 4 * eps * sqrt(before * before + k2)))
            return LOST;
        for (Py_ssize_t t = 0; t < nk && !subtracted; t++)
            coef[j + t] += known[t];
    }
    T scale = (T)(1.0 / n1);
    for (Py_ssize_t i = 0; i < rows; i++)
        x[i] *= scale;
    return n1;
}

/* One pass over rows [lo, hi) of A (row i at a + i * rs, n contiguous entries) for a Golub-Kahan
 * step: t_i = a_i . v (A f as A returns it), w_i = t_i less the recurrence's known part
 * sum_l known[l] U[i, j + l] (U column-major, ld between columns), and z += w_i a_i, so that z ends as
 * A^T w for these rows. Four rows a panel, and one loop over the columns per panel that makes the dot
 * products of a panel and the update of z by the panel before it: each row is read from memory once,
 * its second use finds it in the cache, and the stream from memory never stops for the update. z (n
 * entries) is summed into. Dot products in T, as BLAS's gemv. */
VECTORIZED static void NAME(gk_rows)(const T *a, Py_ssize_t rs, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t n,
                                     const T *v, const T *U, Py_ssize_t ld, Py_ssize_t j, const double *known,
                                     Py_ssize_t nk, T *t, T *w, T *z)
{
    /* the panel before (p, weights e; e = 0 before the first) and this one (r) */
    const T *p0 = a + lo * rs, *p1 = p0, *p2 = p0, *p3 = p0;
    T e0 = 0, e1 = 0, e2 = 0, e3 = 0;
    for (Py_ssize_t i = lo; i < hi; i += 4) {
        Py_ssize_t r = hi - i < 4 ? hi - i : 4;
        const T *r0 = a + i * rs, *r1 = r0 + (r > 1 ? rs : 0), *r2 = r0 + (r > 2 ? 2 * rs : 0),
                *r3 = r0 + (r > 3 ? 3 * rs : 0); /* a short last panel repeats its first row, weighted 0 */
        T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (Py_ssize_t c = 0; c < n; c++) {
            T x = v[c];
            s0 += r0[c] * x;
            s1 += r1[c] * x;
            s2 += r2[c] * x;
            s3 += r3[c] * x;
            z[c] += e0 * p0[c] + e1 * p1[c] + e2 * p2[c] + e3 * p3[c];
        }
        T s[4] = {s0, s1, s2, s3}, d[4] = {0, 0, 0, 0};
        for (Py_ssize_t q = 0; q < r; q++) {
            double g = 0.0;
            for (Py_ssize_t l = 0; l < nk; l++)
                g += known[l] * (double)U[(j + l) * ld + i + q];
            t[i + q] = s[q];
            d[q] = w[i + q] = (T)((double)s[q] - g);
        }
        p0 = r0, p1 = r1, p2 = r2, p3 = r3;
        e0 = d[0], e1 = d[1], e2 = d[2], e3 = d[3];
    }
    for (Py_ssize_t c = 0; c < n; c++)
        z[c] += e0 * p0[c] + e1 * p1[c] + e2 * p2[c] + e3 * p3[c];
}

/* z += A^T x over rows [lo, hi) of A (as above): the product itself, where the step's own cannot be
 * used. */
VECTORIZED static void NAME(at_rows)(const T *a, Py_ssize_t rs, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t n,
                                     const T *x, T *z)
{
    for (Py_ssize_t i = lo; i < hi; i++) {
        const T *r0 = a + i * rs;
        T xi = x[i];
        for (Py_ssize_t c = 0; c < n; c++)
            z[c] += xi * r0[c];
    }
}

/* A sparse A's products, one column, from compressed rows: row i's entries data[k] at columns ind[k],
 * k in [ptr[i], ptr[i + 1]), of A (its CSR arrays) or of A^T (a CSC A's). gather: out[i] = row i . x
 * for each of `rows` rows, summed in double (A x by A's rows). scatter: out = sum_i y_i row_i over
 * `rows` rows into `cols` entries, in T as scipy's csc_matvec adds (A^T y by A's rows). I: the index
 * type, int32 or int64. */
#define SPARSE_PRODUCTS(I, SUF)                                                                                 \
    static void NAME(gather_##SUF)(const I *ptr, const I *ind, const T *data, Py_ssize_t rows, const T *x,      \
                                   T *out)                                                                      \
    {                                                                                                           \
        for (Py_ssize_t i = 0; i < rows; i++) {                                                                 \
            double s = 0.0;                                                                                     \
            for (I k = ptr[i]; k < ptr[i + 1]; k++)                                                             \
                s += (double)data[k] * (double)x[ind[k]];                                                       \
            out[i] = (T)s;                                                                                      \
        }                                                                                                       \
    }                                                                                                           \
    static void NAME(scatter_##SUF)(const I *ptr, const I *ind, const T *data, Py_ssize_t rows,                 \
                                    Py_ssize_t cols, const T *y, T *out)                                        \
    {                                                                                                           \
        memset(out, 0, (size_t)cols * sizeof(T));                                                               \
        for (Py_ssize_t i = 0; i < rows; i++) {                                                                 \
            T yi = y[i];                                                                                        \
            for (I k = ptr[i]; k < ptr[i + 1]; k++)                                                             \
                out[ind[k]] += data[k] * yi;                                                                    \
        }                                                                                                       \
    }
SPARSE_PRODUCTS(int32_t, i32)
SPARSE_PRODUCTS(int64_t, i64)
#undef SPARSE_PRODUCTS

/* F <- F - tau (F a) a^T for F the w columns of a column-major buffer from F0 (ld between columns),
 * a (w) float64: a reflection applied as a rank-one update in place, F a summed in float64. */
VECTORIZED static void NAME(reflect_columns)(T *F0, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t w,
                                             const double *a, double tau)
{
    for (Py_ssize_t i = 0; i < rows; i++) {
        double y = 0.0;
        for (Py_ssize_t j = 0; j < w; j++)
            y += (double)F0[j * ld + i] * a[j];
        y *= tau;
        for (Py_ssize_t j = 0; j < w; j++)
            F0[j * ld + i] = (T)((double)F0[j * ld + i] - y * a[j]);
    }
}

#ifdef MAX_ABS_AVX2
/* max |x_i| over the first *done entries of x[0:n] (a whole number of passes over 4 vectors), or -1
 * where one of them is NaN or infinite. Four independent maxima, at memory speed; MAXPD and MAXPS
 * return their second operand where the first is NaN, so NaN never wins, and the comparison beside
 * them flags it and Inf. */
__attribute__((target("avx2"))) static double NAME(max_abs_avx2)(const T *x, Py_ssize_t n, Py_ssize_t *done)
{
    enum { LANES = sizeof(VEC) / sizeof(T) };
    const VEC sign = SIMD(set1)(-0.0), inf = SIMD(set1)(INFINITY);
    VEC m[4] = {SIMD(setzero)(), SIMD(setzero)(), SIMD(setzero)(), SIMD(setzero)()};
    VEC special = SIMD(setzero)();
    Py_ssize_t i = 0;
    for (; i + 4 * LANES <= n; i += 4 * LANES)
        for (int j = 0; j < 4; j++) {
            VEC v = SIMD(andnot)(sign, SIMD(loadu)(x + i + LANES * j));
            m[j] = SIMD(max)(v, m[j]);
            special = SIMD(or)(special, SIMD(cmp)(v, inf, _CMP_NLT_UQ));
        }
    T lanes[LANES], top = 0;
    SIMD(storeu)(lanes, SIMD(max)(SIMD(max)(m[0], m[1]), SIMD(max)(m[2], m[3])));
    for (int j = 0; j < LANES; j++)
        top = lanes[j] > top ? lanes[j] : top;
    *done = i;
    return SIMD(movemask)(special) ? -1.0 : (double)top;
}
#endif

/* max |x_i| over x[0:n]: NaN where x holds one, Inf where it holds an infinity and no NaN (what
 * torch.aminmax answers; it took 3.9x this one's time at 384x384 float64 and 2.0x at 4000x2000). The
 * vector pass where it runs, then the rest one entry at a time; then, only where something was not
 * finite, a pass that says NaN or Inf. */
static double NAME(max_abs)(const T *x, Py_ssize_t n)
{
    double top = 0.0;
    Py_ssize_t i = 0;
#ifdef MAX_ABS_AVX2
    if (avx2)
        top = NAME(max_abs_avx2)(x, n, &i);
#endif
    for (; i < n && top >= 0; i++) {
        double v = fabs((double)x[i]);
        top = !(v < INFINITY) ? -1.0 : v > top ? v : top;
    }
    if (top >= 0)
        return top;
    for (i = 0; i < n; i++)
        if (x[i] != x[i])
            return (double)NAN;
    return (double)INFINITY;
}

/* the k column sums over rows [lo, hi) of x_ij y_ij, or with `s` of (x_ij - s_j y_ij)^2 (rows k apart),
 * into out (k), each in T and pairwise, as numpy's are in blocks of their own (an error of log(rows)
 * eps, not rows eps: a matrix of equal rows, whose terms share their rounding, had sigma 3e-11 off at
 * 1536 x 384 in float64 from a loop's sum; a compensated sum the build's associative math may undo).
 * The rows are read in order, every column at once: a column at a time read a cache line a row for
 * each column, and a check of k = 50 triplets of a 100000 x 20000 sparse matrix took 172 ms of a
 * 1.1 s solve in this arithmetic (a new user's trial). `scratch`: room for SUM_DEPTH * k values, a
 * level's right half each. */
#ifndef SUM_DEPTH
#define SUM_DEPTH 64 /* levels of halving from 2^63 rows down to 8 */
#endif
static void NAME(column_sums)(const T *x, const T *y, const T *s, Py_ssize_t k, Py_ssize_t lo, Py_ssize_t hi,
                              T *out, T *scratch)
{
    Py_ssize_t i, j;
    if (hi - lo > 8) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        NAME(column_sums)(x, y, s, k, lo, mid, out, scratch + k);
        NAME(column_sums)(x, y, s, k, mid, hi, scratch, scratch + k);
        for (j = 0; j < k; j++)
            out[j] += scratch[j];
        return;
    }
    if (k == 1) { /* one column: a sum the build may vectorize along the rows (3x faster at m = 2000) */
        T sum = 0;
        for (i = lo; i < hi; i++) {
            T t = s ? x[i] - y[i] * s[0] : x[i] * y[i];
            sum += s ? t * t : t;
        }
        out[0] = sum;
        return;
    }
    for (j = 0; j < k; j++)
        out[j] = 0;
    for (i = lo; i < hi; i++) {
        const T *xi = x + i * k, *yi = y + i * k;
        if (s)
            for (j = 0; j < k; j++) {
                T t = xi[j] - yi[j] * s[j];
                out[j] += t * t;
            }
        else
            for (j = 0; j < k; j++)
                out[j] += xi[j] * yi[j];
    }
}

/* finish's arithmetic (see there) in T, as riemsvd._subspace.verify's numpy makes it (T the vectors'
 * dtype, or float64 for float32 vectors widened beside float64 products): u, av (m x k) and v, atu
 * (n x k) row-major; u_out, v_out the triplets' vectors in order; `work` 5k doubles, `order` k, `sums`
 * room for (6 + SUM_DEPTH) k values of T. With `single` each q_i is rounded to float32 first, as the
 * float32 vectors returned with it hold it. Writes each_i = max(nu_i, nv_i) in the triplets' order;
 * returns the largest. */
static double NAME(finish_core)(const T *u, const T *v, const T *av, const T *atu, Py_ssize_t m, Py_ssize_t n,
                                Py_ssize_t k, double floor, double drift, T *u_out, T *v_out, double *s,
                                double *errors, double *each, double *work, Py_ssize_t *order, int single,
                                T *sums)
{
    double *x2 = work, *nu = x2 + k, *nv = nu + k, *sv = nv + k, *sign = sv + k;
    T *uu = sums, *vv = uu + k, *uav = vv + k, *qt = uav + k, *ru = qt + k, *rv = ru + k, *scratch = rv + k;
    NAME(column_sums)(u, u, NULL, k, 0, m, uu, scratch);
    NAME(column_sums)(v, v, NULL, k, 0, n, vv, scratch);
    NAME(column_sums)(u, av, NULL, k, 0, m, uav, scratch);
    for (Py_ssize_t j = 0; j < k; j++) {
        x2[j] = 0.5 * ((double)uu[j] + (double)vv[j]);
        double q = (double)uav[j] / x2[j];
        /* the residuals of (u_j, q, v_j), q as the vectors' dtype holds it: a negative q's triplet
         * (-u_j, |q|, v_j) has the same */
        qt[j] = single ? (T)(float)q : (T)q;
        sv[j] = fabs(q);
        sign[j] = q < 0.0 ? -1.0 : 1.0;
        Py_ssize_t at = j; /* a stable insertion into the descending order */
        while (at > 0 && sv[order[at - 1]] < sv[j]) {
            order[at] = order[at - 1];
            at--;
        }
        order[at] = j;
    }
    NAME(column_sums)(av, u, qt, k, 0, m, ru, scratch);
    NAME(column_sums)(atu, v, qt, k, 0, n, rv, scratch);
    for (Py_ssize_t j = 0; j < k; j++) {
        nu[j] = (double)(T)sqrt((double)ru[j]);
        nv[j] = (double)(T)sqrt((double)rv[j]);
    }
    for (int side = 0; side < 2; side++) { /* the columns in order, a negative q's u negated */
        const T *x = side ? v : u;
        T *out = side ? v_out : u_out;
        for (Py_ssize_t i = 0, rows = side ? n : m; i < rows; i++)
            for (Py_ssize_t j = 0; j < k; j++)
                out[i * k + j] = side || sign[order[j]] > 0.0 ? x[i * k + order[j]] : -x[i * k + order[j]];
    }
    double s0 = sv[order[0]], worst = 0.0;
    for (Py_ssize_t j = 0; j < k; j++) {
        Py_ssize_t o = order[j];
        s[j] = sv[o];
        errors[j] = hypot(nu[o], nv[o]) * sqrt(0.5 / x2[o]) + (floor + drift) * s0;
        each[j] = fmax(nu[o], nv[o]);
        worst = fmax(worst, each[j]);
    }
    return worst;
}
