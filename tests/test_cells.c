/* Cells from masks: hand-made masks with known answers (touching discs, specks, the border flag,
 * lobes, circularity), fields assembled from ground-truth masks of the dataset with every cell
 * to be found once; the cell classifier: masked pooling against a plain mean, fit and predict on
 * synthetic features, and its round trip through the model file. */
#include "leukoseg.h"
#include "model.h"
#include "testutil.h"

#include <string.h>
#include <unistd.h>


static ls_mask new_mask(int w, int h)
{
    ls_mask m = {w, h, calloc((size_t)w * h, 1)};
    return m;
}

/* Paints a disc of class v (only over pixels below v, so a nucleus stays a nucleus). */
static void disc(ls_mask *m, double cx, double cy, double r, int v)
{
    for (int y = 0; y < m->h; y++)
        for (int x = 0; x < m->w; x++) {
            double dx = x - cx, dy = y - cy;
            uint8_t *p = &m->data[(size_t)y * m->w + x];
            if (dx * dx + dy * dy <= r * r && *p < v) *p = (uint8_t)v;
        }
}

static long count_disc(int w, int h, double cx, double cy, double r)
{
    ls_mask m = new_mask(w, h);
    disc(&m, cx, cy, r, 1);
    long n = 0;
    for (int p = 0; p < w * h; p++) n += m.data[p];
    ls_mask_free(&m);
    return n;
}

static void test_single_disc(void)
{
    ls_error err;
    ls_mask m = new_mask(100, 100);
    disc(&m, 50, 50, 30, 1);
    disc(&m, 50, 50, 12, LS_NUCLEUS_CLASS);
    ls_cell_params p = ls_cell_params_default();
    ls_cells c;
    CHECK_OK(ls_cells_find(&m, &p, &c, &err), err);
    CHECK(c.n == 1);
    if (c.n == 1) {
        const ls_cell *a = &c.cells[0];
        CHECK(a->area == count_disc(100, 100, 50, 50, 30));
        CHECK(a->nucleus_area == count_disc(100, 100, 50, 50, 12));
        CHECK_NEAR(a->nc_ratio, (double)a->nucleus_area / (a->area - a->nucleus_area), 1e-12);
        CHECK_NEAR(a->circularity, 1.0, 0.03);
        CHECK_NEAR(a->perimeter, 2 * M_PI * 30, 2.0);
        CHECK(a->lobes == 1);
        CHECK(a->border == 0);
        CHECK_NEAR(a->cx, 50, 1e-9);
        CHECK_NEAR(a->cy, 50, 1e-9);
        CHECK(a->bbox_x == 20 && a->bbox_y == 20 && a->bbox_w == 61 && a->bbox_h == 61);
        CHECK(a->type == 0 && a->predicted == 0);
    }
    ls_cells_free(&c);
    ls_mask_free(&m);
}

/* Two discs of radius 25 touching (centres 48 apart, a 3-px overlap) and two overlapping more
 * (centres 40 apart): each pair splits into 2 cells along the neck, each close to its disc. */
static void test_touching_discs(void)
{
    ls_error err;
    const double gaps[2] = {48, 40};
    for (int t = 0; t < 2; t++) {
        ls_mask m = new_mask(160, 100);
        double x0 = 55, x1 = 55 + gaps[t];
        disc(&m, x0, 50, 25, 1);
        disc(&m, x1, 50, 25, 1);
        disc(&m, x0, 50, 9, LS_NUCLEUS_CLASS);
        disc(&m, x1, 50, 9, LS_NUCLEUS_CLASS);
        ls_cell_params p = ls_cell_params_default();
        ls_cells c;
        CHECK_OK(ls_cells_find(&m, &p, &c, &err), err);
        CHECK(c.n == 2);
        long one = count_disc(160, 100, 55, 50, 25), both = 2 * one;
        for (int y = 0; y < 100; y++) /* the union: both discs less the lens they share */
            for (int x = 0; x < 160; x++) {
                double a = (x - x0) * (x - x0) + (y - 50.0) * (y - 50.0);
                double b = (x - x1) * (x - x1) + (y - 50.0) * (y - 50.0);
                if (a <= 625 && b <= 625) both--;
            }
        for (int i = 0; i < c.n && c.n == 2; i++) {
            /* split fairly: each cell gets its disc less half the lens, within a few pixels */
            CHECK_NEAR((double)c.cells[i].area, (double)both / 2.0, 4.0 + 0.02 * one);
            CHECK(c.cells[i].lobes == 1);
            CHECK(c.cells[i].border == 0);
        }
        if (c.n == 2) {
            CHECK_NEAR(c.cells[0].cx, x0, 2.5);
            CHECK_NEAR(c.cells[1].cx, x1, 2.5);
            CHECK(c.cells[0].area + c.cells[1].area == both);
        }
        ls_cells_free(&c);
        ls_mask_free(&m);
    }
}

