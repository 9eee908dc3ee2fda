/* Minimal test helpers: every failed check prints where and what, and the test exits non-zero. */
#ifndef LS_TESTUTIL_H
#define LS_TESTUTIL_H
#include "leukoseg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int tu_failures = 0;

#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); tu_failures++; } \
} while (0)
#define CHECK_NEAR(a, b, tol) do { double tu_a = (a), tu_b = (b); \
    if (!(fabs(tu_a - tu_b) <= (tol))) { \
    fprintf(stderr, "%s:%d: %s = %.9g, expected %.9g (tol %g)\n", \
    __FILE__, __LINE__, #a, tu_a, tu_b, (double)(tol)); tu_failures++; } } while (0)
/* CHECK_OK(call, err): call returns ls_status and fills the ls_error err on failure. */
#define CHECK_OK(expr, err) do { ls_status tu_st = (expr); if (tu_st != LS_OK) { \
    fprintf(stderr, "%s:%d: %s failed (%d): %s\n", __FILE__, __LINE__, #expr, (int)tu_st, \
    (err).msg); tu_failures++; } } while (0)
/* A path inside the segmentation_WBC folder: $LEUKOSEG_DATA (the Makefile exports the folder
 * beside the repository, ../shared/data/segmentation_WBC) followed by sub. Four rotating buffers,
 * so one expression may hold several. */
static inline const char *tu_wbc(const char *sub)
{
    static char buf[4][2048];
    static int next = 0;
    const char *root = getenv("LEUKOSEG_DATA");
    char *out = buf[next++ % 4];
    snprintf(out, sizeof buf[0], "%s%s", root && *root ? root : "../shared/data/segmentation_WBC",
             sub);
    return out;
}

/* A tiny SegFormer: hidden [8, 16, 24, 32], one block per stage, decoder 16; b0's sr, patch
 * sizes and strides, so the minimum input side (29) is b0's too. */
static inline ls_model *tu_tiny_model(int num_labels, float drop_path, float dropout,
                                      uint64_t seed)
{
    ls_error err = {{0}};
    ls_config cfg;
    CHECK_OK(ls_config_for_variant("b0", num_labels, &cfg, &err), err);
    static const int hidden[4] = {8, 16, 24, 32}, heads[4] = {1, 2, 3, 4};
    for (int i = 0; i < 4; i++) {
        cfg.hidden[i] = hidden[i];
        cfg.heads[i] = heads[i];
        cfg.depths[i] = 1;
    }
    cfg.decoder_hidden = 16;
    cfg.drop_path_rate = drop_path;
    cfg.classifier_dropout = dropout;
    snprintf(cfg.variant, sizeof cfg.variant, "custom");
    ls_model *m = NULL;
    CHECK_OK(ls_model_create(&cfg, seed, &m, &err), err);
    return m;
}

#define TEST_DONE() do { if (tu_failures) { fprintf(stderr, "%d check(s) failed\n", tu_failures); \
    return 1; } printf("ok\n"); return 0; } while (0)
#endif
