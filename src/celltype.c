/* Cell types from SegFormer's own features (masked average pooling of each encoder stage's
 * output under the cell) and hand-crafted, stain-robust ones (shape relative to the cell, colours
 * as optical density against the image's own background), normalised per source domain and
 * classified by a softmax regression that is stored in the model file next to the SegFormer
 * weights. */
#include "model.h"
#include "ops.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T_WEIGHT "cell_classifier.weight"
#define T_BIAS "cell_classifier.bias"
#define T_MEAN "cell_classifier.feature_mean"
#define T_STD "cell_classifier.feature_std"
#define T_DMEAN "cell_classifier.domain_mean"
#define T_DSTD "cell_classifier.domain_std"
/* hand-crafted features after the pooled encoder features (HAND_NAMES) */
#define HAND_FEATURES 57
#define DEFAULT_THRESHOLD 0.5
#define L2 1e-2
/* The standardised pooled encoder features are multiplied by this gain (stored as feature_std /
 * gain), a heavier L2 penalty than the hand-crafted features get; 0 would leave them out (their
 * weights stay exactly 0). 5-fold cross-validation on the train+val splits of segmentation_WBC
 * (0, 0.1, 0.3, 1) preferred 0.3 by a few cells: most of the signal is in the hand-crafted
 * features once they are normalised per domain. */
#define POOLED_GAIN 0.3
/* at most this many domains (class-label sources) get their own normalisation */
#define MAX_DOMAINS LS_CV_MAX_DOMAINS
#define MAX_CLASS_WEIGHT 10.0
#define FIT_ITERS 1000
#define LBFGS_MEMORY 10

static const char *const TYPE_NAMES[LS_CELL_TYPES + 1] = {
    "unidentified", "neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil"};

const char *ls_cell_type_name(int type)
{
    return type >= 0 && type <= LS_CELL_TYPES ? TYPE_NAMES[type] : "?";
}

/* ---- extra tensors ---------------------------------------------------------------------- */

ls_status ls_model_set_extra(ls_model *m, const char *name, const ls_array *a, ls_error *err)
{
    size_t es = ls_dtype_size(a->dtype);
    if (!name || !*name || !es || a->ndim < 0 || a->ndim > 8)
        return ls_fail(err, LS_ERR_ARG, "extra tensor '%s': bad name, dtype or rank",
                       name ? name : "");
    int slot = m->nextra;
    for (int i = 0; i < m->nextra; i++)
        if (!strcmp(m->extra_name[i], name)) slot = i;
    if (slot == LS_MAX_EXTRA)
        return ls_fail(err, LS_ERR_ARG, "too many extra tensors in the model (max %d)",
                       LS_MAX_EXTRA);
    size_t bytes = ls_array_numel(a) * es;
    char *n = strdup(name);
    void *data = malloc(bytes ? bytes : 1);
    if (!n || !data) {
        free(n);
        free(data);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory storing tensor %s", name);
    }
    if (bytes) memcpy(data, a->data, bytes);
    if (slot < m->nextra) {
        free(m->extra_name[slot]);
        ls_array_free(&m->extra[slot]);
    } else {
        m->nextra++;
    }
    m->extra_name[slot] = n;
    m->extra[slot] = *a;
    m->extra[slot].data = data;
    return LS_OK;
}

const ls_array *ls_model_get_extra(const ls_model *m, const char *name)
{
    for (int i = 0; i < m->nextra; i++)
        if (!strcmp(m->extra_name[i], name)) return &m->extra[i];
    return NULL;
}

void ls_model_free_extras(ls_model *m)
{
    for (int i = 0; i < m->nextra; i++) {
        free(m->extra_name[i]);
        ls_array_free(&m->extra[i]);
    }
    m->nextra = 0;
}

/* ---- features --------------------------------------------------------------------------- */

int ls_cell_feature_count(const ls_model *m)
{
    const int *c = m->cfg.hidden;
    return c[0] + c[1] + c[2] + c[3] + HAND_FEATURES;
}

/* Masked average pooling of stage outputs: each image pixel of a cell inside the window r
 * (the image rectangle that was resized onto the whole input) adds weight 1 to the grid
 * position it falls in (stage i's grid has the input's cumulative stride), so every grid cell
 * weighs by the cell area it covers. */
static ls_status pool_stages(const ls_model *m, const ls_workspace *ws, const ls_cells *cells,
                             const ls_cell *c, int32_t id, ls_rect r, float *out, ls_error *err)
{
    int off = 0;
    for (int s = 0; s < 4; s++) {
        const stage_acts *sa = &ws->stage[s];
        int ch = m->cfg.hidden[s];
        /* input pixels per grid step: H / h rounded, exact for the strides SegFormer uses */
        double sy = (double)ws->h / sa->h, sx = (double)ws->w / sa->w;
        long *count = calloc((size_t)sa->n, sizeof *count), inside = 0;
        if (!count) return ls_fail(err, LS_ERR_NOMEM, "out of memory pooling cell features");
        int y1 = c->bbox_y + c->bbox_h < r.y + r.h ? c->bbox_y + c->bbox_h : r.y + r.h;
        int x1 = c->bbox_x + c->bbox_w < r.x + r.w ? c->bbox_x + c->bbox_w : r.x + r.w;
        for (int y = c->bbox_y > r.y ? c->bbox_y : r.y; y < y1; y++) {
            int gy = (int)((y - r.y + 0.5) * ws->h / r.h / sy);
            gy = gy < sa->h ? gy : sa->h - 1;
            for (int x = c->bbox_x > r.x ? c->bbox_x : r.x; x < x1; x++) {
                if (cells->labels[(size_t)y * cells->w + x] != id) continue;
                int gx = (int)((x - r.x + 0.5) * ws->w / r.w / sx);
                count[gy * sa->w + (gx < sa->w ? gx : sa->w - 1)]++;
                inside++;
            }
        }
        double *acc = calloc((size_t)ch, sizeof *acc);
        if (!acc) {
            free(count);
            return ls_fail(err, LS_ERR_NOMEM, "out of memory pooling cell features");
        }
        for (int g = 0; g < sa->n; g++) {
            if (!count[g]) continue;
            const float *tok = sa->out + (size_t)g * ch;
            for (int k = 0; k < ch; k++) acc[k] += (double)count[g] * tok[k];
        }
        for (int k = 0; k < ch; k++) out[off + k] = inside ? (float)(acc[k] / inside) : 0.0f;
        off += ch;
        free(acc);
        free(count);
    }
    return LS_OK;
}

/* ---- hand-crafted features ---------------------------------------------------------------
 *
 * Shape measures are relative to the cell or the nucleus (the datasets differ in magnification),
 * and colours are optical densities against the image's own background: OD = ln(ref / I) per
 * channel, with ref the 95th percentile of the background pixels (mask class 0: plasma and red
 * cells), so a brighter, yellower or bluer illumination and stain shift cancel to first order. */

static const char *const HAND_NAMES[] = {
    /* 0 */ "log area", "nucleus fraction", "N/C ratio (max 20)", "lobes", "circularity",
    /* 5 */ "cell solidity", "nucleus solidity", "nucleus circularity", "nucleus minor/major axis",
    /* 9 */ "nucleus components (max 6)", "nucleus mean thickness / equivalent radius",
    /* 11 */ "nucleus max thickness / equivalent radius",
    /* 12 */ "nucleus centroid offset / cell equivalent radius",
    /* 13 */ "nucleus OD R", "nucleus OD G", "nucleus OD B", "nucleus OD std R", "nucleus OD std G",
    "nucleus OD std B", "nucleus OD share R", "nucleus OD share G", "nucleus OD share B",
    "nucleus texture (mean |laplacian| / mean OD)", "nucleus OD sum p10", "nucleus OD sum p50",
    "nucleus OD sum p90", "nucleus redness p90", "nucleus redness std",
    /* 28 */ "cytoplasm OD R", "cytoplasm OD G", "cytoplasm OD B", "cytoplasm OD std R",
    "cytoplasm OD std G", "cytoplasm OD std B", "cytoplasm OD share R", "cytoplasm OD share G",
    "cytoplasm OD share B", "cytoplasm texture (mean |laplacian| / mean OD)",
    "cytoplasm OD sum p10", "cytoplasm OD sum p50", "cytoplasm OD sum p90",
    "cytoplasm redness p90", "cytoplasm redness std",
    /* 43 */ "cytoplasm / nucleus mean OD sum", "cytoplasm fraction darker than nucleus median",
    /* 45 */ "background OD R", "background OD G", "background OD B",
    /* 48 */ "nucleus mean R/255", "nucleus mean G/255", "nucleus mean B/255",
    "cytoplasm mean R/255", "cytoplasm mean G/255", "cytoplasm mean B/255",
    /* 54 */ "background white point R/255", "background white point G/255",
    "background white point B/255"};
_Static_assert(sizeof HAND_NAMES / sizeof HAND_NAMES[0] == HAND_FEATURES,
               "HAND_NAMES lists every hand-crafted feature");
#define COLOUR_BLOCK 15
/* Image-background features (background OD, white point) that pick a cell's domain. */
static const int SIG_FEATURES[] = {45, 46, 47, 54, 55, 56};
#define SIG_COUNT 6 /* features per region (nucleus, cytoplasm) from 13 on */

/* Per-image colour reference: white point (95th percentile of each channel over background
 * pixels, all pixels when fewer than 64 are background) and the background's mean OD. */
typedef struct {
    double ref[3];
    double bg_od[3];
} colour_ref;

static double od_of(double v, double ref)
{
    return log((ref + 1.0) / (v + 1.0));
}

/* The smallest value v with at least q of the n counted samples at or below it. */
static int hist_quantile(const long hist[256], long n, double q)
{
    long need = (long)ceil(q * (double)n), acc = 0;
    int v = 0;
    for (; v < 255; v++)
        if ((acc += hist[v]) >= need) break;
    return v;
}