static void test_speck_and_border(void)
{
    ls_error err;
    ls_mask m = new_mask(120, 80);
    disc(&m, 40, 40, 20, 1);
    disc(&m, 40, 40, 8, LS_NUCLEUS_CLASS);
    disc(&m, 100, 10, 3, 1);     /* speck of 29 pixels */
    disc(&m, 110, 70, 15, 1);    /* cut by the right and bottom border, no nucleus */
    ls_cell_params p = ls_cell_params_default();
    ls_cells c;
    CHECK_OK(ls_cells_find(&m, &p, &c, &err), err);
    CHECK(c.n == 1);
    CHECK(c.specks == 1);
    CHECK(c.speck_pixels == count_disc(120, 80, 100, 10, 3));
    CHECK(c.anucleate == 1); /* the piece cut by the border has no nucleus */
    CHECK(c.anucleate_pixels == count_disc(120, 80, 110, 70, 15));
    CHECK(c.labels[10 * 120 + 100] == 0);
    CHECK(c.labels[70 * 120 + 110] == 0);
    ls_cells_free(&c);
    /* the same piece with a nucleus is a cell, flagged as cut by the border */
    disc(&m, 112, 72, 5, LS_NUCLEUS_CLASS);
    CHECK_OK(ls_cells_find(&m, &p, &c, &err), err);
    CHECK(c.n == 2 && c.anucleate == 0);
    if (c.n == 2) {
        CHECK(c.cells[0].border == 0 && c.cells[0].nucleus_area > 0);
        CHECK(c.cells[1].border == 1 && c.cells[1].nucleus_area == count_disc(120, 80, 112, 72,
                                                                               5));
        CHECK(c.labels[70 * 120 + 110] == 2);
    }
    ls_cells_free(&c);
    p.min_area = 10; /* the speck is then big enough, but has no nucleus */
    CHECK_OK(ls_cells_find(&m, &p, &c, &err), err);
    CHECK(c.n == 2 && c.specks == 0 && c.anucleate == 1);
    ls_cells_free(&c);
    ls_mask_free(&m);
}

/* A neutrophil-like cell: three nucleus lobes joined by 1-px chromatin bridges, which the
 * opening cuts; the three nucleus seeds must still make one cell. */
static void test_lobes(void)
{
    ls_error err;
    ls_mask m = new_mask(120, 120);
    disc(&m, 60, 60, 40, 1);
    const double lx[3] = {40, 60, 80}, ly[3] = {70, 45, 70};
    for (int i = 0; i < 3; i++) disc(&m, lx[i], ly[i], 9, LS_NUCLEUS_CLASS);
    for (int x = 40; x <= 80; x++) m.data[70 * 120 + x] = LS_NUCLEUS_CLASS; /* bridge 0-2 */
    ls_cell_params p = ls_cell_params_default();
    ls_cells c;
    CHECK_OK(ls_cells_find(&m, &p, &c, &err), err);
    CHECK(c.n == 1);
    if (c.n == 1) CHECK(c.cells[0].lobes == 3);
    ls_cells_free(&c);
    /* Without the bridge the lobes are separate nucleus components: still one cell. */
    for (int x = 50; x <= 70; x++) m.data[70 * 120 + x] = 1;
    CHECK_OK(ls_cells_find(&m, &p, &c, &err), err);
    CHECK(c.n == 1);
    if (c.n == 1) CHECK(c.cells[0].lobes == 3);
    ls_cells_free(&c);
    p.lobe_open = 0; /* no opening: the bridge (now cut) leaves 3 components anyway */
    CHECK_OK(ls_cells_find(&m, &p, &c, &err), err);
    if (c.n == 1) CHECK(c.cells[0].lobes == 3);
    ls_cells_free(&c);
    ls_mask_free(&m);
}

/* Three separate cells; the third joins the first: two cells remain, renumbered in raster
 * order, the joined one measured as the sum of both. A target that is not kept is an error. */
