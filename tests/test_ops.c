/* Finite-difference gradient checks of every backward in src/ops.h, ls_gemm against the plain C
 * reference, and a whole-model check on a tiny SegFormer with drop path and dropout active.
 *
 * Method: a fixed random r turns an op's output y into the scalar L = sum(y * r), accumulated in
 * double. The forward runs in float; dL/dv[i] comes from central differences over the actual
 * float step (exact in double), so only the float rounding of the forward and the truncation
 * remain. The analytic gradient is backward(dy = r); every gradient buffer starts from random
 * values g0, which are subtracted after, so the checks also confirm that backwards ACCUMULATE as
 * ops.h promises. Error: |a - b| / max(1e-3, |a| + |b|), worst per check printed. Tolerances:
 *  - values an op is linear in (linear, conv, dwconv, bilinear, norm weights, attention V):
 *    step 0.5, no truncation error at all, tol 1e-3 (measured worst ~2e-4);
 *  - LayerNorm/BatchNorm inputs, GELU, attention Q and K, the loss: Richardson extrapolation
 *    with step 0.05, tol 5e-3 (measured worst ~1e-3);
 *  - whole model: step 5e-4 on elements whose gradient is at least 1/4 of the tensor's
 *    largest, tol 2e-2 (measured worst 6e-3; see test_model for why it is looser).
 * Dropping the dropout or drop-path scale from the backward gives errors of ~1 here. */
#include "leukoseg.h"
#include "model.h"
#include "ops.h"
#include "testutil.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static ls_rng rng;

static float *alloc_normal(size_t n, float scale, float shift)
{
    float *a = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) a[i] = shift + scale * ls_rng_normal(&rng);
    return a;
}

static float *alloc_copy(const float *src, size_t n)
{
    float *a = malloc(n * sizeof(float));
    memcpy(a, src, n * sizeof(float));
    return a;
}

static double dot(const float *y, const float *r, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)y[i] * r[i];
    return s;
}

typedef double (*loss_fn)(void *ctx);

/* The forwards inside a finite-difference loop run on one thread: thousands of tiny parallel
 * regions cost a scheduler slice each when the cores are busy (about 200x slower here under a
 * background training run). The analytic backward keeps the default thread count, so the
 * threaded accumulation paths are still what gets checked. */
#ifdef _OPENMP
static int fd_saved_threads = 1;
#endif
static void fd_serial_begin(void)
{
#ifdef _OPENMP
    fd_saved_threads = omp_get_max_threads();
    omp_set_num_threads(1);
#endif
}
static void fd_serial_end(void)
{
#ifdef _OPENMP
    omp_set_num_threads(fd_saved_threads);
#endif
}

/* dL/dv at *v. Central difference over the actual float step (the perturbed values are rounded to
 * float, the step is exact in double). richardson: (4 D(h) - D(2h)) / 3, which cancels the h^2
 * term; for ops not linear in v that lets h be large enough to put the float rounding of the
 * forward (~1e-7 of L) well below the gradient. */
static double fd_derivative(loss_fn f, void *ctx, float *v, float h, int richardson)
{
    float save = *v;
    double d[2];
    for (int k = 0; k < (richardson ? 2 : 1); k++) {
        float step = k ? 2.0f * h : h, up = save + step, down = save - step;
        *v = up;
        double lp = f(ctx);
        *v = down;
        double lm = f(ctx);
        *v = save;
        d[k] = (lp - lm) / ((double)up - (double)down);
    }
    return richardson ? (4.0 * d[0] - d[1]) / 3.0 : d[0];
}

/* Steps: L is exactly linear in the value for LIN_H checks, so only rounding matters; NONLIN_H with
 * Richardson leaves an O(h^4) truncation error of ~1e-7 for the O(1) inputs used here. */
#define LIN_H 0.5f
#define NONLIN_H 0.05f

static double rel_err(double a, double b) { return fabs(a - b) / fmax(1e-3, fabs(a) + fabs(b)); }

/* Checks analytic[i] - base[i] (base: the random start of the accumulated gradient, may be NULL)
 * against finite differences for every `stride`-th of the n values v[0..n). Ops linear in v use
 * a large h and no Richardson: there is no truncation error to trade against rounding. */