static void image_reference(const ls_image *img, const ls_mask *mask, colour_ref *r)
{
    size_t npix = (size_t)img->w * img->h;
    long hist[3][256] = {{0}}, nbg = 0;
    for (size_t p = 0; p < npix; p++)
        if (mask->data[p] == 0) {
            nbg++;
            for (int k = 0; k < 3; k++) hist[k][img->data[p * 3 + k]]++;
        }
    int use_all = nbg < 64;
    if (use_all) {
        memset(hist, 0, sizeof hist);
        for (size_t p = 0; p < npix; p++)
            for (int k = 0; k < 3; k++) hist[k][img->data[p * 3 + k]]++;
        nbg = (long)npix;
    }
    for (int k = 0; k < 3; k++) r->ref[k] = hist_quantile(hist[k], nbg, 0.95);
    double sum[3] = {0};
    long n = 0;
    for (size_t p = 0; p < npix; p++)
        if (use_all || mask->data[p] == 0) {
            n++;
            for (int k = 0; k < 3; k++) sum[k] += od_of(img->data[p * 3 + k], r->ref[k]);
        }
    for (int k = 0; k < 3; k++) r->bg_od[k] = n ? sum[k] / (double)n : 0;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* q-quantile of v[0..n) (sorted in place); 0 for n == 0. */
static double quantile(float *v, long n, double q)
{
    if (n <= 0) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_float);
    long i = (long)(q * (double)(n - 1) + 0.5);
    return v[i];
}

/* 3-4 chamfer distance (in pixels) of each set pixel of m (bw x bh, outside counts as unset) to
 * the nearest unset pixel. */
static void chamfer(const uint8_t *m, int bw, int bh, float *d)
{
    const float big = 1e9f;
    for (int y = 0; y < bh; y++)
        for (int x = 0; x < bw; x++) {
            size_t p = (size_t)y * bw + x;
            if (!m[p]) {
                d[p] = 0;
                continue;
            }
            float v = big;
            float l = x > 0 ? d[p - 1] : 0, u = y > 0 ? d[p - bw] : 0;
            float ul = x > 0 && y > 0 ? d[p - bw - 1] : 0;
            float ur = x < bw - 1 && y > 0 ? d[p - bw + 1] : 0;
            v = fminf(v, l + 3), v = fminf(v, u + 3), v = fminf(v, ul + 4), v = fminf(v, ur + 4);
            d[p] = v;
        }
    for (int y = bh - 1; y >= 0; y--)
        for (int x = bw - 1; x >= 0; x--) {
            size_t p = (size_t)y * bw + x;
            if (!m[p]) continue;
            float r = x < bw - 1 ? d[p + 1] : 0, dn = y < bh - 1 ? d[p + bw] : 0;
            float dl = x > 0 && y < bh - 1 ? d[p + bw - 1] : 0;
            float dr = x < bw - 1 && y < bh - 1 ? d[p + bw + 1] : 0;
            float v = d[p];
            v = fminf(v, r + 3), v = fminf(v, dn + 3), v = fminf(v, dl + 4), v = fminf(v, dr + 4);
            d[p] = v;
        }
    for (size_t p = 0; p < (size_t)bw * bh; p++) d[p] /= 3.0f;
}

static long cross(const long *o, const long *a, const long *b)
{
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
}

static int cmp_point(const void *pa, const void *pb)
{
    const long *a = pa, *b = pb;
    return a[0] != b[0] ? (a[0] > b[0]) - (a[0] < b[0]) : (a[1] > b[1]) - (a[1] < b[1]);
}

/* Area of the convex hull of the set pixels of m (pixel squares, so a filled shape's hull is at
 * least its pixel count). pts: scratch of 8 * bh longs; hull: scratch of 8 * bh + 2 longs. */
static double hull_area(const uint8_t *m, int bw, int bh, long *pts, long *hull)
{
    int n = 0;
    for (int y = 0; y < bh; y++) {
        int l = -1, r = -1;
        for (int x = 0; x < bw; x++)
            if (m[(size_t)y * bw + x]) {
                if (l < 0) l = x;
                r = x;
            }
        if (l < 0) continue;
        long c[4][2] = {{l, y}, {l, y + 1}, {r + 1, y}, {r + 1, y + 1}};
        for (int k = 0; k < 4; k++, n++) pts[2 * n] = c[k][0], pts[2 * n + 1] = c[k][1];
    }
    if (n < 3) return 0;
    qsort(pts, (size_t)n, 2 * sizeof *pts, cmp_point);
    int k = 0; /* Andrew's monotone chain */
    for (int i = 0; i < n; i++) {
        while (k >= 2 && cross(hull + 2 * (k - 2), hull + 2 * (k - 1), pts + 2 * i) <= 0) k--;
        hull[2 * k] = pts[2 * i], hull[2 * k + 1] = pts[2 * i + 1], k++;
    }
    for (int i = n - 2, t = k + 1; i >= 0; i--) {
        while (k >= t && cross(hull + 2 * (k - 2), hull + 2 * (k - 1), pts + 2 * i) <= 0) k--;
        hull[2 * k] = pts[2 * i], hull[2 * k + 1] = pts[2 * i + 1], k++;
    }
    double a = 0;
    for (int i = 0; i + 1 < k; i++)
        a += (double)hull[2 * i] * hull[2 * i + 3] - (double)hull[2 * i + 2] * hull[2 * i + 1];
    return fabs(a) / 2;
}

/* 8-connected components of the set pixels of m (bw x bh) with at least min_size pixels. lab:
 * scratch of 2 * bw * bh ints. */
static int components(const uint8_t *m, int bw, int bh, int32_t *lab, long min_size)
{
    size_t nb = (size_t)bw * bh;
    int32_t *stack = lab + nb;
    int comps = 0, big = 0;
    memset(lab, 0, sizeof(int32_t) * nb);
    for (size_t s = 0; s < nb; s++) {
        if (!m[s] || lab[s]) continue;
        lab[s] = ++comps;
        size_t top = 0;
        long size = 0;
        stack[top++] = (int32_t)s;
        while (top) {
            int32_t p = stack[--top];
            int x = p % bw, y = p / bw;
            size++;
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int qx = x + dx, qy = y + dy;
                    if (qx < 0 || qy < 0 || qx >= bw || qy >= bh) continue;
                    int32_t q = qy * bw + qx;
                    if (m[q] && !lab[q]) lab[q] = comps, stack[top++] = q;
                }
        }
        big += size >= min_size;
    }
    return big;
}

/* Colour statistics of one region (the pixels of the cell where part[] is set): mean OD, OD std,
 * OD shares, texture, OD-sum quantiles and redness ((OD_G - OD_R) / OD sum) p90 and std. vals:
 * scratch of 2 * region pixels floats. */
static void region_colour(const ls_image *img, const uint8_t *part, int bx, int by, int bw, int bh,
                          const colour_ref *cr, float *vals, float *out, double *mean_sum,
                          double *median_sum)
{
    double s[3] = {0}, s2[3] = {0}, lap = 0, red = 0, red2 = 0;
    long n = 0;
    int W = img->w, H = img->h;
    for (int y = 0; y < bh; y++)
        for (int x = 0; x < bw; x++) {
            if (!part[(size_t)y * bw + x]) continue;
            int ix = bx + x, iy = by + y;
            const uint8_t *px = img->data + ((size_t)iy * W + ix) * 3;
            double od[3], sum = 0;
            for (int k = 0; k < 3; k++) {
                od[k] = od_of(px[k], cr->ref[k]);
                s[k] += od[k];
                s2[k] += od[k] * od[k];
                sum += od[k];
            }
            /* 4-neighbour laplacian of the OD sum, replicating the image edge */
            double nb = 0;
            static const int ddx[4] = {1, -1, 0, 0}, ddy[4] = {0, 0, 1, -1};
            for (int d = 0; d < 4; d++) {
                int nx = ix + ddx[d], ny = iy + ddy[d];
                nx = nx < 0 ? 0 : nx >= W ? W - 1 : nx;
                ny = ny < 0 ? 0 : ny >= H ? H - 1 : ny;
                const uint8_t *q = img->data + ((size_t)ny * W + nx) * 3;
                for (int k = 0; k < 3; k++) nb += od_of(q[k], cr->ref[k]);
            }
            lap += fabs(nb - 4 * sum);
            double r = (od[1] - od[0]) / (fabs(sum) + 0.05);
            red += r, red2 += r * r;
            vals[n] = (float)sum;
            vals[bw * bh + n] = (float)r;
            n++;
        }
    double dn = n ? (double)n : 1, tot = 0;
    for (int k = 0; k < 3; k++) {
        double m = s[k] / dn;
        out[k] = (float)m;
        out[3 + k] = (float)sqrt(fmax(s2[k] / dn - m * m, 0));
        tot += m;
    }
    for (int k = 0; k < 3; k++) out[6 + k] = (float)(s[k] / dn / (fabs(tot) + 0.05));
    out[9] = (float)(lap / dn / (fabs(tot) + 0.05));
    out[10] = (float)quantile(vals, n, 0.1);
    out[11] = (float)quantile(vals, n, 0.5);
    out[12] = (float)quantile(vals, n, 0.9);
    double rm = red / dn;
    out[13] = (float)quantile(vals + (size_t)bw * bh, n, 0.9);
    out[14] = (float)sqrt(fmax(red2 / dn - rm * rm, 0));
    *mean_sum = tot;
    *median_sum = out[11];
}


