/* Primitive kernels of SegFormer, each forward beside its backward.
 *
 * Conventions (one argument order everywhere): outputs first, then the inputs, then parameters,
 * then sizes. Token maps are channels-last: x[m * C + c] with m = (b * H + y) * W + x.
 * Backward functions ACCUMULATE (+=) into every gradient they are given. The input gradient dx
 * may be NULL where a layer's input needs none (linear, dwconv, col2im callers); parameter
 * gradients are always required, except linear's dw/dbias.
 */
#ifndef LS_OPS_H
#define LS_OPS_H

#include <stddef.h>
#include <stdint.h>

/* Row-major C = alpha * op(A) op(B) + beta * C, op = transpose when trans* is 1.
 * op(A) is M x K, op(B) is K x N. OpenBLAS when built with it, else the plain C reference. */
void ls_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc);
/* The plain C reference, kept for testing the fast path. */
void ls_gemm_ref(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc);

/* Linear: y[M, O] = x[M, I] * w[O, I]^T + bias[O] (bias may be NULL). */
void linear_forward(float *y, const float *x, const float *w, const float *bias, int m, int in,
                    int out);
void linear_backward(float *dx, float *dw, float *dbias, const float *dy, const float *x,
                     const float *w, int m, int in, int out);

/* Column sums: out[c] += sum_m a[m * C + c], deterministic for a fixed thread count. */
void colsum_accumulate(float *out, const float *a, long m, int c);

/* Input map addressing for im2col: element (b, y, x, c) lives at b*sb + y*sy + x*sx + c*sc,
 * which covers both an NCHW image and an NHWC token map. */
typedef struct {
    int b, h, w, c;
    long sb, sy, sx, sc;
} map_view;

map_view map_nchw(int b, int c, int h, int w);
map_view map_nhwc(int b, int h, int w, int c);
static inline int conv_out_size(int in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

/* col[(b*Ho + oy)*Wo + ox, (ci*k + ky)*k + kx] = x(b, oy*s - p + ky, ox*s - p + kx, ci), zero
 * outside; the column order matches a PyTorch conv weight [Cout, Cin, k, k]. */
void im2col(float *col, const float *x, map_view v, int k, int s, int p, int ho, int wo);
/* Transpose of im2col: dx(b, y, x, c) += dcol entries that read it. */
void col2im_accumulate(float *dx, const float *dcol, map_view v, int k, int s, int p, int ho,
                       int wo);

/* LayerNorm over the last dim C with biased variance: y = (x - mean) * rstd * g + beta.
 * mean and rstd [M] are kept for the backward. */
void layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *g,
                       const float *beta, long m, int c, float eps);
void layernorm_backward(float *dx, float *dg, float *dbeta, const float *dy, const float *x,
                        const float *mean, const float *rstd, const float *g, long m, int c);

/* Depthwise 3x3 conv, stride 1, padding 1, on NHWC [B, H, W, F]; w [F, 1, 3, 3], bias [F].
 * taps [9, F] is scratch for the weights reordered taps-major. */
void dwconv3x3_forward(float *y, const float *x, const float *w, const float *bias, float *taps,
                       int b, int h, int wd, int f);
void dwconv3x3_backward(float *dx, float *dw, float *dbias, const float *dy, const float *x,
                        const float *w, float *taps, int b, int h, int wd, int f);

/* Exact GELU, 0.5 x (1 + erf(x / sqrt 2)). */
void gelu_forward(float *y, const float *x, long n);
void gelu_backward(float *dx, const float *dy, const float *x, long n);

/* Row softmax in place over rows of length n (stable: the row max is subtracted). */
void softmax_rows(float *x, long rows, int n);

/* Bilinear resize, align_corners=False (PyTorch upsample_bilinear2d with a size):
 * in [B, hi, wi, C] channels-last -> out pixels of C channels at a pixel pitch of out_pitch
 * floats (so out may be a channel slice of a wider concat buffer). Overwrites out. */
void bilinear_forward(float *out, int out_pitch, const float *in, int b, int hi, int wi, int ho,
                      int wo, int c);
/* Same, adding into out. */
void bilinear_forward_add(float *out, int out_pitch, const float *in, int b, int hi, int wi,
                          int ho, int wo, int c);
void bilinear_backward(float *din, const float *dout, int out_pitch, int b, int hi, int wi, int ho,
                       int wo, int c);

/* BatchNorm over rows (M = B*H*W) per channel C. Training: batch mean and biased variance, and the
 * running stats move by momentum with the unbiased variance. mean/rstd [C] kept for backward. */
void batchnorm_train_forward(float *y, float *mean, float *rstd, float *running_mean,
                             float *running_var, const float *x, const float *g, const float *beta,
                             long m, int c, float eps, float momentum);
void batchnorm_eval_forward(float *y, const float *x, const float *running_mean,
                            const float *running_var, const float *g, const float *beta, long m,
                            int c, float eps);
void batchnorm_backward(float *dx, float *dg, float *dbeta, const float *dy, const float *x,
                        const float *mean, const float *rstd, const float *g, long m, int c);

/* Multi-head attention core for one sample. q [N, C], k and v [Nr, C] with heads of d = C / h
 * channels (channel c is head c / d); out [N, C]. With chunk 0, probs [h, N, Nr] are kept for
 * the backward; with chunk > 0 (inference), probs is a [min(chunk, N), Nr] scratch and queries
 * are done chunk rows at a time, so the full score matrix never exists (exact, row by row). */
void attention_forward(float *out, float *probs, const float *q, const float *k, const float *v,
                       int n, int nr, int c, int heads, int chunk);
void attention_backward(float *dq, float *dk, float *dv, float *dprobs, const float *dout,
                        const float *probs, const float *q, const float *k, const float *v, int n,
                        int nr, int c, int heads);

#endif