static void fd_check(const char *what, loss_fn f, void *ctx, float *v, const float *analytic,
                     const float *base, size_t n, size_t stride, float h, int richardson,
                     double tol)
{
    double worst = 0.0, worst_a = 0.0, worst_n = 0.0;
    size_t worst_i = 0, checked = 0;
    fd_serial_begin();
    for (size_t i = 0; i < n; i += stride) {
        double num = fd_derivative(f, ctx, v + i, h, richardson);
        double a = (double)analytic[i] - (base ? base[i] : 0.0);
        double rel = rel_err(a, num);
        if (!(rel <= worst)) {
            worst = rel != rel ? INFINITY : rel;
            worst_i = i;
            worst_a = a;
            worst_n = num;
        }
        checked++;
    }
    fd_serial_end();
    printf("  %-38s %4zu values, worst rel err %.2e (tol %.0e) [%zu] %.6g vs %.6g\n", what,
           checked, worst, tol, worst_i, worst_a, worst_n);
    if (!(worst <= tol)) {
        fprintf(stderr, "%s: worst relative error %.3g exceeds %.3g\n", what, worst, tol);
        tu_failures++;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* GEMM                                                                                        */
/* ------------------------------------------------------------------------------------------ */

/* ls_gemm (OpenBLAS when built with it) against ls_gemm_ref and a double triple loop, for all four
 * transpose combinations, with leading dimensions larger than the matrices: the padding of C must
 * stay untouched, and beta = 0 must ignore what C held (even NaN), because linear_forward without a
 * bias hands it uninitialised workspace memory. */
static void test_gemm_case(int m, int n, int k)
{
    const float sentinel = -12345.0f;
    double worst = 0.0;
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            for (int zero_beta = 0; zero_beta < 2; zero_beta++) {
                int arows = ta ? k : m, acols = ta ? m : k, brows = tb ? n : k, bcols = tb ? k : n;
                int lda = acols + 3, ldb = bcols + 5, ldc = n + 4;
                float *a = alloc_normal((size_t)arows * lda, 1.0f, 0.0f);
                float *b = alloc_normal((size_t)brows * ldb, 1.0f, 0.0f);
                float *c0 = alloc_normal((size_t)m * ldc, 1.0f, 0.0f);
                for (int i = 0; i < m; i++) {
                    for (int j = n; j < ldc; j++) c0[(size_t)i * ldc + j] = sentinel;
                    if (zero_beta)
                        for (int j = 0; j < n; j++) c0[(size_t)i * ldc + j] = NAN;
                }
                float *c1 = alloc_copy(c0, (size_t)m * ldc), *c2 = alloc_copy(c0, (size_t)m * ldc);
                float alpha = 0.7f, beta = zero_beta ? 0.0f : -0.3f;
                ls_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c1, ldc);
                ls_gemm_ref(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c2, ldc);
                int pad_ok = 1;
                for (int i = 0; i < m; i++) {
                    for (int j = 0; j < ldc; j++) {
                        size_t at = (size_t)i * ldc + j;
                        if (j >= n) {
                            pad_ok &= c1[at] == sentinel && c2[at] == sentinel;
                            continue;
                        }
                        double exact = zero_beta ? 0.0 : (double)beta * c0[at];
                        double mag = fabs(exact);
                        for (int p = 0; p < k; p++) {
                            double av = ta ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p];
                            double bv = tb ? b[(size_t)j * ldb + p] : b[(size_t)p * ldb + j];
                            exact += alpha * av * bv;
                            mag += fabs(alpha * av * bv);
                        }
                        double d1 = fabs(c1[at] - exact), d2 = fabs(c2[at] - exact);
                        double d3 = fabs((double)c1[at] - c2[at]);
                        double d = fmax(fmax(d1, d2), d3) / (1.0 + mag);
                        if (!(d <= worst)) worst = d != d ? INFINITY : d;
                    }
                }
                if (!pad_ok) {
                    fprintf(stderr, "gemm %dx%dx%d ta %d tb %d: padding of C was written\n", m, n,
                            k, ta, tb);
                    tu_failures++;
                }
                free(a);
                free(b);
                free(c0);
                free(c1);
                free(c2);
            }
        }
    }
    /* Differences relative to 1 + sum |alpha a b| + |beta c|, the scale of a float dot product's
     * rounding; a wrong transpose, stride or beta gives O(1). */
    printf("  gemm %3dx%3dx%3d, 4 transposes, beta 0/-0.3: worst rel diff %.2e (tol 1e-05)\n", m,
           n, k, worst);
    if (!(worst <= 1e-5)) {
        fprintf(stderr, "gemm %dx%dx%d: ls_gemm / ls_gemm_ref differ by %.3g\n", m, n, k, worst);
        tu_failures++;
    }
}

static void test_gemm(void)
{
    printf("gemm\n");
    test_gemm_case(13, 17, 11);
    test_gemm_case(67, 45, 129); /* past the small-matrix paths and register block edges */
    test_gemm_case(1, 33, 7);
}

/* ------------------------------------------------------------------------------------------ */
/* Linear                                                                                      */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    int m, in, out;
    float *x, *w, *bias, *y, *r;
} linear_ctx;

static double linear_loss(void *p)
{
    linear_ctx *c = p;
    linear_forward(c->y, c->x, c->w, c->bias, c->m, c->in, c->out);
    return dot(c->y, c->r, (size_t)c->m * c->out);
}

