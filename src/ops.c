/* Primitive kernels of SegFormer; see ops.h for the conventions. */
#include "ops.h"

#include <math.h>
#include <string.h>

#ifdef LS_HAVE_CBLAS
#include <cblas.h>
#endif

/* ------------------------------------------------------------------------------------------ */
/* Matrix products                                                                             */
/* ------------------------------------------------------------------------------------------ */

void ls_gemm_ref(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < m; i++) {
        float *crow = c + (size_t)i * ldc;
        for (int j = 0; j < n; j++) crow[j] = beta == 0.0f ? 0.0f : beta * crow[j];
        for (int p = 0; p < k; p++) {
            float aip = alpha * (trans_a ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p]);
            if (aip == 0.0f) continue;
            if (trans_b) {
                for (int j = 0; j < n; j++) crow[j] += aip * b[(size_t)j * ldb + p];
            } else {
                const float *brow = b + (size_t)p * ldb;
                for (int j = 0; j < n; j++) crow[j] += aip * brow[j];
            }
        }
    }
}

void ls_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc)
{
    if (m == 0 || n == 0) return;
#ifdef LS_HAVE_CBLAS
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#else
    ls_gemm_ref(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* Linear                                                                                      */
/* ------------------------------------------------------------------------------------------ */

void linear_forward(float *y, const float *x, const float *w, const float *bias, int m, int in,
                    int out)
{
    if (bias) {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < m; i++) memcpy(y + (size_t)i * out, bias, sizeof(float) * out);
    }
    ls_gemm(0, 1, m, out, in, 1.0f, x, in, w, in, bias ? 1.0f : 0.0f, y, out);
}

void linear_backward(float *dx, float *dw, float *dbias, const float *dy, const float *x,
                     const float *w, int m, int in, int out)
{
    if (dx) ls_gemm(0, 0, m, in, out, 1.0f, dy, out, w, in, 1.0f, dx, in);   /* dx += dy W */
    if (dw) ls_gemm(1, 0, out, in, m, 1.0f, dy, out, x, in, 1.0f, dw, in);   /* dW += dy^T x */
    if (dbias) colsum_accumulate(dbias, dy, m, out);
}

/* Each thread owns a block of columns and sums all rows for them in order, so the result does not
 * depend on scheduling. */
void colsum_accumulate(float *out, const float *a, long m, int c)
{
    enum { BLOCK = 16 };
    int nblocks = (c + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        int c0 = blk * BLOCK, c1 = c0 + BLOCK < c ? c0 + BLOCK : c;
        float acc[BLOCK] = {0};
        for (long i = 0; i < m; i++) {
            const float *row = a + i * c;
            for (int j = c0; j < c1; j++) acc[j - c0] += row[j];
        }
        for (int j = c0; j < c1; j++) out[j] += acc[j - c0];
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Convolution by im2col                                                                       */
/* ------------------------------------------------------------------------------------------ */

map_view map_nchw(int b, int c, int h, int w)
{
    map_view v = {b, h, w, c, (long)c * h * w, w, 1, (long)h * w};
    return v;
}

map_view map_nhwc(int b, int h, int w, int c)
{
    map_view v = {b, h, w, c, (long)h * w * c, (long)w * c, c, 1};
    return v;
}

void im2col(float *col, const float *x, map_view v, int k, int s, int p, int ho, int wo)
{
    int kk = v.c * k * k;
    long rows = (long)v.b * ho * wo;
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        int ox = (int)(r % wo), oy = (int)((r / wo) % ho), b = (int)(r / ((long)wo * ho));
        float *dst = col + r * kk;
        for (int ci = 0; ci < v.c; ci++) {
            for (int ky = 0; ky < k; ky++) {
                int iy = oy * s - p + ky;
                for (int kx = 0; kx < k; kx++) {
                    int ix = ox * s - p + kx;
                    int inside = iy >= 0 && iy < v.h && ix >= 0 && ix < v.w;
                    dst[(ci * k + ky) * k + kx] =
                        inside ? x[b * v.sb + iy * v.sy + ix * v.sx + ci * v.sc] : 0.0f;
                }
            }
        }
    }
}

void col2im_accumulate(float *dx, const float *dcol, map_view v, int k, int s, int p, int ho,
                       int wo)
{
    int kk = v.c * k * k;
    /* Windows of neighbouring outputs overlap, so threads split the batch, not the rows. */
#pragma omp parallel for schedule(static)
    for (int b = 0; b < v.b; b++) {
        for (int oy = 0; oy < ho; oy++) {
            for (int ox = 0; ox < wo; ox++) {
                const float *src = dcol + (((long)b * ho + oy) * wo + ox) * kk;
                for (int ci = 0; ci < v.c; ci++) {
                    for (int ky = 0; ky < k; ky++) {
                        int iy = oy * s - p + ky;
                        if (iy < 0 || iy >= v.h) continue;
                        for (int kx = 0; kx < k; kx++) {
                            int ix = ox * s - p + kx;
                            if (ix < 0 || ix >= v.w) continue;
                            dx[b * v.sb + iy * v.sy + ix * v.sx + ci * v.sc] +=
                                src[(ci * k + ky) * k + kx];
                        }
                    }
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* LayerNorm                                                                                   */
/* ------------------------------------------------------------------------------------------ */

void layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *g,
                       const float *beta, long m, int c, float eps)
{
#pragma omp parallel for schedule(static)
    for (long i = 0; i < m; i++) {
        const float *xr = x + i * c;
        float *yr = y + i * c;
        /* Two passes in float (C <= 512 terms): the mean, then the biased variance around it. */
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < c; j++) sum += xr[j];
        float mu = sum / c, var = 0.0f;
#pragma omp simd reduction(+ : var)
        for (int j = 0; j < c; j++) var += (xr[j] - mu) * (xr[j] - mu);
        float rs = 1.0f / sqrtf(var / c + eps);
        for (int j = 0; j < c; j++) yr[j] = (xr[j] - mu) * rs * g[j] + beta[j];
        mean[i] = mu;
        rstd[i] = rs;
    }
}

void layernorm_backward(float *dx, float *dg, float *dbeta, const float *dy, const float *x,
                        const float *mean, const float *rstd, const float *g, long m, int c)
{
#pragma omp parallel for schedule(static)
    for (long i = 0; i < m; i++) {
        const float *xr = x + i * c, *dyr = dy + i * c;
        float mu = mean[i], rs = rstd[i];
        /* dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * g */
        float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
        for (int j = 0; j < c; j++) {
            float xhat = (xr[j] - mu) * rs, dxhat = dyr[j] * g[j];
            sum_dxhat += dxhat;
            sum_dxhat_xhat += dxhat * xhat;
        }
        sum_dxhat /= c;
        sum_dxhat_xhat /= c;
        float *dxr = dx + i * c;
        for (int j = 0; j < c; j++) {
            float xhat = (xr[j] - mu) * rs;
            dxr[j] += rs * (dyr[j] * g[j] - sum_dxhat - xhat * sum_dxhat_xhat);
        }
    }
    enum { BLOCK = 16 };
    int nblocks = (c + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        int c0 = blk * BLOCK, c1 = c0 + BLOCK < c ? c0 + BLOCK : c;
        float acc_g[BLOCK] = {0}, acc_b[BLOCK] = {0};
        for (long i = 0; i < m; i++) {
            const float *xr = x + i * c, *dyr = dy + i * c;
            for (int j = c0; j < c1; j++) {
                acc_g[j - c0] += dyr[j] * (xr[j] - mean[i]) * rstd[i];
                acc_b[j - c0] += dyr[j];
            }
        }
        for (int j = c0; j < c1; j++) {
            dg[j] += acc_g[j - c0];
            dbeta[j] += acc_b[j - c0];
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Depthwise 3x3 convolution (Mix-FFN)                                                         */
/* ------------------------------------------------------------------------------------------ */

/* Weights [F, 1, 3, 3] -> taps-major [9, F] in taps, so the inner loops over channels are
 * contiguous in both the map and the weights and vectorise. */
static void dwconv_taps_major(float *taps, const float *w, int f)
{
    for (int ch = 0; ch < f; ch++)
        for (int k = 0; k < 9; k++) taps[(size_t)k * f + ch] = w[ch * 9 + k];
}

void dwconv3x3_forward(float *y, const float *x, const float *w, const float *bias, float *taps,
                       int b, int h, int wd, int f)
{
    dwconv_taps_major(taps, w, f);
    long rows = (long)b * h;
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        int yy = (int)(r % h);
        long bb = r / h;
        for (int xx = 0; xx < wd; xx++) {
            float *out = y + ((bb * h + yy) * wd + xx) * f;
            for (int ch = 0; ch < f; ch++) out[ch] = bias[ch];
            for (int ky = 0; ky < 3; ky++) {
                int iy = yy + ky - 1;
                if (iy < 0 || iy >= h) continue;
                for (int kx = 0; kx < 3; kx++) {
                    int ix = xx + kx - 1;
                    if (ix < 0 || ix >= wd) continue;
                    const float *in = x + ((bb * h + iy) * wd + ix) * f;
                    const float *tap = taps + (size_t)(ky * 3 + kx) * f;
                    for (int ch = 0; ch < f; ch++) out[ch] += tap[ch] * in[ch];
                }
            }
        }
    }
}

void dwconv3x3_backward(float *dx, float *dw, float *dbias, const float *dy, const float *x,
                        const float *w, float *taps, int b, int h, int wd, int f)
{
    long rows = (long)b * h;
    if (dx) {
        dwconv_taps_major(taps, w, f);
        /* Gather form: each input pixel collects from the outputs that read it. */
#pragma omp parallel for schedule(static)
        for (long r = 0; r < rows; r++) {
            int iy = (int)(r % h);
            long bb = r / h;
            for (int ix = 0; ix < wd; ix++) {
                float *din = dx + ((bb * h + iy) * wd + ix) * f;
                for (int ky = 0; ky < 3; ky++) {
                    int oy = iy - ky + 1;
                    if (oy < 0 || oy >= h) continue;
                    for (int kx = 0; kx < 3; kx++) {
                        int ox = ix - kx + 1;
                        if (ox < 0 || ox >= wd) continue;
                        const float *g = dy + ((bb * h + oy) * wd + ox) * f;
                        const float *tap = taps + (size_t)(ky * 3 + kx) * f;
                        for (int ch = 0; ch < f; ch++) din[ch] += tap[ch] * g[ch];
                    }
                }
            }
        }
    }
    enum { BLOCK = 16 };
    int nblocks = (f + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        int c0 = blk * BLOCK, c1 = c0 + BLOCK < f ? c0 + BLOCK : f, nc = c1 - c0;
        float acc_w[9][BLOCK] = {{0}}, acc_b[BLOCK] = {0};
        for (long r = 0; r < rows; r++) {
            int yy = (int)(r % h);
            long bb = r / h;
            for (int xx = 0; xx < wd; xx++) {
                const float *g = dy + ((bb * h + yy) * wd + xx) * f + c0;
                for (int j = 0; j < nc; j++) acc_b[j] += g[j];
                for (int ky = 0; ky < 3; ky++) {
                    int iy = yy + ky - 1;
                    if (iy < 0 || iy >= h) continue;
                    for (int kx = 0; kx < 3; kx++) {
                        int ix = xx + kx - 1;
                        if (ix < 0 || ix >= wd) continue;
                        const float *in = x + ((bb * h + iy) * wd + ix) * f + c0;
                        for (int j = 0; j < nc; j++) acc_w[ky * 3 + kx][j] += g[j] * in[j];
                    }
                }
            }
        }
        for (int j = 0; j < nc; j++) {
            for (int t = 0; t < 9; t++) dw[(c0 + j) * 9 + t] += acc_w[t][j];
            dbias[c0 + j] += acc_b[j];
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* GELU and softmax                                                                            */
/* ------------------------------------------------------------------------------------------ */

/* exp and erf written without library calls so the GELU loops vectorise (libm's erff is scalar).
 * exp: 2^k e^r with |r| <= ln2/2 and a degree-6 polynomial, relative error ~2e-7.
 * erf: Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7. */
static inline float exp_poly(float x)
{
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    float k = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - k * 0.693145752f - k * 1.42860677e-6f;     /* ln2 split in two parts */
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.166666672f + r * (0.0416666679f +
              r * (0.00833333377f + r * 0.00138888892f)))));
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float erf_poly(float x)
{
    float ax = x < 0.0f ? -x : x;
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float y = 1.0f - t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f +
              t * (-1.453152027f + t * 1.061405429f)))) * exp_poly(-ax * ax);
    return x < 0.0f ? -y : y;
}

void gelu_forward(float *y, const float *x, long n)
{
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++)
        y[i] = 0.5f * x[i] * (1.0f + erf_poly(x[i] * 0.70710678118654752f));
}

void gelu_backward(float *dx, const float *dy, const float *x, long n)
{
#pragma omp parallel for simd schedule(static)
    for (long i = 0; i < n; i++) {
        float cdf = 0.5f * (1.0f + erf_poly(x[i] * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * exp_poly(-0.5f * x[i] * x[i]);
        dx[i] += dy[i] * (cdf + x[i] * pdf);
    }
}

/* Row softmax of x / divisor (divisor 1: plain softmax), in place. */
static void softmax_rows_div(float *x, long rows, int n, float divisor)
{
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        float *row = x + r * n;
        for (int j = 0; j < n; j++) row[j] /= divisor;
        float mx = row[0];
#pragma omp simd reduction(max : mx)
        for (int j = 1; j < n; j++) mx = row[j] > mx ? row[j] : mx;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < n; j++) {
            row[j] = exp_poly(row[j] - mx); /* vectorised exp: a quarter of inference time */
            sum += row[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < n; j++) row[j] *= inv;
    }
}

void softmax_rows(float *x, long rows, int n) { softmax_rows_div(x, rows, n, 1.0f); }

/* ------------------------------------------------------------------------------------------ */
/* Bilinear resize, align_corners=False                                                        */
/* ------------------------------------------------------------------------------------------ */

/* Source index pair and weights for one output coordinate, as PyTorch computes them. */
typedef struct {
    int i0, i1;
    float w0, w1;
} lerp_tap;

static lerp_tap bilinear_tap(int dst, int in, int out)
{
    float scale = (float)in / (float)out;
    float src = ((float)dst + 0.5f) * scale - 0.5f;
    if (src < 0.0f) src = 0.0f;
    lerp_tap t;
    t.i0 = (int)src;
    if (t.i0 > in - 1) t.i0 = in - 1;
    t.i1 = t.i0 + (t.i0 < in - 1 ? 1 : 0);
    t.w1 = src - (float)t.i0;
    t.w0 = 1.0f - t.w1;
    return t;
}

/* out = (or +=, when add) the bilinear resize of in. */
static void bilinear_resize(float *out, int out_pitch, const float *in, int b, int hi, int wi,
                            int ho, int wo, int c, int add)
{
    long rows = (long)b * ho;
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        int oy = (int)(r % ho);
        long bb = r / ho;
        lerp_tap ty = bilinear_tap(oy, hi, ho);
        const float *row0 = in + (bb * hi + ty.i0) * wi * c;
        const float *row1 = in + (bb * hi + ty.i1) * wi * c;
        for (int ox = 0; ox < wo; ox++) {
            lerp_tap tx = bilinear_tap(ox, wi, wo);
            float *o = out + ((bb * ho + oy) * wo + ox) * out_pitch;
            const float *a = row0 + tx.i0 * c, *bq = row0 + tx.i1 * c;
            const float *cq = row1 + tx.i0 * c, *d = row1 + tx.i1 * c;
            for (int ch = 0; ch < c; ch++) {
                float v = ty.w0 * (tx.w0 * a[ch] + tx.w1 * bq[ch]) +
                          ty.w1 * (tx.w0 * cq[ch] + tx.w1 * d[ch]);
                o[ch] = add ? o[ch] + v : v;
            }
        }
    }
}

void bilinear_forward(float *out, int out_pitch, const float *in, int b, int hi, int wi, int ho,
                      int wo, int c)
{
    bilinear_resize(out, out_pitch, in, b, hi, wi, ho, wo, c, 0);
}

void bilinear_forward_add(float *out, int out_pitch, const float *in, int b, int hi, int wi,
                          int ho, int wo, int c)
{
    bilinear_resize(out, out_pitch, in, b, hi, wi, ho, wo, c, 1);
}

/* The outputs that read input index i form one run [*first, *last]: an output reads its taps
 * i0 and i1 = i0 or i0 + 1, and both grow with the output index. Found by binary search, so the
 * backward can gather without building index lists. */
static void bilinear_readers(int i, int in, int out, int *first, int *last)
{
    int lo = 0, hi = out; /* first output whose i1 >= i */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (bilinear_tap(mid, in, out).i1 >= i) hi = mid;
        else lo = mid + 1;
    }
    *first = lo;
    hi = out; /* one past the last output whose i0 <= i */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (bilinear_tap(mid, in, out).i0 <= i) lo = mid + 1;
        else hi = mid;
    }
    *last = lo - 1;
}

/* The weight with which output o reads input i (w0 + w1 when both taps clamp onto i). */
static float bilinear_weight(int o, int i, int in, int out)
{
    lerp_tap t = bilinear_tap(o, in, out);
    return (t.i0 == i ? t.w0 : 0.0f) + (t.i1 == i ? t.w1 : 0.0f);
}

void bilinear_backward(float *din, const float *dout, int out_pitch, int b, int hi, int wi, int ho,
                       int wo, int c)
{
    /* Gather: each input pixel sums the outputs that read it, so rows split across threads
     * without conflicts and every sum has a fixed order. */
    long rows = (long)b * hi;
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        int iy = (int)(r % hi), oy0, oy1;
        long bb = r / hi;
        bilinear_readers(iy, hi, ho, &oy0, &oy1);
        for (int ix = 0; ix < wi; ix++) {
            float *d = din + ((bb * hi + iy) * wi + ix) * c;
            int ox0, ox1;
            bilinear_readers(ix, wi, wo, &ox0, &ox1);
            for (int oy = oy0; oy <= oy1; oy++) {
                float wy = bilinear_weight(oy, iy, hi, ho);
                const float *grow = dout + (bb * ho + oy) * (long)wo * out_pitch;
                for (int ox = ox0; ox <= ox1; ox++) {
                    float w = wy * bilinear_weight(ox, ix, wi, wo);
                    const float *g = grow + (long)ox * out_pitch;
                    for (int ch = 0; ch < c; ch++) d[ch] += w * g[ch];
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* BatchNorm (decode head)                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* BatchNorm reductions run over rows for blocks of 16 channels, one block per thread: rows are
 * read contiguously and each sum has a fixed order whatever the thread count. */
enum { BN_BLOCK = 16 };

void batchnorm_train_forward(float *y, float *mean, float *rstd, float *running_mean,
                             float *running_var, const float *x, const float *g, const float *beta,
                             long m, int c, float eps, float momentum)
{
    int nblocks = (c + BN_BLOCK - 1) / BN_BLOCK;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        int c0 = blk * BN_BLOCK, nc = c0 + BN_BLOCK < c ? BN_BLOCK : c - c0;
        double sum[BN_BLOCK] = {0}, sq[BN_BLOCK] = {0};
        for (long i = 0; i < m; i++)
            for (int j = 0; j < nc; j++) sum[j] += x[i * c + c0 + j];
        double mu[BN_BLOCK];
        for (int j = 0; j < nc; j++) mu[j] = sum[j] / m;
        for (long i = 0; i < m; i++)
            for (int j = 0; j < nc; j++) {
                double d = x[i * c + c0 + j] - mu[j];
                sq[j] += d * d;
            }
        for (int j = 0; j < nc; j++) {
            int ch = c0 + j;
            double biased = sq[j] / m, unbiased = m > 1 ? sq[j] / (m - 1) : sq[j];
            mean[ch] = (float)mu[j];
            rstd[ch] = (float)(1.0 / sqrt(biased + eps));
            running_mean[ch] = (1.0f - momentum) * running_mean[ch] + momentum * (float)mu[j];
            running_var[ch] = (1.0f - momentum) * running_var[ch] + momentum * (float)unbiased;
        }
    }
#pragma omp parallel for schedule(static)
    for (long i = 0; i < m; i++)
        for (int ch = 0; ch < c; ch++)
            y[i * c + ch] = (x[i * c + ch] - mean[ch]) * rstd[ch] * g[ch] + beta[ch];
}

void batchnorm_eval_forward(float *y, const float *x, const float *running_mean,
                            const float *running_var, const float *g, const float *beta, long m,
                            int c, float eps)
{
#pragma omp parallel for schedule(static)
    for (long i = 0; i < m; i++)
        for (int ch = 0; ch < c; ch++)
            y[i * c + ch] = (x[i * c + ch] - running_mean[ch]) / sqrtf(running_var[ch] + eps) *
                                g[ch] + beta[ch];
}

void batchnorm_backward(float *dx, float *dg, float *dbeta, const float *dy, const float *x,
                        const float *mean, const float *rstd, const float *g, long m, int c)
{
    int nblocks = (c + BN_BLOCK - 1) / BN_BLOCK;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; blk++) {
        int c0 = blk * BN_BLOCK, nc = c0 + BN_BLOCK < c ? BN_BLOCK : c - c0;
        float sum_dy[BN_BLOCK] = {0}, sum_dy_xhat[BN_BLOCK] = {0};
        for (long i = 0; i < m; i++) {
            const float *xr = x + i * c + c0, *dyr = dy + i * c + c0;
            for (int j = 0; j < nc; j++) {
                sum_dy[j] += dyr[j];
                sum_dy_xhat[j] += dyr[j] * (xr[j] - mean[c0 + j]) * rstd[c0 + j];
            }
        }
        float k[BN_BLOCK], mdy[BN_BLOCK], mdyx[BN_BLOCK];
        for (int j = 0; j < nc; j++) {
            dg[c0 + j] += sum_dy_xhat[j];
            dbeta[c0 + j] += sum_dy[j];
            k[j] = g[c0 + j] * rstd[c0 + j];
            mdy[j] = sum_dy[j] / (float)m;
            mdyx[j] = sum_dy_xhat[j] / (float)m;
        }
        for (long i = 0; i < m; i++) {
            const float *xr = x + i * c + c0, *dyr = dy + i * c + c0;
            float *dxr = dx + i * c + c0;
            for (int j = 0; j < nc; j++) {
                float xhat = (xr[j] - mean[c0 + j]) * rstd[c0 + j];
                dxr[j] += k[j] * (dyr[j] - mdy[j] - xhat * mdyx[j]);
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Attention core                                                                              */
/* ------------------------------------------------------------------------------------------ */

void attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                       int n, int nr, int c, int heads, int chunk)
{
    int d = c / heads;
    float sqrt_d = sqrtf((float)d);
    int keep = chunk <= 0; /* training: keep every head's probabilities */
    for (int h = 0; h < heads; h++) {
        for (int r0 = 0; r0 < n; r0 += keep ? n : chunk) {
            int rows = keep ? n : (n - r0 < chunk ? n - r0 : chunk);
            float *p = keep ? probs + (size_t)h * n * nr : probs;
            /* S = (Q_h K_h^T) / sqrt(d): the product first, then the division, as HF does. */
            ls_gemm(0, 1, rows, nr, d, 1.0f, q + (size_t)r0 * c + h * d, c, k + h * d, c, 0.0f,
                    p, nr);
            softmax_rows_div(p, rows, nr, sqrt_d); /* one pass: divide, then softmax */
            ls_gemm(0, 0, rows, d, nr, 1.0f, p, nr, v + h * d, c, 0.0f,
                    out + (size_t)r0 * c + h * d, c);
        }
    }
}

void attention_backward(float *dq, float *dk, float *dv, float *dprobs, const float *dout,
                        const float *probs, const float *q, const float *k, const float *v, int n,
                        int nr, int c, int heads)
{
    int d = c / heads;
    float scale = 1.0f / sqrtf((float)d);
    for (int h = 0; h < heads; h++) {
        const float *p = probs + (size_t)h * n * nr;
        /* dV_h += P^T dO_h; dP = dO_h V_h^T */
        ls_gemm(1, 0, nr, d, n, 1.0f, p, nr, dout + h * d, c, 1.0f, dv + h * d, c);
        ls_gemm(0, 1, n, nr, d, 1.0f, dout + h * d, c, v + h * d, c, 0.0f, dprobs, nr);
        /* Softmax backward: dS = P * (dP - sum_j dP P), then the 1/sqrt(d) of the scores. */
#pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++) {
            const float *pr = p + (size_t)i * nr;
            float *dr = dprobs + (size_t)i * nr;
            float dot = 0.0f;
            for (int j = 0; j < nr; j++) dot += dr[j] * pr[j];
            for (int j = 0; j < nr; j++) dr[j] = pr[j] * (dr[j] - dot) * scale;
        }
        ls_gemm(0, 0, n, d, nr, 1.0f, dprobs, nr, k + h * d, c, 1.0f, dq + h * d, c);
        ls_gemm(1, 0, nr, d, n, 1.0f, dprobs, nr, q + h * d, c, 1.0f, dk + h * d, c);
    }
}