/* Hand-crafted features of one cell (HAND_NAMES). */
static ls_status hand_features(const ls_image *img, const ls_mask *mask, const ls_cells *cells,
                               const ls_cell *c, int32_t id, const colour_ref *cr, float *out,
                               ls_error *err)
{
    int bx = c->bbox_x, by = c->bbox_y, bw = c->bbox_w, bh = c->bbox_h;
    size_t nb = (size_t)bw * bh;
    uint8_t *cell = calloc(nb, 1), *nuc = calloc(nb, 1), *cyt = calloc(nb, 1);
    float *dist = malloc(sizeof(float) * nb), *vals = malloc(sizeof(float) * 2 * nb);
    long *pts = malloc(sizeof(long) * (8 * (size_t)bh + 8));
    long *hull = malloc(sizeof(long) * (8 * (size_t)bh + 16));
    int32_t *lab = malloc(sizeof(int32_t) * nb * 2);
    if (!cell || !nuc || !cyt || !dist || !vals || !pts || !hull || !lab) {
        free(cell), free(nuc), free(cyt), free(dist), free(vals), free(pts), free(hull), free(lab);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory measuring a cell");
    }
    double raw[2][3] = {{0}}, all[3] = {0};
    long rn[2] = {0, 0};
    double nsx = 0, nsy = 0, nxx = 0, nyy = 0, nxy = 0, csx = 0, csy = 0;
    long nedges = 0;
    for (int y = 0; y < bh; y++)
        for (int x = 0; x < bw; x++) {
            size_t p = (size_t)(by + y) * cells->w + bx + x, q = (size_t)y * bw + x;
            if (cells->labels[p] != id) continue;
            cell[q] = 1;
            int part = mask->data[p] == LS_NUCLEUS_CLASS ? 0 : 1;
            (part ? cyt : nuc)[q] = 1;
            rn[part]++;
            for (int k = 0; k < 3; k++) {
                raw[part][k] += img->data[p * 3 + k];
                all[k] += img->data[p * 3 + k];
            }
            csx += x, csy += y;
            if (!part) nsx += x, nsy += y, nxx += (double)x * x, nyy += (double)y * y,
                       nxy += (double)x * y;
        }
    for (int y = 0; y < bh; y++) /* nucleus boundary edges (4-adjacent non-nucleus) */
        for (int x = 0; x < bw; x++) {
            if (!nuc[(size_t)y * bw + x]) continue;
            nedges += x == 0 || !nuc[(size_t)y * bw + x - 1];
            nedges += x == bw - 1 || !nuc[(size_t)y * bw + x + 1];
            nedges += y == 0 || !nuc[(size_t)(y - 1) * bw + x];
            nedges += y == bh - 1 || !nuc[(size_t)(y + 1) * bw + x];
        }
    double area = (double)c->area, na = (double)rn[0];
    out[0] = (float)log(area);
    out[1] = (float)(na / area);
    out[2] = (float)fmin(c->nc_ratio, 20.0);
    out[3] = (float)c->lobes;
    out[4] = (float)c->circularity;
    double ch = hull_area(cell, bw, bh, pts, hull);
    out[5] = (float)(ch > 0 ? area / ch : 1);
    double nh = hull_area(nuc, bw, bh, pts, hull);
    out[6] = (float)(nh > 0 ? na / nh : 1);
    double np = nedges * M_PI / 4.0;
    out[7] = (float)(np > 0 ? fmin(4 * M_PI * na / (np * np), 2.0) : 0);
    double req = sqrt(area / M_PI), nreq = sqrt(fmax(na, 1) / M_PI);
    if (na > 0) {
        double mx = nsx / na, my = nsy / na;
        double a = nxx / na - mx * mx + 1.0 / 12, b = nxy / na - mx * my;
        double cc = nyy / na - my * my + 1.0 / 12;
        double tr = (a + cc) / 2, det = sqrt(fmax((a - cc) * (a - cc) / 4 + b * b, 0));
        out[8] = (float)sqrt(fmax(tr - det, 0) / (tr + det));
        out[12] = (float)(hypot(mx - csx / area, my - csy / area) / req);
    } else {
        out[8] = 0, out[12] = 0;
    }
    int comps = components(nuc, bw, bh, lab, 1); /* 8-connected, no opening */
    out[9] = (float)(comps < 6 ? comps : 6);
    chamfer(nuc, bw, bh, dist);
    double dsum = 0, dmax = 0;
    for (size_t q = 0; q < nb; q++)
        if (nuc[q]) dsum += dist[q], dmax = fmax(dmax, dist[q]);
    out[10] = (float)(na > 0 ? dsum / na / nreq : 0);
    out[11] = (float)(na > 0 ? dmax / nreq : 0);
    double nmean = 0, nmed = 0, cmean = 0, cmed = 0;
    /* an empty part takes the whole cell's colour, as the mean RGB does */
    region_colour(img, rn[0] ? nuc : cell, bx, by, bw, bh, cr, vals, out + 13, &nmean, &nmed);
    region_colour(img, rn[1] ? cyt : cell, bx, by, bw, bh, cr, vals, out + 13 + COLOUR_BLOCK,
                  &cmean, &cmed);
    int o = 13 + 2 * COLOUR_BLOCK;
    out[o] = (float)(cmean / (fabs(nmean) + 0.05));
    long darker = 0;
    for (int y = 0; y < bh; y++)
        for (int x = 0; x < bw; x++) {
            if (!cyt[(size_t)y * bw + x]) continue;
            const uint8_t *px = img->data + ((size_t)(by + y) * img->w + bx + x) * 3;
            double sum = 0;
            for (int k = 0; k < 3; k++) sum += od_of(px[k], cr->ref[k]);
            darker += sum > nmed;
        }
    out[o + 1] = (float)(rn[1] ? (double)darker / (double)rn[1] : 0);
    for (int k = 0; k < 3; k++) out[o + 2 + k] = (float)cr->bg_od[k];
    for (int part = 0; part < 2; part++)
        for (int k = 0; k < 3; k++)
            out[o + 5 + part * 3 + k] = (float)((rn[part] ? raw[part][k] / rn[part]
                                                          : all[k] / area) / 255.0);
    for (int k = 0; k < 3; k++) out[o + 11 + k] = (float)(cr->ref[k] / 255.0);
    free(cell), free(nuc), free(cyt), free(dist), free(vals), free(pts), free(hull), free(lab);
    return LS_OK;
}

/* Features of every cell: encoder features pooled from ws, the forward of the whole image;
 * then the hand-crafted ones. */
static ls_status cell_features(ls_model *m, const ls_workspace *ws, const ls_image *img,
                               const ls_mask *mask, const ls_cells *cells, float **features,
                               ls_error *err)
{
    int f = ls_cell_feature_count(m), pooled = f - HAND_FEATURES;
    colour_ref cr;
    image_reference(img, mask, &cr);
    *features = malloc(sizeof(float) * (size_t)f * (cells->n ? cells->n : 1));
    if (!*features) return ls_fail(err, LS_ERR_NOMEM, "out of memory for cell features");
    ls_rect whole = {0, 0, img->w, img->h};
    ls_status st = LS_OK;
    for (int i = 0; i < cells->n && st == LS_OK; i++) {
        float *row = *features + (size_t)i * f;
        st = pool_stages(m, ws, cells, &cells->cells[i], i + 1, whole, row, err);
        if (st == LS_OK)
            st = hand_features(img, mask, cells, &cells->cells[i], i + 1, &cr, row + pooled, err);
    }
    if (st != LS_OK) {
        free(*features);
        *features = NULL;
    }
    return st;
}

/* The cell of `crop` (found in window r of the field) that holds most of field cell `id`'s
 * pixels: 0-based, or -1 when none does. */
static int matching_cell(const ls_cells *field, int32_t id, ls_rect r, const ls_cells *crop)
{
    long *votes = calloc((size_t)crop->n + 1, sizeof *votes);
    if (!votes) return -1;
    for (int y = 0; y < r.h; y++)
        for (int x = 0; x < r.w; x++) {
            int32_t own = field->labels[(size_t)(r.y + y) * field->w + r.x + x];
            int32_t got = crop->labels[(size_t)y * r.w + x];
            if (own == id && got > 0) votes[got]++;
        }
    int best = -1;
    for (int k = 1; k <= crop->n; k++)
        if (votes[k] > 0 && (best < 0 || votes[k] > votes[best + 1])) best = k - 1;
    free(votes);
    return best;
}

/* Paints the pixels of window crop r that belong to field cells other than `id` with the
 * median colour of the window's background (field mask class 0), so the window shows one white
 * cell among red cells and plasma, as the classifier's training images do. Without background
 * in the window the crop is left as it is. */
static void paint_out_neighbours(ls_image *crop, ls_rect r, const ls_mask *field_mask,
                                 const ls_cells *field, int32_t id)
{
    long hist[3][256] = {{0}}, nbg = 0;
    for (int y = 0; y < r.h; y++)
        for (int x = 0; x < r.w; x++) {
            if (field_mask->data[(size_t)(r.y + y) * field_mask->w + r.x + x] != 0) continue;
            const uint8_t *px = crop->data + ((size_t)y * r.w + x) * 3;
            for (int ch = 0; ch < 3; ch++) hist[ch][px[ch]]++;
            nbg++;
        }
    if (!nbg) return;
    uint8_t median[3];
    for (int ch = 0; ch < 3; ch++) median[ch] = (uint8_t)hist_quantile(hist[ch], nbg, 0.5);
    for (int y = 0; y < r.h; y++)
        for (int x = 0; x < r.w; x++) {
            int32_t own = field->labels[(size_t)(r.y + y) * field->w + r.x + x];
            if (own > 0 && own != id) memcpy(crop->data + ((size_t)y * r.w + x) * 3, median, 3);
        }
}

/* Features of field cell i from window r of the field, analysed as an image of its own
 * (segmentation, cells, features), as the classifier's training images were, with the other
 * white cells of the field painted out: those of the window's cell that holds most of field
 * cell i. A cell the window does not find again (a sliver the blend kept) takes encoder
 * features pooled from the same window's forward and hand-crafted ones from the field. */