static void test_linear(void)
{
    printf("linear\n");
    linear_ctx c = {5, 7, 6, NULL, NULL, NULL, NULL, NULL};
    size_t nx = (size_t)c.m * c.in, nw = (size_t)c.out * c.in, ny = (size_t)c.m * c.out;
    c.x = alloc_normal(nx, 1.0f, 0.0f);
    c.w = alloc_normal(nw, 0.5f, 0.0f);
    c.bias = alloc_normal(c.out, 0.5f, 0.0f);
    c.y = malloc(ny * sizeof(float));
    c.r = alloc_normal(ny, 1.0f, 0.0f);
    float *g0x = alloc_normal(nx, 1.0f, 0.0f), *g0w = alloc_normal(nw, 1.0f, 0.0f);
    float *g0b = alloc_normal(c.out, 1.0f, 0.0f);
    float *dx = alloc_copy(g0x, nx), *dw = alloc_copy(g0w, nw), *db = alloc_copy(g0b, c.out);
    linear_backward(dx, dw, db, c.r, c.x, c.w, c.m, c.in, c.out);
    fd_check("linear dx", linear_loss, &c, c.x, dx, g0x, nx, 1, LIN_H, 0, 1e-3);
    fd_check("linear dw", linear_loss, &c, c.w, dw, g0w, nw, 1, LIN_H, 0, 1e-3);
    fd_check("linear dbias", linear_loss, &c, c.bias, db, g0b, c.out, 1, LIN_H, 0, 1e-3);
    free(c.x), free(c.w), free(c.bias), free(c.y), free(c.r);
    free(g0x), free(g0w), free(g0b), free(dx), free(dw), free(db);
}

/* ------------------------------------------------------------------------------------------ */
/* Convolution by im2col + linear, input gradient by col2im                                     */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    map_view v;
    int k, s, p, ho, wo, cout;
    float *x, *w, *bias, *col, *y, *r;
} conv_ctx;

static double conv_loss(void *p)
{
    conv_ctx *c = p;
    int rows = c->v.b * c->ho * c->wo, kk = c->v.c * c->k * c->k;
    im2col(c->col, c->x, c->v, c->k, c->s, c->p, c->ho, c->wo);
    linear_forward(c->y, c->col, c->w, c->bias, rows, kk, c->cout);
    return dot(c->y, c->r, (size_t)rows * c->cout);
}

static void test_conv(const char *name, map_view v, int k, int s, int p, int cout)
{
    char what[96];
    conv_ctx c;
    memset(&c, 0, sizeof c);
    c.v = v;
    c.k = k;
    c.s = s;
    c.p = p;
    c.cout = cout;
    c.ho = conv_out_size(v.h, k, s, p);
    c.wo = conv_out_size(v.w, k, s, p);
    int rows = v.b * c.ho * c.wo, kk = v.c * k * k;
    size_t nx = (size_t)v.b * v.c * v.h * v.w, nw = (size_t)cout * kk, ny = (size_t)rows * cout;
    c.x = alloc_normal(nx, 1.0f, 0.0f);
    c.w = alloc_normal(nw, 0.3f, 0.0f);
    c.bias = alloc_normal(cout, 0.3f, 0.0f);
    c.col = malloc((size_t)rows * kk * sizeof(float));
    c.y = malloc(ny * sizeof(float));
    c.r = alloc_normal(ny, 1.0f, 0.0f);
    float *g0x = alloc_normal(nx, 1.0f, 0.0f), *g0w = alloc_normal(nw, 1.0f, 0.0f);
    float *dx = alloc_copy(g0x, nx), *dw = alloc_copy(g0w, nw);
    float *dcol = calloc((size_t)rows * kk, sizeof(float));
    conv_loss(&c); /* fills col for the weight gradient */
    linear_backward(dcol, dw, NULL, c.r, c.col, c.w, rows, kk, cout);
    col2im_accumulate(dx, dcol, v, k, s, p, c.ho, c.wo);
    printf("conv %s: %dx%d -> %dx%d\n", name, v.w, v.h, c.wo, c.ho);
    snprintf(what, sizeof what, "conv %s dx (col2im)", name);
    fd_check(what, conv_loss, &c, c.x, dx, g0x, nx, 1, LIN_H, 0, 1e-3);
    snprintf(what, sizeof what, "conv %s dw", name);
    fd_check(what, conv_loss, &c, c.w, dw, g0w, nw, 1, LIN_H, 0, 1e-3);
    free(c.x), free(c.w), free(c.bias), free(c.col), free(c.y), free(c.r);
    free(g0x), free(g0w), free(dx), free(dw), free(dcol);
}

/* ------------------------------------------------------------------------------------------ */
/* LayerNorm                                                                                   */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    long m;
    int c;
    float *x, *g, *beta, *y, *mean, *rstd, *r;
} ln_ctx;

static double ln_loss(void *p)
{
    ln_ctx *c = p;
    layernorm_forward(c->y, c->mean, c->rstd, c->x, c->g, c->beta, c->m, c->c, LS_LN_EPS);
    return dot(c->y, c->r, (size_t)c->m * c->c);
}

