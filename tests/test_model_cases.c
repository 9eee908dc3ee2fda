/* Model-level input cases with exact values (/work/shared/design/input-cases.md):
 *  7  odd and tiny sizes: stage and key grids of b0 at 121x97, the 29-pixel minimum, masks of
 *     exactly the input size from ls_segment_image;
 *  8  one bilinear upsampling (align_corners=False) before argmax;
 *  9  label maps resize by nearest with half-pixel centres;
 *  11 loss semantics: all-ignore, mean over valid pixels, large logits, bad label values;
 *  12 eval BatchNorm independent of the batch; training with batch 1;
 *  13 checkpoint loading: head-size skips, variant mismatch, "module." names, damaged files,
 *     and files holding NaN or Inf (refused, naming the tensor). */
#include "leukoseg.h"
#include "model.h"
#include "ops.h"
#include "testutil.h"

#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static ls_rng rng;

static void fill_normal(float *a, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) a[i] = scale * ls_rng_normal(&rng);
}

static int all_finite(const float *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i])) return 0;
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Case 7: odd and tiny sizes                                                                  */
/* ------------------------------------------------------------------------------------------ */

static void segment_size(ls_model *m, int w, int h)
{
    ls_error err = {{0}};
    ls_image img = {w, h, malloc((size_t)w * h * 3)};
    for (int i = 0; i < w * h * 3; i++) img.data[i] = (uint8_t)ls_rng_int(&rng, 256);
    ls_mask mask = {0, 0, NULL};
    float *probs = NULL;
    CHECK_OK(ls_segment_image(m, &img, &mask, &probs, &err), err);
    CHECK(mask.w == w && mask.h == h && mask.data != NULL);
    if (mask.data && probs) {
        int in_range = 1, sums_ok = 1;
        for (int p = 0; p < w * h; p++) {
            in_range &= mask.data[p] < 3;
            sums_ok &= fabs(probs[p * 3] + probs[p * 3 + 1] + probs[p * 3 + 2] - 1.0) < 1e-5;
        }
        CHECK(in_range);
        CHECK(sums_ok);
    }
    printf("  segment %dx%d -> mask %dx%d\n", w, h, mask.w, mask.h);
    free(probs);
    ls_mask_free(&mask);
    ls_image_free(&img);
}

static void test_case7_sizes(void)
{
    printf("case 7: odd and tiny sizes (b0)\n");
    ls_error err = {{0}};
    ls_config cfg;
    CHECK_OK(ls_config_for_variant("b0", 3, &cfg, &err), err);
    ls_model *m = NULL;
    CHECK_OK(ls_model_create(&cfg, 1, &m, &err), err);
    if (!m) return;
    CHECK(ls_min_input_side(&cfg) == 29);

    /* 121 wide, 97 high: grids are W x H. */
    ls_workspace *ws = NULL;
    CHECK_OK(ls_workspace_create(m, 1, 97, 121, 0, &ws, &err), err);
    if (ws) {
        static const int gw[4] = {31, 16, 8, 4}, gh[4] = {25, 13, 7, 4};
        static const int rw[4] = {3, 4, 4, 4}, rh[4] = {3, 3, 3, 4};
        for (int i = 0; i < 4; i++) {
            const stage_acts *s = &ws->stage[i];
            printf("  stage %d grid %dx%d keys %dx%d\n", i + 1, s->w, s->h, s->wr, s->hr);
            CHECK(s->w == gw[i] && s->h == gh[i]);
            CHECK(s->wr == rw[i] && s->hr == rh[i]);
            CHECK(s->n == gw[i] * gh[i] && s->nr == rw[i] * rh[i]);
        }
        int h4 = 0, w4 = 0;
        ls_workspace_logits(ws, &h4, &w4);
        CHECK(w4 == 31 && h4 == 25);
        /* A real forward at the odd size (under the sanitizer build: no out-of-bounds access). */
        float *x = malloc(sizeof(float) * 3 * 97 * 121);
        float *logits = malloc(sizeof(float) * 3 * 25 * 31);
        fill_normal(x, (size_t)3 * 97 * 121, 1.0f);
        CHECK_OK(ls_model_forward(m, ws, x, 0, NULL, logits, &err), err);
        CHECK(all_finite(logits, (size_t)3 * 25 * 31));
        free(x);
        free(logits);
        ls_workspace_free(ws);
    }

    ws = NULL;
    CHECK_OK(ls_workspace_create(m, 1, 29, 29, 0, &ws, &err), err);
    if (ws) {
        float x[3 * 29 * 29];
        fill_normal(x, 3 * 29 * 29, 1.0f);
        CHECK_OK(ls_model_forward(m, ws, x, 0, NULL, NULL, &err), err);
        CHECK(ws->stage[0].nr == 1 && ws->stage[3].nr == 1);
        ls_workspace_free(ws);
    }
    static const int bad[3][2] = {{28, 28}, {28, 29}, {29, 28}};
    for (int k = 0; k < 3; k++) {
        ws = NULL;
        err.msg[0] = '\0';
        ls_status st = ls_workspace_create(m, 1, bad[k][0], bad[k][1], 0, &ws, &err);
        CHECK(st == LS_ERR_SHAPE && ws == NULL);
        CHECK(strstr(err.msg, "29") != NULL);
        if (k == 0) printf("  28x28: %s\n", err.msg);
        ls_workspace_free(ws);
    }

    /* ls_segment_image runs the model at its input_size and returns masks of the image size. */
    CHECK_OK(ls_model_set_meta(m, "input_size", "64x64", &err), err);
    static const int sizes[5][2] = {{1, 1}, {3, 5}, {28, 28}, {29, 29}, {121, 97}};
    for (int k = 0; k < 5; k++) segment_size(m, sizes[k][0], sizes[k][1]);
    /* The model itself at 121x97, without resizing. */
    CHECK_OK(ls_model_set_meta(m, "input_size", "121x97", &err), err);
    segment_size(m, 121, 97);
    /* A model input below the minimum is a clear error, not a crash. */
    CHECK_OK(ls_model_set_meta(m, "input_size", "28x28", &err), err);
    ls_image img = {5, 3, calloc(5 * 3 * 3, 1)};
    ls_mask mask = {0, 0, NULL};
    CHECK(ls_segment_image(m, &img, &mask, NULL, &err) == LS_ERR_SHAPE);
    CHECK(mask.data == NULL && strstr(err.msg, "29") != NULL);
    ls_image_free(&img);
    ls_model_free(m);
}

