/* One dtype's kernels, included by _steps.c twice: with T double and NAME(x) x##_d, then with T
 * float and NAME(x) x##_s. Vectors are columns of column-major buffers (ld: the distance between
 * columns, in elements); dot products accumulate in double whatever T is. */

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
    for (j = 0; j + 4 <= q; j += 4) {
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

/* x less its parts along the first q columns of B, normalized, in place: first the nk coefficients
 * `known` along columns j.. that the recurrence gives in exact arithmetic, then classical
 * Gram-Schmidt with a second pass where the first removed more than 1 - 1/sqrt(2) of what was left
 * (DGKS). coef[0:q] receives x's coefficients, known ones included; `again` is room for q more.
 * Returns the norm left, or LOST where x held only rounding noise or is not finite (x is then
 * spoiled). */
static double NAME(orth)(const T *B, Py_ssize_t ld, Py_ssize_t rows, Py_ssize_t q, T *x,
                         Py_ssize_t j, const double *known, Py_ssize_t nk, double *coef,
                         double *again, double eps)
{
    double k2 = 0.0, n1;
    for (Py_ssize_t t = 0; t < nk; t++) {
        const T *b = B + (j + t) * ld;
        double kc = known[t];
        k2 += kc * kc;
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
        for (Py_ssize_t t = 0; t < nk; t++)
            coef[j + t] += known[t];
    }
    T scale = (T)(1.0 / n1);
    for (Py_ssize_t i = 0; i < rows; i++)
        x[i] *= scale;
    return n1;
}