static void test_layernorm(void)
{
    printf("layernorm\n");
    ln_ctx c = {6, 10, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t n = (size_t)c.m * c.c;
    c.x = alloc_normal(n, 1.5f, 0.5f);
    c.g = alloc_normal(c.c, 0.3f, 1.0f);
    c.beta = alloc_normal(c.c, 0.3f, 0.0f);
    c.y = malloc(n * sizeof(float));
    c.mean = malloc(c.m * sizeof(float));
    c.rstd = malloc(c.m * sizeof(float));
    c.r = alloc_normal(n, 1.0f, 0.0f);
    float *g0x = alloc_normal(n, 1.0f, 0.0f), *g0g = alloc_normal(c.c, 1.0f, 0.0f);
    float *g0b = alloc_normal(c.c, 1.0f, 0.0f);
    float *dx = alloc_copy(g0x, n), *dg = alloc_copy(g0g, c.c), *db = alloc_copy(g0b, c.c);
    ln_loss(&c);
    layernorm_backward(dx, dg, db, c.r, c.x, c.mean, c.rstd, c.g, c.m, c.c);
    fd_check("layernorm dx", ln_loss, &c, c.x, dx, g0x, n, 1, NONLIN_H, 1, 5e-3);
    fd_check("layernorm dg", ln_loss, &c, c.g, dg, g0g, c.c, 1, LIN_H, 0, 1e-3);
    fd_check("layernorm dbeta", ln_loss, &c, c.beta, db, g0b, c.c, 1, LIN_H, 0, 1e-3);
    free(c.x), free(c.g), free(c.beta), free(c.y), free(c.mean), free(c.rstd), free(c.r);
    free(g0x), free(g0g), free(g0b), free(dx), free(dg), free(db);
}

/* ------------------------------------------------------------------------------------------ */
/* Depthwise 3x3                                                                               */
/* ------------------------------------------------------------------------------------------ */

/* F = 19, so the channel blocks of 16 in the backward leave a remainder. */
#define DW_CHANNELS 19

typedef struct {
    int b, h, w, f;
    float *x, *wt, *bias, *y, *r;
    float taps[9 * DW_CHANNELS]; /* scratch [9, F] */
} dw_ctx;

static double dw_loss(void *p)
{
    dw_ctx *c = p;
    dwconv3x3_forward(c->y, c->x, c->wt, c->bias, c->taps, c->b, c->h, c->w, c->f);
    return dot(c->y, c->r, (size_t)c->b * c->h * c->w * c->f);
}

static void test_dwconv(void)
{
    printf("dwconv3x3\n");
    dw_ctx c = {.b = 2, .h = 5, .w = 7, .f = DW_CHANNELS}; /* odd H and W */
    size_t n = (size_t)c.b * c.h * c.w * c.f, nw = (size_t)c.f * 9;
    c.x = alloc_normal(n, 1.0f, 0.0f);
    c.wt = alloc_normal(nw, 0.5f, 0.0f);
    c.bias = alloc_normal(c.f, 0.5f, 0.0f);
    c.y = malloc(n * sizeof(float));
    c.r = alloc_normal(n, 1.0f, 0.0f);
    float *g0x = alloc_normal(n, 1.0f, 0.0f), *g0w = alloc_normal(nw, 1.0f, 0.0f);
    float *g0b = alloc_normal(c.f, 1.0f, 0.0f);
    float *dx = alloc_copy(g0x, n), *dw = alloc_copy(g0w, nw), *db = alloc_copy(g0b, c.f);
    dwconv3x3_backward(dx, dw, db, c.r, c.x, c.wt, c.taps, c.b, c.h, c.w, c.f);
    fd_check("dwconv3x3 dx", dw_loss, &c, c.x, dx, g0x, n, 1, LIN_H, 0, 1e-3);
    fd_check("dwconv3x3 dw", dw_loss, &c, c.wt, dw, g0w, nw, 1, LIN_H, 0, 1e-3);
    fd_check("dwconv3x3 dbias", dw_loss, &c, c.bias, db, g0b, c.f, 1, LIN_H, 0, 1e-3);
    free(c.x), free(c.wt), free(c.bias), free(c.y), free(c.r);
    free(g0x), free(g0w), free(g0b), free(dx), free(dw), free(db);
}

/* ------------------------------------------------------------------------------------------ */
/* GELU                                                                                        */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    long n;
    float *x, *y, *r;
} gelu_ctx;

static double gelu_loss(void *p)
{
    gelu_ctx *c = p;
    gelu_forward(c->y, c->x, c->n);
    return dot(c->y, c->r, c->n);
}

static void test_gelu(void)
{
    printf("gelu\n");
    gelu_ctx c = {64, NULL, NULL, NULL};
    c.x = malloc(c.n * sizeof(float));
    for (long i = 0; i < c.n; i++) c.x[i] = -4.0f + 8.0f * ls_rng_uniform(&rng); /* tails too */
    c.y = malloc(c.n * sizeof(float));
    c.r = alloc_normal(c.n, 1.0f, 0.0f);
    float *g0 = alloc_normal(c.n, 1.0f, 0.0f), *dx = alloc_copy(g0, c.n);
    gelu_backward(dx, c.r, c.x, c.n);
    fd_check("gelu dx", gelu_loss, &c, c.x, dx, g0, c.n, 1, NONLIN_H, 1, 5e-3);
    free(c.x), free(c.y), free(c.r), free(g0), free(dx);
}

/* ------------------------------------------------------------------------------------------ */
/* Bilinear                                                                                    */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    int b, hi, wi, ho, wo, c, pitch;
    float *in, *out, *r;
} bil_ctx;

static double bil_loss(void *p)
{
    bil_ctx *c = p;
    bilinear_forward(c->out, c->pitch, c->in, c->b, c->hi, c->wi, c->ho, c->wo, c->c);
    double s = 0.0;
    for (long px = 0; px < (long)c->b * c->ho * c->wo; px++)
        for (int ch = 0; ch < c->c; ch++)
            s += (double)c->out[px * c->pitch + ch] * c->r[px * c->c + ch];
    return s;
}