/* ------------------------------------------------------------------------------------------ */
/* Cases 8 and 9: output geometry                                                              */
/* ------------------------------------------------------------------------------------------ */

static void test_case8_upsampling(void)
{
    printf("case 8: one bilinear upsampling, align_corners=False\n");
    /* NHWC [1, 1, 3, 2]: class 0 logit 0, class 1 logit = the difference [-1, -1, +1]. */
    const float logits[6] = {0.0f, -1.0f, 0.0f, -1.0f, 0.0f, 1.0f};
    float up[12 * 2];
    uint8_t labels[12];
    bilinear_forward(up, 2, logits, 1, 1, 3, 1, 12, 2);
    ls_argmax(up, 12, 2, labels);
    char row[13];
    for (int x = 0; x < 12; x++) {
        CHECK(labels[x] == (x >= 8 ? 1 : 0));
        row[x] = (char)('0' + labels[x]);
    }
    row[12] = '\0';
    printf("  columns 0..11: %s\n", row);
    /* Column 8 samples 1.625 (+0.25), column 7 samples 1.375 (-0.25). */
    CHECK_NEAR(up[8 * 2 + 1] - up[8 * 2], 0.25, 1e-6);
    CHECK_NEAR(up[7 * 2 + 1] - up[7 * 2], -0.25, 1e-6);
}