static void test_merge(void)
{
    ls_error err;
    ls_mask m = new_mask(120, 60);
    const double xs[3] = {20, 60, 100};
    for (int i = 0; i < 3; i++) {
        disc(&m, xs[i], 30, 12, 1);
        disc(&m, xs[i], 30, 5, LS_NUCLEUS_CLASS);
    }
    ls_cell_params p = ls_cell_params_default();
    ls_cells c;
    CHECK_OK(ls_cells_find(&m, &p, &c, &err), err);
    CHECK(c.n == 3);
    long one = count_disc(120, 60, 20, 30, 12), nuc = count_disc(120, 60, 20, 30, 5);
    const int bad[3] = {1, 2, 2}; /* cell 0 into 1, which itself goes into 2 */
    CHECK(ls_cells_merge(&c, &m, &p, bad, &err) == LS_ERR_ARG);
    const int into[3] = {0, 1, 0};
    CHECK_OK(ls_cells_merge(&c, &m, &p, into, &err), err);
    CHECK(c.n == 2);
    if (c.n == 2) {
        CHECK(c.cells[0].area == 2 * one && c.cells[0].nucleus_area == 2 * nuc);
        CHECK(c.cells[0].lobes == 2 && c.cells[0].bbox_w == 100 - 20 + 25);
        CHECK_NEAR(c.cells[0].cx, 60.0, 1e-9);
        CHECK(c.cells[1].area == one && c.labels[30 * 120 + 60] == 2);
        CHECK(c.labels[30 * 120 + 100] == 1 && c.cells[0].predicted == 0);
    }
    ls_cells_free(&c);
    ls_mask_free(&m);
}

static void test_bad_args(void)
{
    ls_error err;
    ls_mask m = new_mask(4, 4);
    ls_cell_params p = ls_cell_params_default();
    ls_cells c;
    CHECK_OK(ls_cells_find(&m, &p, &c, &err), err); /* all background */
    CHECK(c.n == 0 && c.specks == 0);
    ls_cells_free(&c);
    p.min_area = -1;
    CHECK(ls_cells_find(&m, &p, &c, &err) == LS_ERR_ARG);
    ls_mask empty = {0, 0, NULL};
    p = ls_cell_params_default();
    CHECK(ls_cells_find(&empty, &p, &c, &err) == LS_ERR_ARG);
    ls_mask_free(&m);
    CHECK(!strcmp(ls_cell_type_name(0), "unidentified"));
    CHECK(!strcmp(ls_cell_type_name(5), "basophil"));
}

/* ---- fields assembled from ground-truth masks --------------------------------------------- */

/* The largest cell of a ground-truth mask, as a class mask cropped to its bounding box. */
static int crop_main_cell(const ls_mask *gt, ls_mask *out)
{
    ls_error err;
    ls_cell_params p = ls_cell_params_default();
    ls_cells c;
    if (ls_cells_find(gt, &p, &c, &err) != LS_OK || c.n == 0) return 0;
    int best = 0;
    for (int i = 1; i < c.n; i++)
        if (c.cells[i].area > c.cells[best].area) best = i;
    const ls_cell *b = &c.cells[best];
    *out = new_mask(b->bbox_w, b->bbox_h);
    for (int y = 0; y < b->bbox_h; y++)
        for (int x = 0; x < b->bbox_w; x++) {
            size_t s = (size_t)(b->bbox_y + y) * gt->w + b->bbox_x + x;
            if (c.labels[s] == best + 1) out->data[(size_t)y * b->bbox_w + x] = gt->data[s];
        }
    ls_cells_free(&c);
    return 1;
}

/* Places n x n cells on a grid whose pitch is the largest crop plus `gap` (negative: cells
 * pushed into each other), nucleus winning where two overlap; checks that the instance code
 * finds every placed cell exactly once: each found cell takes its pixels mostly from one placed
 * cell, and each placed cell is the majority of exactly one found cell. */