static ls_status window_cell_features(ls_model *m, const ls_image *img, ls_rect r,
                                      const ls_cell_params *prm, const ls_mask *field_mask,
                                      const ls_cells *field, const colour_ref *field_cr, int i,
                                      float *out, ls_error *err)
{
    ls_image crop = {0};
    ls_mask mask = {0};
    ls_cells cells = {0};
    ls_workspace *ws = NULL;
    float *f = NULL;
    ls_cell_params whole = *prm;
    whole.window = 0;
    int nf = ls_cell_feature_count(m);
    ls_status st = ls_image_crop(img, r, &crop, err);
    if (st == LS_OK) paint_out_neighbours(&crop, r, field_mask, field, i + 1);
    if (st == LS_OK) st = ls_encode_image(m, &crop, &ws, err);
    if (st == LS_OK) st = ls_mask_from_logits(m, ws, r.w, r.h, &mask, NULL, err);
    if (st == LS_OK) st = ls_cells_find(&mask, &whole, &cells, err);
    if (st == LS_OK) st = cell_features(m, ws, &crop, &mask, &cells, &f, err);
    int k = st == LS_OK ? matching_cell(field, i + 1, r, &cells) : -1;
    if (k >= 0) {
        memcpy(out, f + (size_t)k * nf, sizeof(float) * nf);
    } else if (st == LS_OK) {
        const ls_cell *c = &field->cells[i];
        st = pool_stages(m, ws, field, c, i + 1, r, out, err);
        if (st == LS_OK)
            st = hand_features(img, field_mask, field, c, i + 1, field_cr,
                               out + nf - HAND_FEATURES, err);
    }
    free(f);
    ls_cells_free(&cells);
    ls_mask_free(&mask);
    ls_workspace_free(ws);
    ls_image_free(&crop);
    return st;
}

static int union_root(int *parent, int i)
{
    while (parent[i] != i) i = parent[i] = parent[parent[i]];
    return i;
}

/* Joins into cell i's set every other field cell that the window r centred on i, analysed as an
 * image of its own, places mostly (half its pixels or more) in the same cell as i. */
static ls_status join_by_window(ls_model *m, const ls_image *img, ls_rect r,
                                const ls_cell_params *prm, const ls_cells *field, int i,
                                int *parent, ls_error *err)
{
    ls_image crop = {0};
    ls_mask mask = {0};
    ls_cells cells = {0};
    ls_cell_params whole = *prm;
    whole.window = 0;
    long *in_k = calloc((size_t)field->n + 1, sizeof *in_k);
    ls_status st = in_k ? ls_image_crop(img, r, &crop, err)
                        : ls_fail(err, LS_ERR_NOMEM, "out of memory joining cells");
    if (st == LS_OK) st = ls_segment_image(m, &crop, &mask, NULL, err);
    if (st == LS_OK) st = ls_cells_find(&mask, &whole, &cells, err);
    int k = st == LS_OK ? matching_cell(field, i + 1, r, &cells) : -1;
    for (int y = 0; k >= 0 && y < r.h; y++)
        for (int x = 0; x < r.w; x++)
            if (cells.labels[(size_t)y * r.w + x] == k + 1)
                in_k[field->labels[(size_t)(r.y + y) * field->w + r.x + x]]++;
    for (int j = 0; k >= 0 && j < field->n; j++)
        if (j != i && 2 * in_k[j + 1] >= field->cells[j].area) {
            int a = union_root(parent, i), b = union_root(parent, j);
            parent[a > b ? a : b] = a < b ? a : b;
        }
    free(in_k);
    ls_cells_free(&cells);
    ls_mask_free(&mask);
    ls_image_free(&crop);
    return st;
}

/* The blend of windows can break one cell in two: where packed cells leave no plasma between
 * them, its cytoplasm can come out as background, leaving its nucleus lobes apart. The window
 * centred on each cell, seen as a training image is, tells: field cells it finds as one are
 * merged (ls_cells_merge). */
static ls_status merge_split_cells(ls_model *m, const ls_image *img, const ls_mask *mask,
                                   const ls_cell_params *prm, ls_cells *cells, ls_error *err)
{
    int n = cells->n, merged = 0;
    int *parent = malloc(sizeof(int) * (n ? n : 1));
    if (!parent) return ls_fail(err, LS_ERR_NOMEM, "out of memory joining %d cells", n);
    for (int i = 0; i < n; i++) parent[i] = i;
    ls_status st = LS_OK;
    for (int i = 0; i < n && st == LS_OK; i++) {
        ls_rect r = ls_window_around(img, prm->window, cells->cells[i].cx, cells->cells[i].cy);
        st = join_by_window(m, img, r, prm, cells, i, parent, err);
    }
    for (int i = 0; i < n; i++) {
        parent[i] = union_root(parent, i);
        merged += parent[i] != i;
    }
    if (st == LS_OK && merged) st = ls_cells_merge(cells, mask, prm, parent, err);
    free(parent);
    return st;
}

/* Features of the cells of a field segmented over windows: each cell is analysed in the window
 * centred on it (window_cell_features), so the classifier sees it as in its training images. */
static ls_status field_cell_features(ls_model *m, const ls_image *img, const ls_mask *mask,
                                     const ls_cells *cells, const ls_cell_params *prm,
                                     float **features, ls_error *err)
{
    int f = ls_cell_feature_count(m);
    colour_ref cr;
    image_reference(img, mask, &cr);
    *features = malloc(sizeof(float) * (size_t)f * (cells->n ? cells->n : 1));
    if (!*features) return ls_fail(err, LS_ERR_NOMEM, "out of memory for cell features");
    ls_status st = LS_OK;
    for (int i = 0; i < cells->n && st == LS_OK; i++) {
        const ls_cell *c = &cells->cells[i];
        ls_rect r = ls_window_around(img, prm->window, c->cx, c->cy);
        st = window_cell_features(m, img, r, prm, mask, cells, &cr, i, *features + (size_t)i * f,
                                  err);
    }
    if (st != LS_OK) {
        free(*features);
        *features = NULL;
    }
    return st;
}

static ls_status check_sizes(const ls_image *img, const ls_mask *mask, const ls_cells *cells,
                             ls_error *err)
{
    if (img->w != mask->w || img->h != mask->h || cells->w != mask->w || cells->h != mask->h)
        return ls_fail(err, LS_ERR_SHAPE, "cell features: image %dx%d, mask %dx%d and cells "
                       "%dx%d must agree", img->w, img->h, mask->w, mask->h, cells->w, cells->h);
    return LS_OK;
}

ls_status ls_cells_features(ls_model *m, const ls_image *img, const ls_mask *mask,
                            const ls_cells *cells, float **features, ls_error *err)
{
    *features = NULL;
    ls_status st = check_sizes(img, mask, cells, err);
    if (st != LS_OK) return st;
    ls_workspace *ws = NULL;
    st = ls_encode_image(m, img, &ws, err);
    if (st == LS_OK) st = cell_features(m, ws, img, mask, cells, features, err);
    ls_workspace_free(ws);
    return st;
}

/* ---- classifier ------------------------------------------------------------------------- */

/* Domains (stains/sources) of the classifier: K rows of domain_mean / domain_std [K, F], or 0
 * when the tensors are absent (no per-domain normalisation). */
static int domain_count(const ls_model *m, int f)
{
    const ls_array *dm = ls_model_get_extra(m, T_DMEAN), *ds = ls_model_get_extra(m, T_DSTD);
    if (!dm || !ds || dm->dtype != LS_F32 || ds->dtype != LS_F32 || dm->ndim != ds->ndim)
        return 0;
    int k = dm->ndim == 2 ? (int)dm->shape[0] : 1;
    if (k < 1 || ls_array_numel(dm) != (size_t)k * f || ls_array_numel(ds) != (size_t)k * f)
        return -1;
    return k;
}

int ls_model_has_cell_classifier(const ls_model *m)
{
    int f = ls_cell_feature_count(m);
    const ls_array *w = ls_model_get_extra(m, T_WEIGHT), *b = ls_model_get_extra(m, T_BIAS);
    const ls_array *mu = ls_model_get_extra(m, T_MEAN), *sd = ls_model_get_extra(m, T_STD);
    return w && b && mu && sd && w->dtype == LS_F32 && b->dtype == LS_F32 &&
           mu->dtype == LS_F32 && sd->dtype == LS_F32 && w->ndim == 2 &&
           w->shape[0] == LS_CELL_TYPES && w->shape[1] == f && ls_array_numel(b) == LS_CELL_TYPES &&
           ls_array_numel(mu) == (size_t)f && ls_array_numel(sd) == (size_t)f &&
           domain_count(m, f) >= 0;
}

/* The domain whose background signature (SIG_FEATURES) is nearest to the row's, distances in
 * units of each domain's own spread. */
static int nearest_domain(const float *x, const float *dm, const float *ds, int k, int f)
{
    int best = 0;
    double bd = INFINITY;
    for (int d = 0; d < k; d++) {
        double dist = 0;
        for (int s = 0; s < SIG_COUNT; s++) {
            int j = f - HAND_FEATURES + SIG_FEATURES[s];
            double e = (x[j] - dm[(size_t)d * f + j]) / ds[(size_t)d * f + j];
            dist += e * e;
        }
        if (dist < bd) bd = dist, best = d;
    }
    return best;
}

static double stored_threshold(const ls_model *m)
{
    double t = DEFAULT_THRESHOLD;
    const char *json = ls_model_get_meta(m, "cell_classifier");
    cJSON *o = json ? cJSON_Parse(json) : NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "threshold");
    if (cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= 1) t = v->valuedouble;
    cJSON_Delete(o);
    return t;
}