static void test_bilinear(const char *name, int b, int hi, int wi, int ho, int wo, int ch,
                          int pitch)
{
    char what[96];
    bil_ctx c = {b, hi, wi, ho, wo, ch, pitch, NULL, NULL, NULL};
    size_t nin = (size_t)b * hi * wi * ch, npx = (size_t)b * ho * wo;
    c.in = alloc_normal(nin, 1.0f, 0.0f);
    c.out = malloc(npx * pitch * sizeof(float));
    for (size_t i = 0; i < npx * pitch; i++) c.out[i] = -777.0f; /* channels beyond c: untouched */
    c.r = alloc_normal(npx * ch, 1.0f, 0.0f);
    bil_loss(&c);
    int untouched = 1;
    for (size_t px = 0; px < npx; px++)
        for (int k = ch; k < pitch; k++) untouched &= c.out[px * pitch + k] == -777.0f;
    CHECK(untouched);
    /* dout at the same pitch: r in the first c channels, junk beyond that must not be read. */
    float *dout = malloc(npx * pitch * sizeof(float));
    for (size_t px = 0; px < npx; px++)
        for (int k = 0; k < pitch; k++) dout[px * pitch + k] = k < ch ? c.r[px * ch + k] : 1e30f;
    float *g0 = alloc_normal(nin, 1.0f, 0.0f), *din = alloc_copy(g0, nin);
    bilinear_backward(din, dout, pitch, b, hi, wi, ho, wo, ch);
    snprintf(what, sizeof what, "bilinear %s %dx%d -> %dx%d din", name, wi, hi, wo, ho);
    fd_check(what, bil_loss, &c, c.in, din, g0, nin, 1, LIN_H, 0, 1e-3);
    free(c.in), free(c.out), free(c.r), free(dout), free(g0), free(din);
}

/* ------------------------------------------------------------------------------------------ */
/* BatchNorm (training)                                                                        */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    long m;
    int c;
    float *x, *g, *beta, *y, *mean, *rstd, *run_mean, *run_var, *r;
} bn_ctx;

static double bn_loss(void *p)
{
    bn_ctx *c = p;
    batchnorm_train_forward(c->y, c->mean, c->rstd, c->run_mean, c->run_var, c->x, c->g, c->beta,
                            c->m, c->c, LS_BN_EPS, LS_BN_MOMENTUM);
    return dot(c->y, c->r, (size_t)c->m * c->c);
}

static void test_batchnorm(void)
{
    printf("batchnorm (train)\n");
    bn_ctx c;
    memset(&c, 0, sizeof c);
    c.m = 12;
    c.c = 5;
    size_t n = (size_t)c.m * c.c;
    c.x = alloc_normal(n, 2.0f, 1.0f);
    c.g = alloc_normal(c.c, 0.3f, 1.0f);
    c.beta = alloc_normal(c.c, 0.3f, 0.0f);
    c.y = malloc(n * sizeof(float));
    c.mean = malloc(c.c * sizeof(float));
    c.rstd = malloc(c.c * sizeof(float));
    c.run_mean = calloc(c.c, sizeof(float));
    c.run_var = calloc(c.c, sizeof(float));
    c.r = alloc_normal(n, 1.0f, 0.0f);
    float *g0x = alloc_normal(n, 1.0f, 0.0f), *g0g = alloc_normal(c.c, 1.0f, 0.0f);
    float *g0b = alloc_normal(c.c, 1.0f, 0.0f);
    float *dx = alloc_copy(g0x, n), *dg = alloc_copy(g0g, c.c), *db = alloc_copy(g0b, c.c);
    bn_loss(&c);
    batchnorm_backward(dx, dg, db, c.r, c.x, c.mean, c.rstd, c.g, c.m, c.c);
    fd_check("batchnorm dx", bn_loss, &c, c.x, dx, g0x, n, 1, NONLIN_H, 1, 5e-3);
    fd_check("batchnorm dg", bn_loss, &c, c.g, dg, g0g, c.c, 1, LIN_H, 0, 1e-3);
    fd_check("batchnorm dbeta", bn_loss, &c, c.beta, db, g0b, c.c, 1, LIN_H, 0, 1e-3);
    free(c.x), free(c.g), free(c.beta), free(c.y), free(c.mean), free(c.rstd);
    free(c.run_mean), free(c.run_var), free(c.r);
    free(g0x), free(g0g), free(g0b), free(dx), free(dg), free(db);
}

/* ------------------------------------------------------------------------------------------ */
/* Attention core                                                                              */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    int n, nr, c, heads;
    float *q, *k, *v, *out, *probs, *r;
} att_ctx;

static double att_loss(void *p)
{
    att_ctx *c = p;
    /* chunk 0: every head's probabilities kept for the backward (training). */
    attention_forward(c->out, c->probs, c->q, c->k, c->v, c->n, c->nr, c->c, c->heads, 0);
    return dot(c->out, c->r, (size_t)c->n * c->c);
}