static void check_field(ls_mask *crops, int n, int gap, const char *what)
{
    int cw = 0, chh = 0;
    for (int i = 0; i < n * n; i++) {
        if (crops[i].w > cw) cw = crops[i].w;
        if (crops[i].h > chh) chh = crops[i].h;
    }
    int pitch_x = cw + gap, pitch_y = chh + gap, margin = 6;
    int fw = 2 * margin + pitch_x * (n - 1) + cw, fh = 2 * margin + pitch_y * (n - 1) + chh;
    ls_mask field = new_mask(fw, fh);
    int *owner = calloc((size_t)fw * fh, sizeof *owner); /* 1 + placed cell, 0 none */
    for (int i = 0; i < n * n; i++) {
        /* centre each crop in its grid slot, so neighbours meet near their own outlines */
        int ox = margin + (i % n) * pitch_x + (cw - crops[i].w) / 2;
        int oy = margin + (i / n) * pitch_y + (chh - crops[i].h) / 2;
        for (int y = 0; y < crops[i].h; y++)
            for (int x = 0; x < crops[i].w; x++) {
                uint8_t v = crops[i].data[(size_t)y * crops[i].w + x];
                size_t p = (size_t)(oy + y) * fw + ox + x;
                if (!v) continue;
                if (v > field.data[p]) field.data[p] = v;
                if (!owner[p]) owner[p] = i + 1;
            }
    }
    ls_error err;
    ls_cell_params prm = ls_cell_params_default();
    ls_cells c;
    CHECK_OK(ls_cells_find(&field, &prm, &c, &err), err);
    int *hits = calloc((size_t)n * n, sizeof *hits);
    long *votes = calloc((size_t)n * n + 1, sizeof *votes);
    for (int k = 0; k < c.n; k++) {
        memset(votes, 0, sizeof *votes * ((size_t)n * n + 1));
        for (size_t p = 0; p < (size_t)fw * fh; p++)
            if (c.labels[p] == k + 1) votes[owner[p]]++;
        int best = 1;
        for (int i = 2; i <= n * n; i++)
            if (votes[i] > votes[best]) best = i;
        if ((double)votes[best] < 0.8 * (double)c.cells[k].area) {
            fprintf(stderr, "%s: cell %d (area %ld) is a mix of placed cells\n", what, k,
                    c.cells[k].area);
            tu_failures++;
        }
        hits[best - 1]++;
    }
    for (int i = 0; i < n * n; i++) {
        if (hits[i] != 1) {
            fprintf(stderr, "%s: placed cell %d found %d times (%d cells in the field)\n", what,
                    i, hits[i], c.n);
            tu_failures++;
        }
    }
    free(hits);
    free(votes);
    free(owner);
    ls_cells_free(&c);
    ls_mask_free(&field);
}

static void test_fields(void)
{
    if (access(tu_wbc(""), R_OK) != 0) {
        fprintf(stderr, "%s not found: set LEUKOSEG_DATA to the segmentation_WBC folder\n",
                tu_wbc(""));
        CHECK(!"real dataset present");
        return;
    }
    ls_error err;
    const char *sets[2] = {tu_wbc("/Dataset 1"), tu_wbc("/Dataset 2")};
    for (int s = 0; s < 2; s++) {
        ls_dataset ds = {0};
        CHECK_OK(ls_dataset_add(&ds, sets[s], LS_SPLIT_TEST, NULL, &err), err);
        enum { N = 3, CELLS = N * N };
        ls_mask crops[CELLS];
        int got = 0;
        for (int i = 0; i < ds.n && got < CELLS; i++) {
            ls_image img = {0};
            ls_mask gt = {0};
            long snapped = 0;
            CHECK_OK(ls_dataset_load(&ds, i, &img, &gt, &snapped, &err), err);
            if (gt.data && crop_main_cell(&gt, &crops[got])) got++;
            ls_image_free(&img);
            ls_mask_free(&gt);
        }
        CHECK(got == CELLS);
        if (got == CELLS) {
            char what[64];
            const int gaps[3] = {8, 0, -4};
            for (int g = 0; g < 3; g++) {
                snprintf(what, sizeof what, "Dataset %d, gap %d", s + 1, gaps[g]);
                check_field(crops, N, gaps[g], what);
            }
        }
        for (int i = 0; i < got; i++) ls_mask_free(&crops[i]);
        ls_dataset_free(&ds);
    }
}

/* ---- classifier --------------------------------------------------------------------------- */

static ls_model *small_model(void)
{
    ls_error err;
    ls_config cfg;
    ls_model *m = NULL;
    CHECK_OK(ls_config_for_variant("b0", 3, &cfg, &err), err);
    CHECK_OK(ls_model_create(&cfg, 7, &m, &err), err);
    /* a small input keeps the forward cheap */
    if (m) CHECK_OK(ls_model_set_meta(m, "input_size", "64x64", &err), err);
    return m;
}

/* A cell covering the whole 64x64 image pools every stage to the plain mean of its tokens (each
 * grid position covers the same number of pixels); the morphology part follows the measures. */