/* Softmax probabilities of the 5 types for one standardised feature row. */
static void predict_row(const double *w, const double *b, const double *z, int f, double *p)
{
    double mx = -INFINITY;
    for (int k = 0; k < LS_CELL_TYPES; k++) {
        double s = b[k];
        for (int j = 0; j < f; j++) s += w[(size_t)k * f + j] * z[j];
        p[k] = s;
        if (s > mx) mx = s;
    }
    double sum = 0;
    for (int k = 0; k < LS_CELL_TYPES; k++) sum += (p[k] = exp(p[k] - mx));
    for (int k = 0; k < LS_CELL_TYPES; k++) p[k] /= sum;
}

ls_status ls_cells_classify(const ls_model *m, const float *features, double threshold,
                            ls_cells *cells, ls_error *err)
{
    if (!ls_model_has_cell_classifier(m))
        return ls_fail(err, LS_ERR_ARG, "the model has no cell classifier (or one for another "
                       "feature size); train one with: leukoseg train-cells --model FILE");
    if (threshold < 0) threshold = stored_threshold(m);
    int f = ls_cell_feature_count(m);
    const float *wf = ls_model_get_extra(m, T_WEIGHT)->data;
    const float *bf = ls_model_get_extra(m, T_BIAS)->data;
    const float *mu = ls_model_get_extra(m, T_MEAN)->data, *sd = ls_model_get_extra(m, T_STD)->data;
    double *w = malloc(sizeof(double) * ((size_t)LS_CELL_TYPES * f + 2 * (size_t)f));
    if (!w) return ls_fail(err, LS_ERR_NOMEM, "out of memory classifying cells");
    double *z = w + (size_t)LS_CELL_TYPES * f, b[LS_CELL_TYPES], p[LS_CELL_TYPES];
    for (size_t i = 0; i < (size_t)LS_CELL_TYPES * f; i++) w[i] = wf[i];
    for (int k = 0; k < LS_CELL_TYPES; k++) b[k] = bf[k];
    int nd = domain_count(m, f);
    const float *dm = nd ? ls_model_get_extra(m, T_DMEAN)->data : NULL;
    const float *ds = nd ? ls_model_get_extra(m, T_DSTD)->data : NULL;
    for (int i = 0; i < cells->n; i++) {
        const float *x = features + (size_t)i * f;
        int d = nd > 1 ? nearest_domain(x, dm, ds, nd, f) : 0;
        for (int j = 0; j < f; j++) {
            double v = nd ? (x[j] - dm[(size_t)d * f + j]) / ds[(size_t)d * f + j] : x[j];
            z[j] = (v - mu[j]) / sd[j];
        }
        predict_row(w, b, z, f, p);
        ls_cell *c = &cells->cells[i];
        int best = 0;
        for (int k = 0; k < LS_CELL_TYPES; k++) {
            c->probs[k] = (float)p[k];
            if (p[k] > p[best]) best = k;
        }
        c->predicted = best + 1;
        c->confidence = p[best];
        c->type = p[best] >= threshold ? best + 1 : 0;
    }
    free(w);
    return LS_OK;
}

typedef struct {
    int n, f;
    const double *z;   /* [n, f] standardised features */
    const int *y;      /* 0..4 */
    const double *sw;  /* per-sample weight, normalised to sum 1 */
} fit_data;

/* Weighted cross-entropy + L2/2 ||W||^2 (bias not penalised); gradient into g when not NULL.
 * Parameters theta = [W (5 x f), b (5)]. */
static double objective(const fit_data *d, const double *theta, double *g, double *p)
{
    int f = d->f, np = LS_CELL_TYPES * f + LS_CELL_TYPES;
    const double *w = theta, *b = theta + (size_t)LS_CELL_TYPES * f;
    double loss = 0;
    if (g) memset(g, 0, sizeof(double) * np);
    for (int i = 0; i < d->n; i++) {
        const double *z = d->z + (size_t)i * f;
        predict_row(w, b, z, f, p);
        loss -= d->sw[i] * log(fmax(p[d->y[i]], 1e-300));
        if (!g) continue;
        for (int k = 0; k < LS_CELL_TYPES; k++) {
            double r = d->sw[i] * (p[k] - (k == d->y[i]));
            double *gk = g + (size_t)k * f;
            for (int j = 0; j < f; j++) gk[j] += r * z[j];
            g[(size_t)LS_CELL_TYPES * f + k] += r;
        }
    }
    for (size_t j = 0; j < (size_t)LS_CELL_TYPES * f; j++) {
        loss += 0.5 * L2 * w[j] * w[j];
        if (g) g[j] += L2 * w[j];
    }
    return loss;
}