static void test_attention(void)
{
    printf("attention\n");
    att_ctx c = {7, 5, 12, 3, NULL, NULL, NULL, NULL, NULL, NULL}; /* 3 heads of 4, nr != n */
    size_t nq = (size_t)c.n * c.c, nk = (size_t)c.nr * c.c;
    c.q = alloc_normal(nq, 1.0f, 0.0f);
    c.k = alloc_normal(nk, 1.0f, 0.0f);
    c.v = alloc_normal(nk, 1.0f, 0.0f);
    c.out = malloc(nq * sizeof(float));
    c.probs = malloc((size_t)c.heads * c.n * c.nr * sizeof(float));
    c.r = alloc_normal(nq, 1.0f, 0.0f);
    float *g0q = alloc_normal(nq, 1.0f, 0.0f), *g0k = alloc_normal(nk, 1.0f, 0.0f);
    float *g0v = alloc_normal(nk, 1.0f, 0.0f);
    float *dq = alloc_copy(g0q, nq), *dk = alloc_copy(g0k, nk), *dv = alloc_copy(g0v, nk);
    float *dprobs = malloc((size_t)c.n * c.nr * sizeof(float));
    att_loss(&c);
    attention_backward(dq, dk, dv, dprobs, c.r, c.probs, c.q, c.k, c.v, c.n, c.nr, c.c, c.heads);
    fd_check("attention dq", att_loss, &c, c.q, dq, g0q, nq, 1, NONLIN_H, 1, 5e-3);
    fd_check("attention dk", att_loss, &c, c.k, dk, g0k, nk, 1, NONLIN_H, 1, 5e-3);
    fd_check("attention dv", att_loss, &c, c.v, dv, g0v, nk, 1, LIN_H, 0, 1e-3);
    free(c.q), free(c.k), free(c.v), free(c.out), free(c.probs), free(c.r);
    free(g0q), free(g0k), free(g0v), free(dq), free(dk), free(dv), free(dprobs);
}

/* Inference runs the attention chunk rows of queries at a time (chunk > 0: probs is a
 * [min(chunk, N), Nr] scratch, reused by every head); the output must be the full computation's
 * (chunk 0), up to the rounding of a product with fewer rows. Chunks of 16 over 50 queries leave
 * a remainder of 2; 1 is one row at a time; 50 and 64 are one chunk with a scratch of one head's
 * [N, Nr] (several heads must not index past it). The scratch is allocated at exactly its
 * documented size, so the sanitizer build catches an overrun. */
static void test_attention_chunks(void)
{
    int n = 50, nr = 13, c = 12, heads = 3;
    size_t nq = (size_t)n * c, nk = (size_t)nr * c;
    float *q = alloc_normal(nq, 1.0f, 0.0f), *k = alloc_normal(nk, 1.0f, 0.0f);
    float *v = alloc_normal(nk, 1.0f, 0.0f);
    float *full = malloc(nq * sizeof(float)), *part = malloc(nq * sizeof(float));
    float *probs = malloc((size_t)heads * n * nr * sizeof(float));
    attention_forward(full, probs, q, k, v, n, nr, c, heads, 0);
    static const int chunks[5] = {16, 1, 49, 50, 64};
    for (int t = 0; t < 5; t++) {
        for (size_t i = 0; i < nq; i++) part[i] = NAN;
        int rows = chunks[t] < n ? chunks[t] : n;
        float *scratch = malloc((size_t)rows * nr * sizeof(float));
        attention_forward(part, scratch, q, k, v, n, nr, c, heads, chunks[t]);
        double worst = 0.0;
        for (size_t i = 0; i < nq; i++) {
            double d = fabs((double)part[i] - full[i]);
            if (!(d <= worst)) worst = d != d ? INFINITY : d;
        }
        printf("  attention chunk %2d of %d queries vs whole: max |diff| %.3g%s\n", chunks[t], n,
               worst, worst == 0.0 ? " (bit-identical)" : "");
        CHECK(worst <= 1e-6);
        free(scratch);
    }
    free(q), free(k), free(v), free(full), free(part), free(probs);
}

/* ------------------------------------------------------------------------------------------ */
/* Cross-entropy loss with upsampling (ls_model_loss), gradient w.r.t. the logits               */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    ls_model *m;
    ls_workspace *ws;
    const uint8_t *labels;
    int lh, lw;
} ce_ctx;

static double ce_loss(void *p)
{
    ce_ctx *c = p;
    ls_error err = {{0}};
    float loss = 0.0f;
    CHECK_OK(ls_model_loss(c->m, c->ws, c->labels, c->lh, c->lw, &loss, &err), err);
    return loss;
}

/* Logits of a 29x37 input are 8x10; labels 17x23 make the loss upsample by a non-integer factor,
 * and some ignore pixels leave part of the mean out. */