static void test_pooling(ls_model *m)
{
    ls_error err;
    ls_image img = {64, 64, malloc(64 * 64 * 3)};
    for (int p = 0; p < 64 * 64 * 3; p++) img.data[p] = (uint8_t)(p * 37 % 251);
    ls_mask mask = new_mask(64, 64);
    memset(mask.data, 1, 64 * 64);
    disc(&mask, 32, 32, 10, LS_NUCLEUS_CLASS);
    ls_cell_params prm = ls_cell_params_default();
    ls_cells cells;
    float *feat = NULL;
    CHECK_OK(ls_cells_find(&mask, &prm, &cells, &err), err);
    CHECK(cells.n == 1 && cells.cells[0].border == 1);
    CHECK_OK(ls_cells_features(m, &img, &mask, &cells, &feat, &err), err);
    ls_preproc pp;
    ls_model_preproc(m, &pp);
    float *x = malloc(sizeof(float) * 3 * 64 * 64);
    ls_workspace *ws = NULL;
    CHECK_OK(ls_preprocess(&img, 64, 64, pp.mean, pp.std, x, &err), err);
    CHECK_OK(ls_workspace_create(m, 1, 64, 64, 0, &ws, &err), err);
    CHECK_OK(ls_model_forward(m, ws, x, 0, NULL, NULL, &err), err);
    int f = ls_cell_feature_count(m), off = 0;
    CHECK(f == 32 + 64 + 160 + 256 + 57);
    double worst = 0;
    for (int s = 0; s < 4 && feat && ws; s++) {
        int ch = ls_model_config(m)->hidden[s];
        for (int k = 0; k < ch; k++) {
            double mean = 0;
            for (int g = 0; g < ws->stage[s].n; g++) mean += ws->stage[s].out[(size_t)g * ch + k];
            mean /= ws->stage[s].n;
            worst = fmax(worst, fabs(mean - feat[off + k]));
        }
        off += ch;
    }
    CHECK(worst < 1e-4);
    if (feat && cells.n == 1) {
        const ls_cell *c = &cells.cells[0];
        CHECK_NEAR(feat[off], log(64.0 * 64.0), 1e-5);
        CHECK_NEAR(feat[off + 1], (double)c->nucleus_area / (64 * 64), 1e-6);
        CHECK_NEAR(feat[off + 3], 1.0, 0);
    }
    free(feat);
    free(x);
    ls_workspace_free(ws);
    ls_cells_free(&cells);
    ls_mask_free(&mask);
    ls_image_free(&img);
}

/* Five types separated along a few features, with a rare fifth type: the fit recovers them,
 * and the classifier survives a save and load unchanged. */