static double dot(const double *a, const double *b, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* L-BFGS search direction into dir from gradient g and the last k curvature pairs (s_i, y_i),
 * oldest first in ring order from head (Nocedal & Wright, algorithm 7.4). */
static void lbfgs_direction(const double *g, const double *s, const double *y, const double *rho,
                            int k, int head, int np, double *alpha, double *dir)
{
    for (int j = 0; j < np; j++) dir[j] = -g[j];
    for (int i = k - 1; i >= 0; i--) {
        int r = (head + i) % LBFGS_MEMORY;
        alpha[i] = rho[r] * dot(s + (size_t)r * np, dir, np);
        for (int j = 0; j < np; j++) dir[j] -= alpha[i] * y[(size_t)r * np + j];
    }
    if (k > 0) { /* initial Hessian: the scaling of the newest pair */
        int r = (head + k - 1) % LBFGS_MEMORY;
        const double *yr = y + (size_t)r * np;
        double gamma = 1.0 / (rho[r] * dot(yr, yr, np));
        for (int j = 0; j < np; j++) dir[j] *= gamma;
    }
    for (int i = 0; i < k; i++) {
        int r = (head + i) % LBFGS_MEMORY;
        double beta = rho[r] * dot(y + (size_t)r * np, dir, np);
        for (int j = 0; j < np; j++) dir[j] += s[(size_t)r * np + j] * (alpha[i] - beta);
    }
}

/* L-BFGS with Armijo backtracking. The problem is strictly convex (L2), so this reaches its
 * single minimum; plain gradient descent needed over 2500 iterations on the shipped data, this
 * about 1/10 of that. A direction that is not downhill restarts from the gradient. */
static ls_status minimise(const fit_data *d, double *theta, ls_error *err)
{
    int np = LS_CELL_TYPES * d->f + LS_CELL_TYPES;
    size_t mem = (size_t)LBFGS_MEMORY * np;
    double *g = malloc(sizeof(double) * np), *trial = malloc(sizeof(double) * np);
    double *g_new = malloc(sizeof(double) * np), *dir = malloc(sizeof(double) * np);
    double *s = malloc(sizeof(double) * mem), *y = malloc(sizeof(double) * mem);
    double rho[LBFGS_MEMORY], alpha[LBFGS_MEMORY], p[LS_CELL_TYPES];
    ls_status st = LS_OK;
    if (!g || !trial || !g_new || !dir || !s || !y)
        st = ls_fail(err, LS_ERR_NOMEM, "out of memory fitting the cell classifier");
    double loss = st == LS_OK ? objective(d, theta, g, p) : 0;
    int k = 0, head = 0;
    for (int it = 0; st == LS_OK && it < FIT_ITERS; it++) {
        double gg = dot(g, g, np);
        if (gg < 1e-10) break; /* gradient norm 1e-5: far below what moves a prediction */
        lbfgs_direction(g, s, y, rho, k, head, np, alpha, dir);
        double slope = dot(g, dir, np);
        if (slope >= 0) { /* not downhill: forget the curvature pairs */
            k = 0;
            for (int j = 0; j < np; j++) dir[j] = -g[j];
            slope = -gg;
        }
        double step = k ? 1.0 : 1.0 / sqrt(gg), next = loss;
        while (step > 1e-12) {
            for (int j = 0; j < np; j++) trial[j] = theta[j] + step * dir[j];
            next = objective(d, trial, g_new, p);
            if (next <= loss + 1e-4 * step * slope) break;
            step *= 0.5;
        }
        if (step <= 1e-12) break;
        double sy = 0;
        for (int j = 0; j < np; j++) sy += (trial[j] - theta[j]) * (g_new[j] - g[j]);
        if (sy > 1e-12) { /* keep only pairs with positive curvature */
            int r = (head + k) % LBFGS_MEMORY; /* the oldest pair's slot when memory is full */
            double *sr = s + (size_t)r * np, *yr = y + (size_t)r * np;
            for (int j = 0; j < np; j++) sr[j] = trial[j] - theta[j], yr[j] = g_new[j] - g[j];
            rho[r] = 1.0 / sy;
            if (k < LBFGS_MEMORY) k++;
            else head = (head + 1) % LBFGS_MEMORY;
        }
        memcpy(theta, trial, sizeof(double) * np);
        memcpy(g, g_new, sizeof(double) * np);
        loss = next;
    }
    free(g), free(trial), free(g_new), free(dir), free(s), free(y);
    if (st != LS_OK) return st;
    return isfinite(loss) ? LS_OK : ls_fail(err, LS_ERR_NUMERIC, "the cell classifier's loss "
                                            "became %g", loss);
}

static ls_status store_f32(ls_model *m, const char *name, const double *v, int rows, int cols,
                           ls_error *err)
{
    float *data = malloc(sizeof(float) * (size_t)rows * cols);
    if (!data) return ls_fail(err, LS_ERR_NOMEM, "out of memory storing %s", name);
    for (size_t i = 0; i < (size_t)rows * cols; i++) data[i] = (float)v[i];
    ls_array a = {LS_F32, rows > 1 ? 2 : 1, {0}, data};
    a.shape[0] = rows > 1 ? rows : cols;
    a.shape[1] = cols;
    ls_status st = ls_model_set_extra(m, name, &a, err);
    free(data);
    return st;
}

static char *classifier_meta(const ls_model *m, int n, const int *counts, const double *cw,
                             int nd, const int *domain_cells, double train_acc)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *types = cJSON_AddArrayToObject(o, "types");
    for (int k = 1; k <= LS_CELL_TYPES; k++)
        cJSON_AddItemToArray(types, cJSON_CreateString(TYPE_NAMES[k]));
    cJSON_AddStringToObject(o, "unidentified", TYPE_NAMES[0]);
    cJSON_AddNumberToObject(o, "threshold", DEFAULT_THRESHOLD);
    char desc[1024];
    const int *h = m->cfg.hidden;
    snprintf(desc, sizeof desc, "features 0..%d: masked average pooling of encoder stage outputs "
             "1-4 (%d+%d+%d+%d; weight %g in the fit), then %d hand-crafted features listed in "
             "hand_features (colours as optical density ln(white/I) against the image's "
             "background white point, the 95th percentile of mask-class-0 pixels). Each row is "
             "normalised by the domain_mean/domain_std row of its domain (the nearest by the "
             "background features %d,%d,%d,%d,%d,%d counted from the first hand-crafted one; "
             "domain_mean is the mean of the per-type means, domain_std the within-type spread), "
             "then standardised by feature_mean/feature_std",
             h[0] + h[1] + h[2] + h[3] - 1, h[0], h[1], h[2], h[3], POOLED_GAIN, HAND_FEATURES,
             SIG_FEATURES[0], SIG_FEATURES[1], SIG_FEATURES[2], SIG_FEATURES[3], SIG_FEATURES[4],
             SIG_FEATURES[5]);
    cJSON_AddStringToObject(o, "features", desc);
    cJSON_AddNumberToObject(o, "feature_count", ls_cell_feature_count(m));
    cJSON_AddItemToObject(o, "hand_features", cJSON_CreateStringArray(HAND_NAMES, HAND_FEATURES));
    cJSON_AddStringToObject(o, "model", "softmax regression, weighted cross-entropy + L2");
    cJSON_AddNumberToObject(o, "l2", L2);
    cJSON_AddNumberToObject(o, "pooled_gain", POOLED_GAIN);
    cJSON_AddNumberToObject(o, "domains", nd);
    cJSON_AddItemToObject(o, "domain_cells", cJSON_CreateIntArray(domain_cells, nd));
    cJSON_AddNumberToObject(o, "train_samples", n);
    cJSON_AddItemToObject(o, "train_counts", cJSON_CreateIntArray(counts, LS_CELL_TYPES));
    cJSON_AddItemToObject(o, "class_weights", cJSON_CreateDoubleArray(cw, LS_CELL_TYPES));
    cJSON_AddNumberToObject(o, "train_accuracy", train_acc);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* Per-domain normalisation of feature j over the rows of domain d: the centre is the mean of the
 * per-type means (types with >= 2 cells; the plain mean when none has), so sources with
 * different type mixtures are aligned on the types, not on their mixture; the spread is the RMS
 * deviation from the own type's mean (from the centre for rarer types). */
static void domain_stats(const float *x, const int *types, const int *dom, int n, int f, int d,
                         int j, double *centre, double *spread)
{
    double cm[LS_CELL_TYPES] = {0}, mu = 0, all = 0, v = 0;
    int cn[LS_CELL_TYPES] = {0}, k = 0, rows = 0;
    for (int i = 0; i < n; i++)
        if (dom[i] == d) {
            cm[types[i] - 1] += x[(size_t)i * f + j];
            cn[types[i] - 1]++;
            all += x[(size_t)i * f + j];
            rows++;
        }
    for (int t = 0; t < LS_CELL_TYPES; t++)
        if (cn[t] >= 2) cm[t] /= cn[t], mu += cm[t], k++;
    mu = k ? mu / k : all / (rows ? rows : 1);
    for (int i = 0; i < n; i++)
        if (dom[i] == d) {
            int t = types[i] - 1;
            double e = x[(size_t)i * f + j] - (cn[t] >= 2 ? cm[t] : mu);
            v += e * e;
        }
    v = rows > 1 ? v / rows : 0;
    *centre = mu;
    *spread = v > 1e-12 ? sqrt(v) : 1.0;
}

/* Fit with per-domain normalisation; dom (NULL: one domain) holds 0..nd-1 per row. */
static ls_status fit_domains(ls_model *m, const float *features, const int *types, const int *dom,
                             int n, ls_error *err)
{
    int f = ls_cell_feature_count(m), pooled = f - HAND_FEATURES, counts[LS_CELL_TYPES] = {0};
    int present = 0, nd = 1, domain_cells[MAX_DOMAINS] = {0};
    for (int i = 0; i < n; i++) {
        if (types[i] < 1 || types[i] > LS_CELL_TYPES)
            return ls_fail(err, LS_ERR_ARG, "cell type %d of training cell %d is not 1..5",
                           types[i], i);
        counts[types[i] - 1]++;
        if (dom && (dom[i] < 0 || dom[i] >= MAX_DOMAINS))
            return ls_fail(err, LS_ERR_ARG, "domain %d of training cell %d is not 0..%d", dom[i],
                           i, MAX_DOMAINS - 1);
        if (dom && dom[i] + 1 > nd) nd = dom[i] + 1;
        domain_cells[dom ? dom[i] : 0]++;
    }
    for (int k = 0; k < LS_CELL_TYPES; k++) present += counts[k] > 0;
    if (present < 2)
        return ls_fail(err, LS_ERR_ARG, "the cell classifier needs labelled cells of at least two "
                       "types; got %d cells of %d type(s)", n, present);
    for (int d = 0; d < nd; d++)
        if (!domain_cells[d])
            return ls_fail(err, LS_ERR_ARG, "cell classifier: domain %d has no cells", d);
    size_t np = (size_t)LS_CELL_TYPES * f + LS_CELL_TYPES;
    double *mean = calloc(f, sizeof *mean), *sd = calloc(f, sizeof *sd);
    double *z = malloc(sizeof(double) * (size_t)n * f), *sw = malloc(sizeof(double) * n);
    double *theta = calloc(np, sizeof *theta);
    double *dmean = malloc(sizeof(double) * (size_t)nd * f);
    double *dsd = malloc(sizeof(double) * (size_t)nd * f);
    int *y = malloc(sizeof(int) * n), *d0 = calloc(n, sizeof(int));
    ls_status st = LS_OK;
    if (!mean || !sd || !z || !sw || !theta || !dmean || !dsd || !y || !d0)
        st = ls_fail(err, LS_ERR_NOMEM, "out of memory fitting the cell classifier");
    double cw[LS_CELL_TYPES] = {0}, acc = 0;
    if (st == LS_OK) {
        const int *dd = dom ? dom : d0;
        for (int d = 0; d < nd; d++)
            for (int j = 0; j < f; j++)
                domain_stats(features, types, dd, n, f, d, j, &dmean[(size_t)d * f + j],
                             &dsd[(size_t)d * f + j]);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < f; j++) {
                size_t q = (size_t)dd[i] * f + j;
                z[(size_t)i * f + j] = (features[(size_t)i * f + j] - dmean[q]) / dsd[q];
            }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < f; j++) mean[j] += z[(size_t)i * f + j] / (double)n;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < f; j++) {
                double v = z[(size_t)i * f + j] - mean[j];
                sd[j] += v * v / (double)n;
            }
        /* a constant feature keeps std 1, so it standardises to 0 instead of dividing by 0 */
        for (int j = 0; j < f; j++) sd[j] = sd[j] > 1e-12 ? sqrt(sd[j]) : 1.0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < f; j++) {
                double *v = &z[(size_t)i * f + j];
                *v = (*v - mean[j]) / sd[j];
                if (j < pooled) *v *= POOLED_GAIN; /* 0: the feature leaves the fit */
            }
        if (POOLED_GAIN > 0)
            for (int j = 0; j < pooled; j++) sd[j] /= POOLED_GAIN;
        /* Inverse-frequency weights (balanced classes), capped: a type seen once or twice
         * (basophils) should count more, but not enough to let two samples steer the fit. */
        for (int k = 0; k < LS_CELL_TYPES; k++)
            cw[k] = counts[k] ? fmin((double)n / (LS_CELL_TYPES * counts[k]), MAX_CLASS_WEIGHT) : 0;
        double total = 0;
        for (int i = 0; i < n; i++) total += cw[types[i] - 1];
        for (int i = 0; i < n; i++) {
            y[i] = types[i] - 1;
            sw[i] = cw[y[i]] / total;
        }
        fit_data d = {n, f, z, y, sw};
        st = minimise(&d, theta, err);
        for (int i = 0; st == LS_OK && i < n; i++) {
            double p[LS_CELL_TYPES];
            predict_row(theta, theta + (size_t)LS_CELL_TYPES * f, z + (size_t)i * f, f, p);
            int best = 0;
            for (int k = 1; k < LS_CELL_TYPES; k++)
                if (p[k] > p[best]) best = k;
            acc += (best == y[i]) / (double)n;
        }
    }
    if (st == LS_OK) st = store_f32(m, T_WEIGHT, theta, LS_CELL_TYPES, f, err);
    if (st == LS_OK)
        st = store_f32(m, T_BIAS, theta + (size_t)LS_CELL_TYPES * f, 1, LS_CELL_TYPES, err);
    if (st == LS_OK) st = store_f32(m, T_MEAN, mean, 1, f, err);
    if (st == LS_OK) st = store_f32(m, T_STD, sd, 1, f, err);
    /* [K, F]; [F] for a single domain */
    if (st == LS_OK) st = store_f32(m, T_DMEAN, dmean, nd, f, err);
    if (st == LS_OK) st = store_f32(m, T_DSTD, dsd, nd, f, err);
    if (st == LS_OK) {
        char *meta = classifier_meta(m, n, counts, cw, nd, domain_cells, acc);
        st = meta ? ls_model_set_meta(m, "cell_classifier", meta, err)
                  : ls_fail(err, LS_ERR_NOMEM, "out of memory");
        free(meta);
    }
    free(mean), free(sd), free(z), free(sw), free(theta), free(dmean), free(dsd), free(y);
    free(d0);
    return st;
}