static void test_ce_loss(ls_model *m)
{
    printf("cross-entropy loss (ls_model_loss)\n");
    ls_error err = {{0}};
    ls_workspace *ws = NULL;
    int b = 2, h = 29, w = 37, lh = 17, lw = 23, k = ls_model_config(m)->num_labels;
    CHECK_OK(ls_workspace_create(m, b, h, w, 1, &ws, &err), err);
    if (!ws) return;
    int h4, w4;
    float *logits = (float *)ls_workspace_logits(ws, &h4, &w4);
    size_t nl = (size_t)b * h4 * w4 * k;
    for (size_t i = 0; i < nl; i++) logits[i] = 2.0f * ls_rng_normal(&rng);
    uint8_t *labels = malloc((size_t)b * lh * lw);
    for (int i = 0; i < b * lh * lw; i++)
        labels[i] = ls_rng_uniform(&rng) < 0.2f ? LS_IGNORE : (uint8_t)ls_rng_int(&rng, k);
    ce_ctx c = {m, ws, labels, lh, lw};
    ce_loss(&c);
    float *grad = alloc_copy(ws->d_logits, nl);
    /* Loss is a float mean over ~600 pixels: eps 1e-2 keeps its rounding below 1e-5 of dL. */
    fd_check("ce loss d logits (17x23 labels, 10x8)", ce_loss, &c, logits, grad, NULL, nl, 1,
             0.1f, 1, 5e-3);
    free(grad);
    free(labels);
    ls_workspace_free(ws);
}

/* ------------------------------------------------------------------------------------------ */
/* Whole model                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* Weights at a scale where activations are O(1) through every LayerNorm (HF's N(0, 0.02) makes
 * the patch embeddings tiny, so LayerNorm amplifies the curvature and finite differences need a
 * far smaller eps than float allows): fan-in scaled normals, norms 1 +- 0.2, biases +- 0.1. */
static void fd_init(ls_model *m)
{
    for (int i = 0; i < ls_model_num_params(m); i++) {
        const ls_param *p = ls_model_param(m, i);
        float *w = ls_model_weights(m) + p->offset;
        int is_norm = strstr(p->name, "layer_norm") || strstr(p->name, "batch_norm");
        int is_bias = strstr(p->name, ".bias") != NULL;
        size_t fan_in = p->ndim > 1 ? p->numel / (size_t)p->shape[0] : 1;
        for (size_t k = 0; k < p->numel; k++) {
            if (is_bias) w[k] = 0.1f * ls_rng_normal(&rng);
            else if (is_norm) w[k] = 1.0f + 0.2f * ls_rng_normal(&rng);
            else w[k] = ls_rng_normal(&rng) / sqrtf((float)fan_in);
        }
    }
}

typedef struct {
    ls_model *m;
    ls_workspace *ws;
    const float *x, *r;
    size_t nlogits;
} model_ctx;

/* Training forward with the rng reseeded, so drop-path and dropout masks are the same in every
 * call; L = sum(logits * r). BN running stats move on each call, which the training output does
 * not read. */
static double model_loss(void *p)
{
    model_ctx *c = p;
    ls_error err = {{0}};
    ls_rng drop_rng;
    ls_rng_seed(&drop_rng, 4242);
    CHECK_OK(ls_model_forward(c->m, c->ws, c->x, 1, &drop_rng, NULL, &err), err);
    return dot(ls_workspace_logits(c->ws, NULL, NULL), c->r, c->nlogits);
}

static int find_param(const ls_model *m, const char *name)
{
    for (int i = 0; i < ls_model_num_params(m); i++)
        if (strcmp(ls_model_param(m, i)->name, name) == 0) return i;
    return -1;
}