static void test_fit_and_file(ls_model *m)
{
    ls_error err;
    int f = ls_cell_feature_count(m), n = 203;
    float *x = malloc(sizeof(float) * (size_t)n * f);
    int *t = malloc(sizeof(int) * n);
    ls_rng rng;
    ls_rng_seed(&rng, 3);
    for (int i = 0; i < n; i++) {
        t[i] = i < 3 ? 5 : 1 + i % 4; /* three basophils only */
        for (int j = 0; j < f; j++) x[(size_t)i * f + j] = 5.0f + ls_rng_normal(&rng);
        x[(size_t)i * f + 10 * t[i]] += 4.0f;
        x[(size_t)i * f + f - 1] = 1.0f; /* a constant feature must not break standardisation */
    }
    CHECK(!ls_model_has_cell_classifier(m));
    ls_cells cells = {0};
    cells.n = n;
    cells.cells = calloc(n, sizeof *cells.cells);
    CHECK(ls_cells_classify(m, x, -1, &cells, &err) == LS_ERR_ARG);
    CHECK_OK(ls_celltype_fit(m, x, t, n, &err), err);
    CHECK(ls_model_has_cell_classifier(m));
    CHECK_OK(ls_cells_classify(m, x, -1, &cells, &err), err);
    int right = 0, low = 0;
    for (int i = 0; i < n; i++) {
        right += cells.cells[i].predicted == t[i];
        low += cells.cells[i].type == 0;
        CHECK(cells.cells[i].type == 0 || cells.cells[i].type == cells.cells[i].predicted);
        CHECK(cells.cells[i].confidence >= 0.2 && cells.cells[i].confidence <= 1.0);
    }
    CHECK(right >= n - 4);
    CHECK(low <= 10);
    CHECK(cells.cells[0].predicted == 5);
    const char *meta = ls_model_get_meta(m, "cell_classifier");
    CHECK(meta && strstr(meta, "\"threshold\":0.5") && strstr(meta, "basophil"));
    /* threshold 1 leaves every cell unidentified */
    ls_cells all = cells;
    CHECK_OK(ls_cells_classify(m, x, 1.0, &all, &err), err);
    CHECK(all.cells[1].type == 0 && all.cells[1].predicted == t[1]);
    int types_bad[1] = {6};
    CHECK(ls_celltype_fit(m, x, types_bad, 1, &err) == LS_ERR_ARG);
    CHECK(ls_celltype_fit(m, x, t + 3, 1, &err) == LS_ERR_ARG); /* one type only */
    /* training options are checked before any image is read */
    ls_dataset none = {0};
    ls_cell_cv cv;
    ls_celltype_options o = ls_celltype_options_default();
    CHECK(o.views == LS_DIHEDRAL_VIEWS && o.cv_folds == 0 && o.cv_repeats == 4);
    o.views = 0;
    CHECK(ls_celltype_train_opts(m, &none, &o, &cv, &err) == LS_ERR_ARG);
    CHECK(strstr(err.msg, "views must be 1..8, got 0") != NULL);
    o = ls_celltype_options_default();
    o.cv_folds = 1;
    CHECK(ls_celltype_train_opts(m, &none, &o, &cv, &err) == LS_ERR_ARG);
    CHECK(strstr(err.msg, "got 1 folds") != NULL);
    o.cv_folds = 0;
    CHECK(ls_celltype_train_opts(m, &none, &o, &cv, &err) == LS_ERR_ARG);
    CHECK(strstr(err.msg, "none of the 0 samples") != NULL);

    char path[] = "/tmp/leukoseg_test_cells_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
    CHECK_OK(ls_model_save(m, path, &err), err);
    ls_model *back = NULL;
    CHECK_OK(ls_model_load(path, &back, &err), err);
    remove(path);
    if (back) {
        CHECK(ls_model_has_cell_classifier(back));
        const ls_array *a = ls_model_get_extra(m, "cell_classifier.weight");
        const ls_array *b = ls_model_get_extra(back, "cell_classifier.weight");
        CHECK(a && b && b->ndim == 2 && b->shape[0] == 5 && b->shape[1] == f &&
              !memcmp(a->data, b->data, sizeof(float) * 5 * f));
        CHECK(ls_model_get_extra(back, "cell_classifier.feature_std")->ndim == 1);
        ls_cells again = {0};
        again.n = n;
        again.cells = calloc(n, sizeof *again.cells);
        CHECK_OK(ls_cells_classify(back, x, -1, &again, &err), err);
        for (int i = 0; i < n; i++) CHECK(again.cells[i].probs[2] == cells.cells[i].probs[2]);
        free(again.cells);
        ls_model_free(back);
    }
    free(cells.cells);
    free(x);
    free(t);
}

/* The whole path on a picture: segment (an untrained model), find, measure, classify. */
static void test_analyze(ls_model *m)
{
    ls_error err;
    ls_image img = {90, 70, malloc(90 * 70 * 3)};
    for (int p = 0; p < 90 * 70 * 3; p++) img.data[p] = (uint8_t)(p * 13 % 256);
    ls_cell_params prm = ls_cell_params_default();
    prm.min_area = 0;
    ls_cells cells;
    ls_mask mask = {0};
    float *feat = NULL;
    CHECK_OK(ls_cells_analyze(m, &img, &prm, 0.5, &mask, &cells, &feat, &err), err);
    CHECK(mask.w == 90 && mask.h == 70 && mask.data);
    for (int i = 0; i < cells.n; i++) {
        CHECK(cells.cells[i].predicted >= 1 && cells.cells[i].predicted <= 5);
        CHECK(isfinite(feat[(size_t)i * ls_cell_feature_count(m)]));
    }
    free(feat);
    ls_cells_free(&cells);
    ls_mask_free(&mask);
    ls_image_free(&img);
}

int main(void)
{
    test_single_disc();
    test_touching_discs();
    test_speck_and_border();
    test_lobes();
    test_bad_args();
    test_merge();
    test_fields();
    ls_model *m = small_model();
    if (m) {
        test_pooling(m);
        test_fit_and_file(m);
        test_analyze(m);
    }
    ls_model_free(m);
    TEST_DONE();
}