ls_status ls_celltype_fit(ls_model *m, const float *features, const int *types, int n,
                          ls_error *err)
{
    return fit_domains(m, features, types, NULL, n, err);
}

/* ---- per image -------------------------------------------------------------------------- */

static double equivalent_diameter(long area) { return sqrt(4.0 * (double)area / M_PI); }

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median equivalent diameter of the cells not cut by the border; 0 when there are none. */
static double median_complete_diameter(const ls_cells *cells, int *complete)
{
    double *d = malloc(sizeof(double) * (cells->n ? cells->n : 1));
    *complete = 0;
    if (!d) return 0.0;
    for (int i = 0; i < cells->n; i++)
        if (!cells->cells[i].border) d[(*complete)++] = equivalent_diameter(cells->cells[i].area);
    qsort(d, (size_t)*complete, sizeof *d, compare_double);
    double median = *complete ? d[*complete / 2] : 0.0;
    free(d);
    return median;
}

int ls_field_check(const ls_model *m, const ls_image *img, const ls_cells *cells, int window)
{
    ls_preproc pp;
    ls_model_preproc(m, &pp);
    int side = img->w > img->h ? img->w : img->h, input = pp.width > pp.height ? pp.width
                                                                             : pp.height;
    int complete = 0, flags = 0;
    double median = median_complete_diameter(cells, &complete);
    int windowed = window > 0 && window < side;
    if (!windowed && side > 2.5 * input) flags |= LS_FIELD_LARGE;
    if (!windowed && complete >= 2 && median < 0.25 * side) flags |= LS_FIELD_SMALL_CELLS;
    if (windowed && complete >= 1 && (median < 0.2 * window || median > 0.95 * window))
        flags |= LS_FIELD_WINDOW_MISMATCH;
    return flags;
}

const char *ls_field_warning(int bit)
{
    switch (bit) {
    case LS_FIELD_LARGE:
        return "larger than the images the model learned from: if it holds several white "
               "cells, set a window W of about 2.5 cell diameters in pixels (--window W, or "
               "the page's field window)";
    case LS_FIELD_SMALL_CELLS:
        return "its cells are small against the image: a field shrunk whole onto the model's "
               "input shows it cells smaller than it learned, and many are missed; set a window "
               "W of about 2.5 cell diameters in pixels (--window W, or the page's field "
               "window)";
    case LS_FIELD_WINDOW_MISMATCH:
        return "the cells found do not fit the window (training images frame a cell at 0.3-0.7 "
               "of their side): check the overlay, and set W to about 2.5 cell diameters";
    default:
        return "";
    }
}

ls_status ls_cells_analyze(ls_model *m, const ls_image *img, const ls_cell_params *prm,
                           double threshold, ls_mask *mask_out, ls_cells *cells, float **features,
                           ls_error *err)
{
    memset(cells, 0, sizeof *cells);
    if (features) *features = NULL;
    int nl = m->cfg.num_labels;
    if (nl <= LS_NUCLEUS_CLASS)
        return ls_fail(err, LS_ERR_ARG, "cell analysis needs a model with background, cytoplasm "
                       "and nucleus classes; this one predicts %d", nl);
    ls_workspace *ws = NULL;
    float *f = NULL;
    ls_mask mask = {0};
    int windowed = prm->window > 0 && (prm->window < img->w || prm->window < img->h);
    ls_status st;
    if (windowed) {
        st = ls_segment_windows(m, img, prm->window, &mask, NULL, err);
    } else {
        /* One forward serves both the segmentation and the cell features. */
        st = ls_encode_image(m, img, &ws, err);
        if (st == LS_OK) st = ls_mask_from_logits(m, ws, img->w, img->h, &mask, NULL, err);
    }
    if (st == LS_OK) st = ls_cells_find(&mask, prm, cells, err);
    if (st == LS_OK && windowed) st = merge_split_cells(m, img, &mask, prm, cells, err);
    int classify = ls_model_has_cell_classifier(m);
    if (st == LS_OK && (classify || features))
        st = windowed ? field_cell_features(m, img, &mask, cells, prm, &f, err)
                      : cell_features(m, ws, img, &mask, cells, &f, err);
    if (st == LS_OK && classify) st = ls_cells_classify(m, f, threshold, cells, err);
    ls_workspace_free(ws);
    if (st == LS_OK && features) {
        *features = f;
        f = NULL;
    }
    free(f);
    if (st == LS_OK && mask_out) {
        *mask_out = mask;
        mask.data = NULL;
    }
    ls_mask_free(&mask);
    if (st != LS_OK) ls_cells_free(cells);
    return st;
}

/* The largest cell of a mask, or -1 when it has none. */
static int largest_cell(const ls_cells *c)
{
    int best = -1;
    for (int i = 0; i < c->n; i++)
        if (best < 0 || c->cells[i].area > c->cells[best].area) best = i;
    return best;
}

/* Training rows of the classifier: features [n, f] with each row's type (1..5), domain (the
 * image's folder), image (sample index) and whether cross-validation scores it (the predicted
 * cell of the unrotated view, the cell count --eval scores). */
typedef struct {
    int n, f, cap;
    float *x;
    int *type, *dom, *image, *scored;
    int nsamples;
    int *sample_dom; /* [nsamples] domain of each labelled image used, -1 for the rest */
    int ndom;
    char *domain_names[MAX_DOMAINS];
} train_rows;

static void train_rows_free(train_rows *r)
{
    free(r->x), free(r->type), free(r->dom), free(r->image), free(r->scored);
    free(r->sample_dom);
    for (int d = 0; d < r->ndom; d++) free(r->domain_names[d]);
}

/* The largest cell of mask and its features from the encoded image ws, appended to r (type t,
 * domain d, image i); nothing when the mask holds no cell. */
static ls_status add_largest_cell(ls_model *m, const ls_workspace *ws, const ls_image *img,
                                  const ls_mask *mask, int t, int d, int i, int scored,
                                  train_rows *r, ls_error *err)
{
    ls_cell_params prm = ls_cell_params_default();
    ls_cells cells = {0};
    float *feat = NULL;
    ls_status st = ls_cells_find(mask, &prm, &cells, err);
    if (st == LS_OK) st = cell_features(m, ws, img, mask, &cells, &feat, err);
    int best = st == LS_OK ? largest_cell(&cells) : -1;
    if (best >= 0 && r->n < r->cap) {
        memcpy(r->x + (size_t)r->n * r->f, feat + (size_t)best * r->f, sizeof(float) * r->f);
        r->type[r->n] = t, r->dom[r->n] = d, r->image[r->n] = i, r->scored[r->n] = scored;
        r->n++;
    }
    free(feat);
    ls_cells_free(&cells);
    return st;
}

/* The training rows of one view of a labelled image: its largest cell as found at inference
 * (the model's own predicted mask), so the classifier learns the shapes and colours the
 * segmentation really produces, and its largest ground-truth cell (gt->data NULL: none), both
 * with features of the one encoder pass. */
static ls_status add_view_rows(ls_model *m, const ls_image *img, const ls_mask *gt, int t, int d,
                               int i, int view, train_rows *r, ls_error *err)
{
    ls_workspace *ws = NULL;
    ls_mask pred = {0};
    ls_status st = ls_encode_image(m, img, &ws, err);
    if (st == LS_OK) st = ls_mask_from_logits(m, ws, img->w, img->h, &pred, NULL, err);
    if (st == LS_OK) st = add_largest_cell(m, ws, img, &pred, t, d, i, view == 0, r, err);
    if (st == LS_OK && gt->data) st = add_largest_cell(m, ws, img, gt, t, d, i, 0, r, err);
    ls_mask_free(&pred);
    ls_workspace_free(ws);
    return st;
}

/* The domain of sample i: its image's folder, so one source added twice (train and val splits)
 * stays one domain; folders beyond MAX_DOMAINS share the last. -1: out of memory. */
static int sample_domain(const ls_dataset *ds, int i, train_rows *r)
{
    const char *path = ds->samples[i].image_path, *slash = strrchr(path, '/');
    size_t len = slash ? (size_t)(slash - path) : 0;
    int d = 0;
    while (d < r->ndom && !(strlen(r->domain_names[d]) == len &&
                            !strncmp(r->domain_names[d], path, len)))
        d++;
    if (d == r->ndom && r->ndom < MAX_DOMAINS) {
        if (!(r->domain_names[d] = strndup(path, len))) return -1;
        r->ndom++;
    }
    return d < MAX_DOMAINS ? d : MAX_DOMAINS - 1;
}

/* Each labelled image gives up to two rows (add_view_rows) in each of its first `views` dihedral
 * views: the encoder features are not rotation invariant, and a smear has no preferred
 * orientation. Both kinds of row and the 8 views were chosen by cross-validation on the
 * train+val splits of segmentation_WBC (train-cells --cv, README). An image listed twice (one
 * folder added twice, or split "all" with "train") is used once, so it can neither weigh double
 * nor sit on both sides of a cross-validation fold. */