static void test_model(void)
{
    printf("whole model (tiny, drop_path 0.3, classifier dropout 0.3, training)\n");
    ls_error err = {{0}};
    ls_model *m = tu_tiny_model(3, 0.3f, 0.3f, 7);
    if (!m) return;
    const ls_config *cfg = ls_model_config(m);
    test_ce_loss(m);

    fd_init(m);
    int b = 2, h = 64, w = 64;
    ls_workspace *ws = NULL;
    CHECK_OK(ls_workspace_create(m, b, h, w, 1, &ws, &err), err);
    if (!ws) {
        ls_model_free(m);
        return;
    }
    /* 64x64: grids 16, 8, 4, 2 and reduced keys 2x2 in every stage (more than one key). */
    for (int i = 0; i < 4; i++) CHECK(ws->stage[i].nr == 4);
    float *x = alloc_normal((size_t)b * 3 * h * w, 1.0f, 0.0f);
    int h4, w4;
    ls_workspace_logits(ws, &h4, &w4);
    size_t nlogits = (size_t)b * h4 * w4 * cfg->num_labels;
    float *r = alloc_normal(nlogits, 1.0f, 0.0f);
    model_ctx c = {m, ws, x, r, nlogits};

    /* Analytic: ls_model_loss sets up the backward (label size), then its d_logits are replaced
     * by r, the gradient of sum(logits * r). */
    model_loss(&c);
    uint8_t *labels = calloc((size_t)b * h * w, 1);
    float loss;
    CHECK_OK(ls_model_loss(m, ws, labels, h, w, &loss, &err), err);
    memcpy(ws->d_logits, r, nlogits * sizeof(float));
    ls_model_zero_grad(m);
    CHECK_OK(ls_model_backward(m, ws, &err), err);
    /* The masks must really be active for this check to mean anything. */
    int dropped_path = 0;
    for (int i = 0; i < 4; i++)
        for (int s = 0; s < b; s++)
            dropped_path += ws->stage[i].blocks[0].keep_attn[s] == 0.0f ||
                            ws->stage[i].blocks[0].keep_ffn[s] == 0.0f;
    size_t zeros = 0, md = (size_t)b * h4 * w4 * cfg->decoder_hidden;
    for (size_t k = 0; k < md; k++) zeros += ws->drop_scale[k] == 0.0f;
    printf("  %d drop-path branches dropped, %zu of %zu dropout zeros\n", dropped_path, zeros, md);
    CHECK(dropped_path > 0);
    CHECK(zeros > md / 5 && zeros < md * 2 / 5);
    float *grads = alloc_copy(ls_model_grads(m), ls_model_num_weights(m));

    static const char *names[] = {
        "segformer.encoder.patch_embeddings.0.proj.weight",
        "segformer.encoder.patch_embeddings.1.proj.weight",
        "segformer.encoder.block.1.0.attention.self.query.weight",
        "segformer.encoder.block.2.0.attention.self.key.weight",
        "segformer.encoder.block.0.0.attention.self.value.weight",
        "segformer.encoder.block.0.0.attention.self.sr.weight",
        "segformer.encoder.block.1.0.attention.self.layer_norm.weight",
        "segformer.encoder.block.3.0.mlp.dwconv.dwconv.weight",
        "segformer.encoder.block.2.0.mlp.dense2.bias",
        "segformer.encoder.layer_norm.0.bias",
        "decode_head.linear_c.3.proj.weight",
        "decode_head.linear_fuse.weight",
        "decode_head.batch_norm.weight",
        "decode_head.batch_norm.bias",
        "decode_head.classifier.weight",
        "decode_head.classifier.bias",
    };
    enum { PER_TENSOR = 4 };
    /* The step trades float rounding of L (~1e-6 relative after ~60 ops), which grows as 1/eps,
     * against ReLU kinks in the head crossed by the step, which grow as eps: measured worst errors
     * 9e-3 at 3e-4, 1.3e-2 at 1e-3, 2.3e-2 at 3e-3. */
    float eps = 5e-4f;
    double tol = 2e-2, worst_all = 0.0;
    fd_serial_begin();
    for (size_t t = 0; t < sizeof names / sizeof names[0]; t++) {
        int pi = find_param(m, names[t]);
        CHECK(pi >= 0);
        if (pi < 0) continue;
        const ls_param *p = ls_model_param(m, pi);
        const float *g = grads + p->offset;
        double gmax = 0.0;
        for (size_t k = 0; k < p->numel; k++) gmax = fmax(gmax, fabs(g[k]));
        double worst = 0.0;
        for (int e = 0; e < PER_TENSOR; e++) {
            /* Random elements whose gradient is at least a quarter of the tensor's largest: the
             * float rounding of the forward and the ReLU kinks crossed by a step give an absolute
             * error, which only means something against a gradient of significant size. */
            size_t k = 0;
            for (int tries = 0; tries < 10000; tries++) {
                k = (size_t)ls_rng_int(&rng, (int)p->numel);
                if (fabs(g[k]) >= 0.25 * gmax) break;
            }
            double num = fd_derivative(model_loss, &c, ls_model_weights(m) + p->offset + k, eps, 0);
            double rel = rel_err(g[k], num);
            if (!(rel <= worst)) worst = rel != rel ? INFINITY : rel;
            if (!(rel <= tol))
                fprintf(stderr, "%s[%zu]: analytic %.6g numeric %.6g\n", p->name, k, g[k], num);
        }
        printf("  %-60s worst rel err %.2e (|g| max %.3g)\n", p->name, worst, gmax);
        if (!(worst <= worst_all)) worst_all = worst != worst ? INFINITY : worst;
    }
    fd_serial_end();
    printf("  whole model: worst rel err %.2e (tol %.0e)\n", worst_all, tol);
    if (!(worst_all <= tol)) {
        fprintf(stderr, "whole model: worst relative error %.3g exceeds %.3g\n", worst_all, tol);
        tu_failures++;
    }
    free(grads);
    free(labels);
    free(x);
    free(r);
    ls_workspace_free(ws);
    ls_model_free(m);
}

int main(void)
{
    ls_rng_seed(&rng, 20240601);
    test_gemm();
    test_linear();
    test_conv("k7 s4 p3 NCHW", map_nchw(2, 3, 13, 11), 7, 4, 3, 4);
    test_conv("k3 s2 p1 NHWC", map_nhwc(2, 7, 6, 4), 3, 2, 1, 5);
    test_conv("k4 s4 p0 NHWC (sr)", map_nhwc(2, 9, 10, 3), 4, 4, 0, 3);
    test_layernorm();
    test_dwconv();
    test_gelu();
    test_bilinear("up", 2, 3, 4, 7, 9, 3, 5);
    test_bilinear("down", 2, 9, 7, 4, 3, 3, 5);
    test_bilinear("mixed", 1, 5, 2, 3, 7, 17, 20); /* > 16 channels: two backward blocks */
    test_bilinear("x4", 2, 4, 4, 16, 16, 3, 3);     /* the decode head's and the loss's factor */
    test_bilinear("same", 1, 5, 5, 5, 5, 2, 2);
    test_bilinear("from one", 1, 1, 3, 5, 4, 2, 2); /* every output clamps onto input 0 */
    test_batchnorm();
    test_attention();
    test_attention_chunks();
    test_model();
    TEST_DONE();
}