static void test_case9_nearest(void)
{
    printf("case 9: label maps resize by nearest, half-pixel centred\n");
    ls_error err = {{0}};
    uint8_t src1[3] = {0, 1, 2}, src2[3] = {0, 255, 2};
    const uint8_t want1[7] = {0, 0, 1, 1, 1, 2, 2}, want2[7] = {0, 0, 255, 255, 255, 2, 2};
    for (int vertical = 0; vertical < 2; vertical++) {
        for (int k = 0; k < 2; k++) {
            ls_mask src = {vertical ? 1 : 3, vertical ? 3 : 1, k ? src2 : src1};
            ls_mask dst = {0, 0, NULL};
            CHECK_OK(ls_mask_resize_nearest(&src, vertical ? 1 : 7, vertical ? 7 : 1, &dst, &err),
                     err);
            CHECK(dst.data && dst.w * dst.h == 7);
            if (dst.data) CHECK(memcmp(dst.data, k ? want2 : want1, 7) == 0);
            ls_mask_free(&dst);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Case 11: loss semantics                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Sets every logit of the workspace to `pattern` (one value per class). */
static void set_logits(ls_workspace *ws, const float *pattern, int k)
{
    int h4, w4;
    float *lg = (float *)ls_workspace_logits(ws, &h4, &w4);
    for (size_t p = 0; p < (size_t)ws->batch * h4 * w4; p++)
        for (int c = 0; c < k; c++) lg[p * k + c] = pattern[c];
}

static void test_case11_loss(void)
{
    printf("case 11: loss semantics\n");
    ls_error err = {{0}};
    int b = 2, h = 64, w = 64, h4 = 16, w4 = 16;
    size_t npx = (size_t)b * h * w;
    float *x = malloc(sizeof(float) * 3 * npx);
    fill_normal(x, 3 * npx, 1.0f);
    uint8_t *labels = malloc(npx);
    float loss = -1.0f;

    /* All-ignore: loss 0 and every gradient exactly 0, with dropout and drop path active. */
    ls_model *m = tu_tiny_model(3, 0.3f, 0.3f, 3);
    ls_workspace *ws = NULL;
    CHECK_OK(ls_workspace_create(m, b, h, w, 1, &ws, &err), err);
    if (!m || !ws) return;
    ls_rng drop_rng;
    ls_rng_seed(&drop_rng, 5);
    CHECK_OK(ls_model_forward(m, ws, x, 1, &drop_rng, NULL, &err), err);
    memset(labels, LS_IGNORE, npx);
    for (int at_logit_size = 0; at_logit_size < 2; at_logit_size++) {
        ls_model_zero_grad(m);
        loss = -1.0f;
        int lh = at_logit_size ? h4 : h, lw = at_logit_size ? w4 : w;
        CHECK_OK(ls_model_loss(m, ws, labels, lh, lw, &loss, &err), err);
        CHECK(loss == 0.0f);
        size_t nz = 0;
        for (size_t i = 0; i < (size_t)b * h4 * w4 * 3; i++) nz += ws->d_logits[i] != 0.0f;
        CHECK(nz == 0);
        CHECK_OK(ls_model_backward(m, ws, &err), err);
        const float *g = ls_model_grads(m);
        nz = 0;
        for (size_t i = 0; i < ls_model_num_weights(m); i++) nz += g[i] != 0.0f; /* NaN counts */
        CHECK(nz == 0);
        printf("  all-ignore %dx%d labels: loss %g, %zu non-zero gradients\n", lw, lh,
               (double)loss, nz);
    }

    /* A label that is neither a class nor 255 is an argument error naming the value. */
    memset(labels, 0, npx);
    labels[npx / 2] = 7;
    err.msg[0] = '\0';
    CHECK(ls_model_loss(m, ws, labels, h, w, &loss, &err) == LS_ERR_ARG);
    CHECK(strstr(err.msg, "7") != NULL);
    printf("  label 7 with 3 classes: %s\n", err.msg);
    ls_workspace_free(ws);
    ls_model_free(m);

    /* Two classes, logits set directly after a forward. */
    m = tu_tiny_model(2, 0.1f, 0.1f, 4);
    ws = NULL;
    CHECK_OK(ls_workspace_create(m, b, h, w, 1, &ws, &err), err);
    if (!m || !ws) return;
    CHECK_OK(ls_model_forward(m, ws, x, 1, &drop_rng, NULL, &err), err);
    const double want = log1p(exp(-2.0)); /* 0.126928 */

    /* The 2x2 mask [[0,255],[255,255]] (second sample all ignore) with logits [2, 0]
     * everywhere: bilinear of a constant is that constant, so the one valid pixel sees [2, 0]. */
    const float two_zero[2] = {2.0f, 0.0f};
    set_logits(ws, two_zero, 2);
    const uint8_t mask2[8] = {0, 255, 255, 255, 255, 255, 255, 255};
    CHECK_OK(ls_model_loss(m, ws, mask2, 2, 2, &loss, &err), err);
    printf("  2x2 mask, logits [2,0]: loss %.7f (log(1+e^-2) = %.7f)\n", (double)loss, want);
    CHECK_NEAR(loss, want, 1e-6);

    /* Same at the logit size (the upsampling is an exact copy): random logits elsewhere, only
     * pixel (0, 0) of sample 0 valid. */
    int h4b, w4b;
    float *lg = (float *)ls_workspace_logits(ws, &h4b, &w4b);
    CHECK(h4b == h4 && w4b == w4);
    fill_normal(lg, (size_t)b * h4 * w4 * 2, 3.0f);
    lg[0] = 2.0f;
    lg[1] = 0.0f;
    uint8_t *small = malloc((size_t)b * h4 * w4);
    memset(small, LS_IGNORE, (size_t)b * h4 * w4);
    small[0] = 0;
    CHECK_OK(ls_model_loss(m, ws, small, h4, w4, &loss, &err), err);
    CHECK_NEAR(loss, want, 1e-6);
    /* Its gradient: softmax - onehot at that pixel only, divided by 1 valid pixel. */
    CHECK_NEAR(ws->d_logits[0], 1.0 / (1.0 + exp(-2.0)) - 1.0, 1e-6);
    CHECK_NEAR(ws->d_logits[1], 1.0 / (1.0 + exp(2.0)), 1e-6);
    size_t nz = 0;
    for (size_t i = 2; i < (size_t)b * h4 * w4 * 2; i++) nz += ws->d_logits[i] != 0.0f;
    CHECK(nz == 0);

    /* Logits [1000, 0] with target 1: exactly 1000 (no overflow, no log(0)), one valid pixel and
     * all pixels valid. */
    lg[0] = 1000.0f;
    lg[1] = 0.0f;
    small[0] = 1;
    CHECK_OK(ls_model_loss(m, ws, small, h4, w4, &loss, &err), err);
    CHECK(loss == 1000.0f);
    const float big[2] = {1000.0f, 0.0f};
    set_logits(ws, big, 2);
    memset(small, 1, (size_t)b * h4 * w4);
    CHECK_OK(ls_model_loss(m, ws, small, h4, w4, &loss, &err), err);
    printf("  logits [1000,0], target 1: loss %.9g\n", (double)loss);
    CHECK(loss == 1000.0f);
    CHECK(all_finite(ws->d_logits, (size_t)b * h4 * w4 * 2));
    ls_model_zero_grad(m);
    CHECK_OK(ls_model_backward(m, ws, &err), err);
    free(small);
    ls_workspace_free(ws);
    ls_model_free(m);
    free(labels);
    free(x);
}

/* ------------------------------------------------------------------------------------------ */
/* Case 12: BatchNorm                                                                          */
/* ------------------------------------------------------------------------------------------ */

/* Eval logits of each of 3 images alone against the same images in one batch of 3. */
static void eval_alone_vs_batch(ls_model *m, const char *name, int serial, int strict, int h,
                                int w)
{
    ls_error err = {{0}};
    int nl = ls_model_config(m)->num_labels, d = ls_model_config(m)->decoder_hidden;
    for (int c = 0; c < d; c++) {
        ls_model_bn_running_mean(m)[c] = 0.1f * ls_rng_normal(&rng);
        ls_model_bn_running_var(m)[c] = 0.5f + ls_rng_uniform(&rng);
    }
    size_t img = (size_t)3 * h * w, nlog = (size_t)nl * ((h + 3) / 4) * ((w + 3) / 4);
    float *x3 = malloc(sizeof(float) * 3 * img);
    fill_normal(x3, 3 * img, 1.0f);
    float *batch_logits = malloc(sizeof(float) * 3 * nlog), *one = malloc(sizeof(float) * nlog);
    ls_workspace *ws3 = NULL, *ws1 = NULL;
    CHECK_OK(ls_workspace_create(m, 3, h, w, 0, &ws3, &err), err);
    CHECK_OK(ls_workspace_create(m, 1, h, w, 0, &ws1, &err), err);
#ifdef _OPENMP
    int threads = omp_get_max_threads();
    if (serial) omp_set_num_threads(1);
#elif defined(LS_HAVE_CBLAS)
    /* Without OpenMP here, OpenBLAS still threads with its own pool, which this test cannot
     * limit: "1 thread" is not what runs, so bit-identity cannot be required. */
    strict = 0;
#endif
    if (ws3 && ws1) {
        CHECK_OK(ls_model_forward(m, ws3, x3, 0, NULL, batch_logits, &err), err);
        for (int i = 0; i < 3; i++) {
            CHECK_OK(ls_model_forward(m, ws1, x3 + i * img, 0, NULL, one, &err), err);
            int same = memcmp(one, batch_logits + i * nlog, sizeof(float) * nlog) == 0;
            double worst = 0.0;
            for (size_t k = 0; k < nlog; k++)
                worst = fmax(worst, fabs((double)one[k] - batch_logits[i * nlog + k]) /
                                        (1.0 + fabs(one[k])));
            printf("  eval %s %dx%d image %d alone vs in a batch of 3, %s: %s (max rel diff "
                   "%.3g)\n", name, w, h, i, serial ? "1 thread" : "default threads",
                   same ? "bit-identical" : "differ", worst);
            if (strict) CHECK(same);
            else CHECK(worst <= 1e-6);
        }
    }
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    ls_workspace_free(ws3);
    ls_workspace_free(ws1);
    free(x3);
    free(batch_logits);
    free(one);
}

static void test_case12_batchnorm(void)
{
    printf("case 12: BatchNorm\n");
    ls_error err = {{0}};
    ls_config cfg;
    CHECK_OK(ls_config_for_variant("b0", 3, &cfg, &err), err);
    ls_model *m = NULL;
    CHECK_OK(ls_model_create(&cfg, 2, &m, &err), err);
    ls_model *tiny = tu_tiny_model(3, 0.1f, 0.1f, 5);
    if (!m || !tiny) return;
    int d = cfg.decoder_hidden, h = 64, w = 64;

    /* Eval: each image alone gives the bits it gets in a batch of 3 (BN uses its running stats,
     * never the batch). Required bit for bit on one thread at 64x64, where every product computes
     * a row the same way whatever the row count. Measured exceptions, checked to stay at rounding
     * level (1e-6) and printed, not required to be zero:
     *  - more threads: OpenBLAS threads a product only above a size, so the batch-3 sr/key
     *    products ([12, 2048] x [2048, 32] at 64x64) run threaded and round differently from
     *    batch 1 ([4, 2048], single-threaded): ~4e-8 relative on the logits;
     *  - 29x29, even on one thread: one key per stage makes the batch-1 sr/key products M = 1,
     *    and OpenBLAS computes an M = 1 product differently from rows 0 and 1 of an M = 3 one
     *    (measured in isolation too; row 2 matches).
     * BLAS=0 builds are bit-identical in all of these. */
    eval_alone_vs_batch(m, "b0", 1, 1, h, w);
    eval_alone_vs_batch(m, "b0", 1, 0, 29, 29);
    eval_alone_vs_batch(m, "b0", 0, 0, h, w);
    eval_alone_vs_batch(tiny, "tiny", 0, 0, h, w);
    ls_model_free(tiny);
    float *rm = ls_model_bn_running_mean(m), *rv = ls_model_bn_running_var(m);
    size_t img = (size_t)3 * h * w;
    float *x3 = malloc(sizeof(float) * img);
    fill_normal(x3, img, 1.0f);

    /* Training with batch 1: BN averages over H*W; running_var stays finite and positive, also
     * for a constant image. */
    ls_workspace *ws = NULL;
    CHECK_OK(ls_workspace_create(m, 1, h, w, 1, &ws, &err), err);
    uint8_t *labels = malloc((size_t)h * w);
    for (int i = 0; i < h * w; i++) labels[i] = (uint8_t)ls_rng_int(&rng, 3);
    ls_rng drop_rng;
    ls_rng_seed(&drop_rng, 9);
    for (int step = 0; ws && step < 2; step++) {
        if (step == 1) memset(x3, 0, sizeof(float) * img);
        float loss = NAN;
        int64_t before = ls_model_bn_batches_tracked(m);
        ls_model_zero_grad(m);
        CHECK_OK(ls_model_forward(m, ws, x3, 1, &drop_rng, NULL, &err), err);
        CHECK_OK(ls_model_loss(m, ws, labels, h, w, &loss, &err), err);
        CHECK_OK(ls_model_backward(m, ws, &err), err);
        CHECK(isfinite(loss));
        CHECK(ls_model_bn_batches_tracked(m) == before + 1);
        int ok = 1;
        for (int c = 0; c < d; c++) ok &= isfinite(rv[c]) && rv[c] > 0.0f && isfinite(rm[c]);
        CHECK(ok);
        printf("  training batch 1 (%s image): loss %.5f, running stats finite: %s\n",
               step ? "constant" : "random", (double)loss, ok ? "yes" : "NO");
    }
    ls_workspace_free(ws);
    free(labels);
    free(x3);
    ls_model_free(m);
}

/* An eval workspace keeps attention probabilities only as a scratch of one chunk of
 * LS_ATTN_CHUNK query rows, reused by every head; its logits must match an eval forward on a
 * training workspace, which keeps every head's map. 64x64: one chunk and several heads per stage
 * (a scratch of one head's map indexed per head once overwrote the next buffers and moved logits
 * by ~1%); 132x132: stage 1 has 33x33 = 1089 queries, a chunk of 1024 and one of 65. */
static void test_eval_workspace(void)
{
    printf("eval workspace (attention scratch) vs training workspace\n");
    ls_error err = {{0}};
    ls_model *m = tu_tiny_model(3, 0.1f, 0.1f, 6);
    static const int sides[2] = {64, 132};
    for (int t = 0; m && t < 2; t++) {
        int side = sides[t], h4 = (side + 3) / 4;
        size_t nx = (size_t)2 * 3 * side * side, nl = (size_t)2 * 3 * h4 * h4;
        float *x = malloc(sizeof(float) * nx);
        float *a = malloc(sizeof(float) * nl), *b = malloc(sizeof(float) * nl);
        fill_normal(x, nx, 1.0f);
        ls_workspace *we = NULL, *wt = NULL;
        CHECK_OK(ls_workspace_create(m, 2, side, side, 0, &we, &err), err);
        CHECK_OK(ls_workspace_create(m, 2, side, side, 1, &wt, &err), err);
        if (we && wt) {
            CHECK_OK(ls_model_forward(m, we, x, 0, NULL, a, &err), err);
            CHECK_OK(ls_model_forward(m, wt, x, 0, NULL, b, &err), err);
            double worst = 0.0;
            for (size_t k = 0; k < nl; k++)
                worst = fmax(worst, fabs((double)a[k] - b[k]) / (1.0 + fabs(b[k])));
            printf("  %dx%d (stage 1: %d queries): max rel diff %.3g\n", side, side,
                   we->stage[0].n, worst);
            /* One chunk runs the very same products; two chunks round their row counts. */
            if (we->stage[0].n <= LS_ATTN_CHUNK) CHECK(worst == 0.0);
            else CHECK(worst <= 1e-6);
        }
        ls_workspace_free(we);
        ls_workspace_free(wt);
        free(x);
        free(a);
        free(b);
    }
    ls_model_free(m);
}

/* A training forward without an rng draws no dropout and no drop path (ls_model_forward), so its
 * gradients must equal those of the same weights with both rates 0. The head's backward must then
 * not read the dropout output buffer that this forward never wrote. */
static void test_training_without_rng(void)
{
    printf("training forward without rng: no dropout\n");
    ls_error err = {{0}};
    ls_model *a = tu_tiny_model(3, 0.3f, 0.3f, 11), *b = tu_tiny_model(3, 0.0f, 0.0f, 11);
    if (!a || !b) return;
    int n = 2, h = 32, w = 32;
    float *x = malloc(sizeof(float) * n * 3 * h * w);
    fill_normal(x, (size_t)n * 3 * h * w, 1.0f);
    uint8_t *labels = malloc((size_t)n * h * w);
    for (int i = 0; i < n * h * w; i++) labels[i] = (uint8_t)ls_rng_int(&rng, 3);
    ls_model *models[2] = {a, b};
    float losses[2] = {0.0f, 0.0f};
    for (int k = 0; k < 2; k++) {
        ls_workspace *ws = NULL;
        CHECK_OK(ls_workspace_create(models[k], n, h, w, 1, &ws, &err), err);
        if (!ws) continue;
        /* Fill the arena with garbage first: a read of a buffer the forward did not write then
         * shows up as a difference, not as a lucky zero. */
        for (size_t i = 0; i < ws->arena_floats; i++) ws->arena[i] = 1e3f;
        ls_model_zero_grad(models[k]);
        CHECK_OK(ls_model_forward(models[k], ws, x, 1, NULL, NULL, &err), err);
        CHECK_OK(ls_model_loss(models[k], ws, labels, h, w, &losses[k], &err), err);
        CHECK_OK(ls_model_backward(models[k], ws, &err), err);
        ls_workspace_free(ws);
    }
    CHECK(losses[0] == losses[1]);
    double worst = 0.0;
    const float *ga = ls_model_grads(a), *gb = ls_model_grads(b);
    for (size_t i = 0; i < ls_model_num_weights(a); i++)
        worst = fmax(worst, fabs((double)ga[i] - gb[i]));
    printf("  max |grad difference| vs rates 0: %.3g\n", worst);
    CHECK(worst == 0.0);
    free(x);
    free(labels);
    ls_model_free(a);
    ls_model_free(b);
}

/* ------------------------------------------------------------------------------------------ */
/* Case 13: checkpoint names and head size                                                     */
/* ------------------------------------------------------------------------------------------ */

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static int is_classifier(const char *name)
{
    return strstr(name, "decode_head.classifier.") != NULL;
}

/* Copies the first `len` bytes of src to dst (a damaged copy). */
static void write_prefix(const char *src, const char *dst, long len)
{
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    CHECK(in && out);
    if (in && out) {
        char buf[4096];
        long left = len;
        while (left > 0) {
            size_t want = left < (long)sizeof buf ? (size_t)left : sizeof buf;
            size_t got = fread(buf, 1, want, in);
            if (got == 0) break;
            fwrite(buf, 1, got, out);
            left -= (long)got;
        }
    }
    if (in) fclose(in);
    if (out) fclose(out);
}

static long file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

static void test_case13_checkpoints(void)
{
    printf("case 13: checkpoint names and head size\n");
    ls_error err = {{0}};
    char dir[] = "/tmp/ls_model_cases_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char five_path[96], module_path[96], trunc_path[96], b1_path[96];
    snprintf(five_path, sizeof five_path, "%s/five.safetensors", dir);
    snprintf(module_path, sizeof module_path, "%s/module.safetensors", dir);
    snprintf(trunc_path, sizeof trunc_path, "%s/trunc.safetensors", dir);
    snprintf(b1_path, sizeof b1_path, "%s/b1.safetensors", dir);

    /* A 5-class file into a 3-class model: everything but the classifier is copied. */
    ls_model *five = tu_tiny_model(5, 0.1f, 0.1f, 21), *three = tu_tiny_model(3, 0.1f, 0.1f, 22);
    if (!five || !three) return;
    fill_normal(ls_model_weights(five), ls_model_num_weights(five), 0.1f);
    int d = ls_model_config(five)->decoder_hidden;
    for (int c = 0; c < d; c++) {
        ls_model_bn_running_mean(five)[c] = 0.1f * ls_rng_normal(&rng);
        ls_model_bn_running_var(five)[c] = 0.5f + ls_rng_uniform(&rng);
    }
    CHECK_OK(ls_model_save(five, five_path, &err), err);
    float *before = malloc(sizeof(float) * ls_model_num_weights(three));
    memcpy(before, ls_model_weights(three), sizeof(float) * ls_model_num_weights(three));
    char report[4096];
    CHECK_OK(ls_model_load_weights(three, five_path, 1, report, sizeof report, &err), err);
    printf("  5 -> 3 classes, report:\n%s", report);
    CHECK(count_lines(report) == 2);
    CHECK(strstr(report, "skipped decode_head.classifier.weight") != NULL);
    CHECK(strstr(report, "skipped decode_head.classifier.bias") != NULL);
    CHECK(ls_model_num_params(three) == ls_model_num_params(five));
    int copied = 0, kept = 0, wrong = 0;
    for (int i = 0; i < ls_model_num_params(three); i++) {
        const ls_param *p = ls_model_param(three, i), *q = ls_model_param(five, i);
        const float *got = ls_model_weights(three) + p->offset;
        if (is_classifier(p->name)) {
            kept += memcmp(got, before + p->offset, sizeof(float) * p->numel) == 0;
        } else {
            int same = strcmp(p->name, q->name) == 0 && p->numel == q->numel &&
                       memcmp(got, ls_model_weights(five) + q->offset,
                              sizeof(float) * p->numel) == 0;
            copied += same;
            wrong += !same;
        }
    }
    printf("  %d tensors copied, %d classifier tensors kept, %d wrong\n", copied, kept, wrong);
    CHECK(wrong == 0 && kept == 2 && copied == ls_model_num_params(three) - 2);
    CHECK(memcmp(ls_model_bn_running_mean(three), ls_model_bn_running_mean(five),
                 sizeof(float) * d) == 0);
    CHECK(memcmp(ls_model_bn_running_var(three), ls_model_bn_running_var(five),
                 sizeof(float) * d) == 0);
    /* Without allow_skip the same file is an error naming the classifier and both shapes. */
    err.msg[0] = '\0';
    CHECK(ls_model_load_weights(three, five_path, 0, NULL, 0, &err) == LS_ERR_SHAPE);
    CHECK(strstr(err.msg, "decode_head.classifier.weight") && strstr(err.msg, "[5, 16, 1, 1]") &&
          strstr(err.msg, "[3, 16, 1, 1]"));

    /* The same tensors under "module." names (a DataParallel checkpoint) load into a 5-class
     * model; so does the whole model file. */
    ls_tensor_file tf;
    CHECK_OK(ls_safetensors_load(five_path, &tf, &err), err);
    for (int i = 0; i < tf.n; i++) {
        size_t len = strlen(tf.tensors[i].name) + 8;
        char *name = malloc(len);
        snprintf(name, len, "module.%s", tf.tensors[i].name);
        free(tf.tensors[i].name);
        tf.tensors[i].name = name;
    }
    CHECK_OK(ls_safetensors_save(module_path, &tf, &err), err);
    ls_tensor_file_free(&tf);
    ls_model *five2 = tu_tiny_model(5, 0.1f, 0.1f, 23);
    report[0] = 'x';
    CHECK_OK(ls_model_load_weights(five2, module_path, 0, report, sizeof report, &err), err);
    CHECK(report[0] == '\0');
    CHECK(memcmp(ls_model_weights(five2), ls_model_weights(five),
                 sizeof(float) * ls_model_num_weights(five)) == 0);
    CHECK(memcmp(ls_model_bn_running_var(five2), ls_model_bn_running_var(five),
                 sizeof(float) * d) == 0);
    ls_model *loaded = NULL;
    CHECK_OK(ls_model_load(module_path, &loaded, &err), err);
    if (loaded)
        CHECK(ls_model_num_weights(loaded) == ls_model_num_weights(five) &&
              memcmp(ls_model_weights(loaded), ls_model_weights(five),
                     sizeof(float) * ls_model_num_weights(five)) == 0);
    ls_model_free(loaded);
    ls_model_free(five2);

    /* Damaged files: cut in the tensor data, in the header, and inside the 8-byte length. */
    long full = file_size(five_path);
    const long cuts[3] = {full / 2, 40, 5};
    for (int k = 0; k < 3; k++) {
        write_prefix(five_path, trunc_path, cuts[k]);
        err.msg[0] = '\0';
        ls_status st = ls_model_load_weights(three, trunc_path, 1, report, sizeof report, &err);
        CHECK(st == LS_ERR_FORMAT);
        if (k == 0) printf("  truncated to %ld of %ld bytes: %s\n", cuts[k], full, err.msg);
        loaded = NULL;
        CHECK(ls_model_load(trunc_path, &loaded, &err) == LS_ERR_FORMAT && loaded == NULL);
    }
    ls_model_free(three);
    ls_model_free(five);
    free(before);

    /* A b1 file into b0: the first mismatching tensor (the first patch embedding) and both shapes
     * are named, and the model is left as it was. */
    ls_config c1, c0;
    CHECK_OK(ls_config_for_variant("b1", 3, &c1, &err), err);
    CHECK_OK(ls_config_for_variant("b0", 3, &c0, &err), err);
    ls_model *b1 = NULL, *b0 = NULL;
    CHECK_OK(ls_model_create(&c1, 1, &b1, &err), err);
    CHECK_OK(ls_model_create(&c0, 2, &b0, &err), err);
    if (b1 && b0) {
        CHECK_OK(ls_model_save(b1, b1_path, &err), err);
        ls_model_free(b1);
        b1 = NULL;
        size_t nw = ls_model_num_weights(b0);
        float *w0 = malloc(sizeof(float) * nw);
        memcpy(w0, ls_model_weights(b0), sizeof(float) * nw);
        err.msg[0] = '\0';
        CHECK(ls_model_load_weights(b0, b1_path, 0, NULL, 0, &err) == LS_ERR_SHAPE);
        printf("  b1 into b0: %s\n", err.msg);
        CHECK(strstr(err.msg, "segformer.encoder.patch_embeddings.0.proj.weight") != NULL);
        CHECK(strstr(err.msg, "[64, 3, 7, 7]") != NULL && strstr(err.msg, "[32, 3, 7, 7]") != NULL);
        CHECK(memcmp(w0, ls_model_weights(b0), sizeof(float) * nw) == 0);
        free(w0);
    }
    ls_model_free(b1);
    ls_model_free(b0);

    unlink(five_path);
    unlink(module_path);
    unlink(trunc_path);
    unlink(b1_path);
    CHECK(rmdir(dir) == 0);
}

/* A model file with one non-finite float loads nowhere: ls_model_load and
 * ls_model_load_weights name the file, the tensor, the value and its element, and leave the
 * model as it was. Covers a SegFormer weight, a BatchNorm statistic and an extra
 * cell_classifier.* tensor. */
static void expect_non_finite_refused(const char *path, const char *tensor, const char *what)
{
    ls_error err = {{0}};
    ls_model *loaded = NULL, *into = tu_tiny_model(3, 0.1f, 0.1f, 41);
    if (!into) return;
    CHECK(ls_model_load(path, &loaded, &err) == LS_ERR_FORMAT && loaded == NULL);
    printf("  %s\n", err.msg);
    CHECK(strstr(err.msg, path) && strstr(err.msg, tensor) && strstr(err.msg, what) &&
          strstr(err.msg, "corrupt"));
    size_t nw = ls_model_num_weights(into);
    float *before = malloc(sizeof(float) * nw);
    memcpy(before, ls_model_weights(into), sizeof(float) * nw);
    err.msg[0] = '\0';
    CHECK(ls_model_load_weights(into, path, 1, NULL, 0, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, tensor) && strstr(err.msg, what));
    CHECK(memcmp(before, ls_model_weights(into), sizeof(float) * nw) == 0);
    free(before);
    ls_model_free(loaded);
    ls_model_free(into);
}

static float *param_data(ls_model *m, const char *name)
{
    for (int i = 0; i < ls_model_num_params(m); i++)
        if (!strcmp(ls_model_param(m, i)->name, name))
            return ls_model_weights(m) + ls_model_param(m, i)->offset;
    CHECK(!"parameter not found");
    return NULL;
}

static void test_non_finite_weights(void)
{
    printf("model files with NaN or Inf\n");
    ls_error err = {{0}};
    char dir[] = "/tmp/ls_model_nan_XXXXXX", path[96];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    ls_model *m = tu_tiny_model(3, 0.1f, 0.1f, 40), *loaded = NULL;
    if (!m) return;
    float cls[5 * 4];
    for (int i = 0; i < 20; i++) cls[i] = 0.01f * (float)i;
    ls_array extra = {LS_F32, 2, {5, 4}, cls};
    CHECK_OK(ls_model_set_extra(m, "cell_classifier.weight", &extra, &err), err);
    /* The clean file loads, extra tensor included. */
    CHECK_OK(ls_model_save(m, path, &err), err);
    CHECK_OK(ls_model_load(path, &loaded, &err), err);
    CHECK(loaded && ls_model_get_extra(loaded, "cell_classifier.weight") != NULL);
    ls_model_free(loaded);

    float *w = param_data(m, "decode_head.classifier.weight");
    if (w) {
        w[5] = NAN;
        CHECK_OK(ls_model_save(m, path, &err), err);
        expect_non_finite_refused(path, "decode_head.classifier.weight", "NaN at element 5 of 48");
        w[5] = 0.0f;
    }
    ls_model_bn_running_var(m)[2] = -INFINITY;
    CHECK_OK(ls_model_save(m, path, &err), err);
    expect_non_finite_refused(path, "decode_head.batch_norm.running_var", "-Inf at element 2");
    ls_model_bn_running_var(m)[2] = 1.0f;
    cls[7] = INFINITY;
    CHECK_OK(ls_model_set_extra(m, "cell_classifier.weight", &extra, &err), err);
    CHECK_OK(ls_model_save(m, path, &err), err);
    expect_non_finite_refused(path, "cell_classifier.weight", "+Inf at element 7 of 20");
    ls_model_free(m);
    unlink(path);
    CHECK(rmdir(dir) == 0);
}

int main(void)
{
    ls_rng_seed(&rng, 20240602);
    /* Case 7 is about geometry, not threads: on one thread it takes 0.5 s instead of ~8 s when a
     * background job keeps the cores busy (each of the thousands of parallel regions then waits
     * for a scheduler slice). The other cases keep the default thread count. */
#ifdef _OPENMP
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
#endif
    test_case7_sizes();
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    test_case8_upsampling();
    test_case9_nearest();
    test_case11_loss();
    test_case12_batchnorm();
    test_eval_workspace();
    test_training_without_rng();
    test_case13_checkpoints();
    test_non_finite_weights();
    TEST_DONE();
}