static ls_status collect_rows(ls_model *m, const ls_dataset *ds, int views, train_rows *r,
                              ls_error *err)
{
    int labelled = 0;
    for (int i = 0; i < ds->n; i++)
        labelled += ds->samples[i].cell_type >= 1 && ds->samples[i].cell_type <= LS_CELL_TYPES;
    if (m->cfg.num_labels <= LS_NUCLEUS_CLASS)
        return ls_fail(err, LS_ERR_ARG, "cell types need a model with background, cytoplasm and "
                       "nucleus classes; this one predicts %d", m->cfg.num_labels);
    if (!labelled)
        return ls_fail(err, LS_ERR_ARG, "none of the %d samples has a cell-type label: each "
                       "dataset folder needs its 'Class Labels of Dataset N.csv' beside it, with "
                       "a header and rows 'image ID,class' (class 1-5: neutrophil, lymphocyte, "
                       "monocyte, eosinophil, basophil)%s%s", ds->n, ds->notes[0] ? "; " : "",
                       ds->notes);
    r->f = ls_cell_feature_count(m);
    r->cap = labelled * 2 * views;
    r->x = malloc(sizeof(float) * (size_t)r->cap * r->f);
    r->type = malloc(sizeof(int) * r->cap), r->dom = malloc(sizeof(int) * r->cap);
    r->image = malloc(sizeof(int) * r->cap), r->scored = malloc(sizeof(int) * r->cap);
    r->nsamples = ds->n;
    r->sample_dom = malloc(sizeof(int) * (ds->n ? ds->n : 1));
    if (!r->x || !r->type || !r->dom || !r->image || !r->scored || !r->sample_dom)
        return ls_fail(err, LS_ERR_NOMEM, "out of memory for %d training cells", r->cap);
    ls_status st = LS_OK;
    for (int i = 0; i < ds->n; i++) r->sample_dom[i] = -1;
    for (int i = 0; st == LS_OK && i < ds->n; i++) {
        int t = ds->samples[i].cell_type, d, seen = 0;
        if (t < 1 || t > LS_CELL_TYPES) continue;
        for (int j = 0; j < i && !seen; j++)
            seen = r->sample_dom[j] >= 0 &&
                   !strcmp(ds->samples[j].image_path, ds->samples[i].image_path);
        if (seen) continue;
        if ((d = sample_domain(ds, i, r)) < 0)
            return ls_fail(err, LS_ERR_NOMEM, "out of memory for training cells");
        r->sample_dom[i] = d;
        ls_image img = {0};
        ls_mask gt = {0};
        long snapped = 0;
        st = ls_dataset_load(ds, i, &img, &gt, &snapped, err);
        for (int v = 0; st == LS_OK && v < views; v++) {
            ls_image vimg = {0};
            ls_mask vgt = {0};
            st = ls_dihedral(&img, &gt, v, &vimg, &vgt, err);
            if (st == LS_OK) st = add_view_rows(m, &vimg, &vgt, t, d, i, v, r, err);
            ls_image_free(&vimg);
            ls_mask_free(&vgt);
        }
        ls_image_free(&img);
        ls_mask_free(&gt);
    }
    return st;
}

/* Fits the classifier on the rows with keep[i] set (all when keep is NULL); the domains without
 * kept rows are dropped and the rest renumbered, as fit_domains needs. */
static ls_status fit_rows(ls_model *m, const train_rows *r, const uint8_t *keep, ls_error *err)
{
    size_t rows = r->n ? (size_t)r->n : 1;
    float *x = malloc(sizeof(float) * rows * r->f);
    int *type = malloc(sizeof(int) * rows), *dom = malloc(sizeof(int) * rows);
    int used[MAX_DOMAINS] = {0}, remap[MAX_DOMAINS], nd = 0, n = 0;
    ls_status st = x && type && dom ? LS_OK : ls_fail(err, LS_ERR_NOMEM, "out of memory fitting "
                                                      "the cell classifier");
    for (int i = 0; st == LS_OK && i < r->n; i++) used[r->dom[i]] |= !keep || keep[i];
    for (int d = 0; d < MAX_DOMAINS; d++) remap[d] = used[d] ? nd++ : -1;
    for (int i = 0; st == LS_OK && i < r->n; i++) {
        if (keep && !keep[i]) continue;
        memcpy(x + (size_t)n * r->f, r->x + (size_t)i * r->f, sizeof(float) * r->f);
        type[n] = r->type[i], dom[n++] = remap[r->dom[i]];
    }
    if (st == LS_OK) st = fit_domains(m, x, type, dom, n, err);
    free(x), free(type), free(dom);
    return st;
}

/* Types the held-out images (fold[image] == f) through the inference path (ls_cells_classify,
 * domain by nearest background) from their scored row, into cv; a held-out image without one
 * (no cell found) counts in no_cell, as count --eval counts it wrong. */
static ls_status score_held(const ls_model *m, const train_rows *r, const int *fold, int f,
                            ls_cell_cv *cv, ls_error *err)
{
    ls_cells cells = {0};
    cells.cells = calloc(1, sizeof(ls_cell));
    uint8_t *typed = calloc(r->nsamples ? (size_t)r->nsamples : 1, 1);
    ls_status st = cells.cells && typed ? LS_OK : ls_fail(err, LS_ERR_NOMEM, "out of memory "
                                                           "scoring held-out cells");
    cells.n = 1;
    for (int i = 0; st == LS_OK && i < r->n; i++) {
        if (fold[r->image[i]] != f || !r->scored[i]) continue;
        st = ls_cells_classify(m, r->x + (size_t)i * r->f, 0.0, &cells, err);
        if (st == LS_OK) cv->confusion[r->dom[i]][r->type[i] - 1][cells.cells[0].predicted - 1]++;
        typed[r->image[i]] = 1;
    }
    for (int i = 0; st == LS_OK && i < r->nsamples; i++)
        if (fold[i] == f && !typed[i]) cv->no_cell[r->sample_dom[i]]++;
    free(cells.cells);
    free(typed);
    return st;
}

/* Deals each domain's images out to the folds in a random order: fold[sample] = 0..folds-1 for
 * the images used, -1 for the rest. order: scratch of nsamples ints. */
static void deal_folds(const train_rows *r, int folds, ls_rng *rng, int *fold, int *order)
{
    for (int i = 0; i < r->nsamples; i++) fold[i] = -1;
    for (int d = 0; d < r->ndom; d++) {
        int k = 0;
        for (int i = 0; i < r->nsamples; i++)
            if (r->sample_dom[i] == d) order[k++] = i;
        for (int i = k - 1; i > 0; i--) { /* Fisher-Yates */
            int j = ls_rng_int(rng, i + 1), t = order[i];
            order[i] = order[j], order[j] = t;
        }
        for (int i = 0; i < k; i++) fold[order[i]] = i % folds;
    }
}

/* Repeated k-fold cross-validation grouped by image: each repeat deals every domain's images
 * out to the folds; each fold's images are held out (all their views and both kinds of row),
 * the classifier is fitted on the rest and types the held-out images' predicted cells. Leaves
 * the last fold's classifier in the model. */
static ls_status cross_validate(ls_model *m, const train_rows *r, int folds, int repeats,
                                uint64_t seed, ls_cell_cv *cv, ls_error *err)
{
    memset(cv, 0, sizeof *cv);
    cv->domains = r->ndom;
    for (int d = 0; d < cv->domains; d++)
        snprintf(cv->domain_names[d], sizeof cv->domain_names[d], "%s", r->domain_names[d]);
    size_t ns = r->nsamples ? (size_t)r->nsamples : 1;
    int *fold = malloc(sizeof(int) * ns), *order = malloc(sizeof(int) * ns);
    uint8_t *keep = malloc(r->n ? (size_t)r->n : 1);
    ls_status st = fold && order && keep ? LS_OK : ls_fail(err, LS_ERR_NOMEM, "out of memory "
                                                           "cross-validating");
    ls_rng rng;
    ls_rng_seed(&rng, seed);
    for (int rep = 0; st == LS_OK && rep < repeats; rep++) {
        deal_folds(r, folds, &rng, fold, order);
        for (int f = 0; st == LS_OK && f < folds; f++) {
            for (int i = 0; i < r->n; i++) keep[i] = fold[r->image[i]] != f;
            st = fit_rows(m, r, keep, err);
            if (st != LS_OK) {
                char why[sizeof err->msg];
                snprintf(why, sizeof why, "%s", err->msg);
                st = ls_fail(err, st, "cross-validation, repeat %d, fold %d of %d: %s (try "
                             "fewer folds or another seed)", rep + 1, f + 1, folds, why);
            }
            if (st == LS_OK) st = score_held(m, r, fold, f, cv, err);
        }
    }
    free(fold), free(order), free(keep);
    return st;
}

ls_celltype_options ls_celltype_options_default(void)
{
    ls_celltype_options o = {LS_DIHEDRAL_VIEWS, 0, 4, 1};
    return o;
}

ls_status ls_celltype_train_opts(ls_model *m, const ls_dataset *ds, const ls_celltype_options *opt,
                                 ls_cell_cv *cv, ls_error *err)
{
    train_rows r = {0};
    if (opt->views < 1 || opt->views > LS_DIHEDRAL_VIEWS)
        return ls_fail(err, LS_ERR_ARG, "views must be 1..%d, got %d", LS_DIHEDRAL_VIEWS,
                       opt->views);
    int cv_on = opt->cv_folds != 0;
    if (cv_on && (opt->cv_folds < 2 || opt->cv_folds > 100 || opt->cv_repeats < 1 ||
                  opt->cv_repeats > 100 || !cv))
        return ls_fail(err, LS_ERR_ARG, "cross-validation takes 2..100 folds, 1..100 repeats "
                       "and a result to fill (got %d folds, %d repeats)", opt->cv_folds,
                       opt->cv_repeats);
    ls_status st = collect_rows(m, ds, opt->views, &r, err);
    if (st == LS_OK && cv_on)
        st = cross_validate(m, &r, opt->cv_folds, opt->cv_repeats, opt->cv_seed, cv, err);
    if (st == LS_OK) st = fit_rows(m, &r, NULL, err);
    train_rows_free(&r);
    return st;
}

ls_status ls_celltype_train(ls_model *m, const ls_dataset *ds, ls_error *err)
{
    ls_celltype_options opt = ls_celltype_options_default();
    return ls_celltype_train_opts(m, ds, &opt, NULL, err);
}
