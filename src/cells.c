/* Cell instances from a class mask and their measurements.
 *
 * Touching cells are split by a marker watershed on the distance transform, seeded from nucleus
 * components. A lobed neutrophil nucleus arrives as several components, so the watershed first
 * over-segments it; its regions meet deep inside the cell, where the distance to the background
 * is close to the cell's inscribed radius, while two touching cells meet at a neck. Regions are
 * therefore merged again when the saddle of the distance transform between them is a large
 * fraction of the smaller region's peak (neck_ratio), which keeps necks apart and lobes together.
 */
#include "leukoseg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

ls_cell_params ls_cell_params_default(void)
{
    ls_cell_params p = {100, 0.7, 1, 0};
    return p;
}

void ls_cells_free(ls_cells *c)
{
    if (!c) return;
    free(c->labels);
    free(c->cells);
    memset(c, 0, sizeof *c);
}

static const int DX8[8] = {1, 1, 0, -1, -1, -1, 0, 1};
static const int DY8[8] = {0, 1, 1, 1, 0, -1, -1, -1};

/* 8-connected components of the pixels where in[p] != 0, labels 1..n in raster order. stack is
 * scratch of w*h ints. Returns the component count. */
static int label_components(const uint8_t *in, int w, int h, int32_t *lab, int32_t *stack)
{
    size_t n = (size_t)w * h;
    memset(lab, 0, n * sizeof *lab);
    int count = 0;
    for (size_t s = 0; s < n; s++) {
        if (!in[s] || lab[s]) continue;
        lab[s] = ++count;
        size_t top = 0;
        stack[top++] = (int32_t)s;
        while (top) {
            int32_t p = stack[--top];
            int x = p % w, y = p / w;
            for (int d = 0; d < 8; d++) {
                int nx = x + DX8[d], ny = y + DY8[d];
                if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
                int32_t q = ny * w + nx;
                if (in[q] && !lab[q]) {
                    lab[q] = count;
                    stack[top++] = q;
                }
            }
        }
    }
    return count;
}

/* 1-D squared Euclidean distance transform (Felzenszwalb & Huttenlocher) of f[0..n) into d:
 * the lower envelope of the parabolas (q - p)^2 + f[p]. v and z are scratch of n and n + 1. */
static void edt_1d(const double *f, int n, double *d, int *v, double *z)
{
    int k = 0;
    v[0] = 0;
    z[0] = -INFINITY;
    z[1] = INFINITY;
    for (int q = 1; q < n; q++) {
        double s;
        for (;;) {
            int p = v[k];
            s = ((f[q] + (double)q * q) - (f[p] + (double)p * p)) / (2.0 * (q - p));
            if (s > z[k]) break;
            k--;
        }
        k++;
        v[k] = q;
        z[k] = s;
        z[k + 1] = INFINITY;
    }
    k = 0;
    for (int q = 0; q < n; q++) {
        while (z[k + 1] < q) k++;
        double dq = q - v[k];
        d[q] = dq * dq + f[v[k]];
    }
}

/* Euclidean distance from each foreground pixel to the nearest background pixel, where the
 * frame around the image is background (a cell cut by the border is thin there). */
static ls_status distance_transform(const uint8_t *fg, int w, int h, float *dt, ls_error *err)
{
    int pw = w + 2, ph = h + 2, m = pw > ph ? pw : ph;
    double *g = malloc(sizeof(double) * (size_t)pw * ph);
    double *f = malloc(sizeof(double) * m), *d = malloc(sizeof(double) * m);
    double *z = malloc(sizeof(double) * (m + 1));
    int *v = malloc(sizeof(int) * m);
    if (!g || !f || !d || !z || !v) {
        free(g), free(f), free(d), free(z), free(v);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory for a %dx%d distance transform", w, h);
    }
    /* Every row and column of the padded grid holds frame pixels at distance 0, so 1e20 acts as
     * infinity and never wins a minimum. */
    for (int y = 0; y < ph; y++)
        for (int x = 0; x < pw; x++) {
            int inside = x > 0 && y > 0 && x <= w && y <= h && fg[(size_t)(y - 1) * w + x - 1];
            g[(size_t)y * pw + x] = inside ? 1e20 : 0.0;
        }
    for (int x = 0; x < pw; x++) {
        for (int y = 0; y < ph; y++) f[y] = g[(size_t)y * pw + x];
        edt_1d(f, ph, d, v, z);
        for (int y = 0; y < ph; y++) g[(size_t)y * pw + x] = d[y];
    }
    for (int y = 0; y < ph; y++) {
        edt_1d(g + (size_t)y * pw, pw, d, v, z);
        memcpy(g + (size_t)y * pw, d, sizeof(double) * pw);
    }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            dt[(size_t)y * w + x] = (float)sqrt(g[(size_t)(y + 1) * pw + x + 1]);
    free(g), free(f), free(d), free(z), free(v);
    return LS_OK;
}

/* ---- flooding --------------------------------------------------------------------------- */

typedef struct {
    float key;     /* distance to background: the deepest frontier pixel floods first */
    uint32_t seq;  /* insertion order breaks ties, so the result is deterministic */
    int32_t pixel, label;
} heap_item;

typedef struct {
    heap_item *v;
    size_t n, cap;
    uint32_t seq;
} heap;

static int heap_before(const heap_item *a, const heap_item *b)
{
    return a->key > b->key || (a->key == b->key && a->seq < b->seq);
}

static int heap_push(heap *hp, float key, int32_t pixel, int32_t label)
{
    if (hp->n == hp->cap) {
        size_t cap = hp->cap ? hp->cap * 2 : 1024;
        heap_item *v = realloc(hp->v, cap * sizeof *v);
        if (!v) return 0;
        hp->v = v;
        hp->cap = cap;
    }
    size_t i = hp->n++;
    heap_item it = {key, hp->seq++, pixel, label};
    while (i > 0 && heap_before(&it, &hp->v[(i - 1) / 2])) {
        hp->v[i] = hp->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    hp->v[i] = it;
    return 1;
}

static heap_item heap_pop(heap *hp)
{
    heap_item top = hp->v[0], last = hp->v[--hp->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= hp->n) break;
        if (c + 1 < hp->n && heap_before(&hp->v[c + 1], &hp->v[c])) c++;
        if (!heap_before(&hp->v[c], &last)) break;
        hp->v[i] = hp->v[c];
        i = c;
    }
    if (hp->n) hp->v[i] = last;
    return top;
}

/* Marker watershed: region[] holds seed labels (0 elsewhere); every foreground pixel joins the
 * region that reaches it first when pixels are taken in order of decreasing distance. */
static ls_status flood(const uint8_t *fg, const float *dt, int w, int h, int32_t *region,
                       ls_error *err)
{
    heap hp = {NULL, 0, 0, 0};
    size_t n = (size_t)w * h;
    int ok = 1;
    for (size_t p = 0; p < n && ok; p++) {
        if (!region[p]) continue;
        int x = (int)(p % w), y = (int)(p / w);
        for (int d = 0; d < 8 && ok; d++) {
            int nx = x + DX8[d], ny = y + DY8[d];
            if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
            int32_t q = ny * w + nx;
            if (fg[q] && !region[q]) ok = heap_push(&hp, dt[q], q, region[p]);
        }
    }
    while (ok && hp.n) {
        heap_item it = heap_pop(&hp);
        if (region[it.pixel]) continue;
        region[it.pixel] = it.label;
        int x = it.pixel % w, y = it.pixel / w;
        for (int d = 0; d < 8 && ok; d++) {
            int nx = x + DX8[d], ny = y + DY8[d];
            if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
            int32_t q = ny * w + nx;
            if (fg[q] && !region[q]) ok = heap_push(&hp, dt[q], q, it.label);
        }
    }
    free(hp.v);
    return ok ? LS_OK : ls_fail(err, LS_ERR_NOMEM, "out of memory in the watershed");
}

/* ---- merging regions -------------------------------------------------------------------- */

typedef struct {
    int32_t a, b;  /* a < b */
    float saddle;  /* widest contact: max over touching pixel pairs of the smaller distance */
} edge;

static int cmp_edge(const void *pa, const void *pb)
{
    const edge *a = pa, *b = pb;
    if (a->a != b->a) return a->a < b->a ? -1 : 1;
    if (a->b != b->b) return a->b < b->b ? -1 : 1;
    return (a->saddle < b->saddle) - (a->saddle > b->saddle);
}

static int32_t find_root(int32_t *parent, int32_t x)
{
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

/* Region adjacency with one edge per pair (its widest contact). */
static ls_status region_edges(const int32_t *region, const float *dt, int w, int h, edge **out,
                              size_t *nout, ls_error *err)
{
    size_t n = 0, cap = 0;
    edge *e = NULL;
    /* Half of the 8 directions visits every unordered neighbour pair once. */
    static const int hx[4] = {1, 0, 1, -1}, hy[4] = {0, 1, 1, 1};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int32_t a = region[(size_t)y * w + x];
            if (!a) continue;
            for (int d = 0; d < 4; d++) {
                int nx = x + hx[d], ny = y + hy[d];
                if (nx < 0 || ny >= h || nx >= w) continue;
                int32_t b = region[(size_t)ny * w + nx];
                if (!b || b == a) continue;
                if (n == cap) {
                    cap = cap ? cap * 2 : 256;
                    edge *ne = realloc(e, cap * sizeof *e);
                    if (!ne) {
                        free(e);
                        return ls_fail(err, LS_ERR_NOMEM, "out of memory for region contacts");
                    }
                    e = ne;
                }
                float s = fminf(dt[(size_t)y * w + x], dt[(size_t)ny * w + nx]);
                e[n++] = (edge){a < b ? a : b, a < b ? b : a, s};
            }
        }
    if (n) qsort(e, n, sizeof *e, cmp_edge);
    size_t u = 0;
    for (size_t i = 0; i < n; i++) /* sorted with the widest contact first within a pair */
        if (u == 0 || e[u - 1].a != e[i].a || e[u - 1].b != e[i].b) e[u++] = e[i];
    *out = e;
    *nout = u;
    return LS_OK;
}

/* Merges neck-free neighbours (saddle >= ratio x smaller peak), best first, then regions below
 * min_area into the neighbour with the widest contact. parent is the union-find forest. */
static void merge_regions(const edge *e, size_t ne, int32_t *parent, float *peak, long *area,
                          double ratio, long min_area)
{
    for (;;) {
        double best = -1.0;
        int32_t ba = 0, bb = 0;
        for (size_t i = 0; i < ne; i++) {
            int32_t a = find_root(parent, e[i].a), b = find_root(parent, e[i].b);
            if (a == b) continue;
            float lo = fminf(peak[a], peak[b]);
            double r = lo > 0 ? e[i].saddle / lo : 0.0;
            if (r > best) best = r, ba = a, bb = b;
        }
        if (best < ratio) break;
        parent[bb] = ba;
        peak[ba] = fmaxf(peak[ba], peak[bb]);
        area[ba] += area[bb];
    }
    for (;;) {
        float best = -1.0f;
        int32_t small = 0, into = 0;
        for (size_t i = 0; i < ne; i++) {
            int32_t a = find_root(parent, e[i].a), b = find_root(parent, e[i].b);
            if (a == b) continue;
            int32_t s = area[a] <= area[b] ? a : b;
            if (area[s] >= min_area || e[i].saddle <= best) continue;
            best = e[i].saddle, small = s, into = s == a ? b : a;
        }
        if (best < 0) break;
        parent[small] = into;
        peak[into] = fmaxf(peak[into], peak[small]);
        area[into] += area[small];
    }
}

/* ---- measurements ----------------------------------------------------------------------- */

/* Crofton perimeter: crossings of the boundary with the lines of 4 directions, weighted by the
 * line spacing (1 for rows and columns, 1/sqrt 2 for diagonals), times pi/8. */
static double crofton_perimeter(const int32_t *labels, int w, int h, int32_t id, const ls_cell *c)
{
    long straight = 0, diagonal = 0;
    for (int y = c->bbox_y; y < c->bbox_y + c->bbox_h; y++)
        for (int x = c->bbox_x; x < c->bbox_x + c->bbox_w; x++) {
            if (labels[(size_t)y * w + x] != id) continue;
            for (int d = 0; d < 8; d++) {
                int nx = x + DX8[d], ny = y + DY8[d];
                if (nx >= 0 && ny >= 0 && nx < w && ny < h && labels[(size_t)ny * w + nx] == id)
                    continue;
                if (d % 2) diagonal++;
                else straight++;
            }
        }
    return M_PI / 8.0 * ((double)straight + (double)diagonal / sqrt(2.0));
}

/* Square min (erode) or max (dilate) filter of half-width r over a bw x bh binary map, done as
 * a row pass then a column pass; outside counts as 0. */
static void square_filter(uint8_t *m, uint8_t *tmp, int bw, int bh, int r, int dilate)
{
    for (int pass = 0; pass < 2; pass++) {
        const uint8_t *src = pass ? tmp : m;
        uint8_t *dst = pass ? m : tmp;
        for (int y = 0; y < bh; y++)
            for (int x = 0; x < bw; x++) {
                int v = !dilate;
                for (int k = -r; k <= r; k++) {
                    int sx = pass ? x : x + k, sy = pass ? y + k : y;
                    int s = sx >= 0 && sy >= 0 && sx < bw && sy < bh ? src[sy * bw + sx] : 0;
                    v = dilate ? (v | s) : (v & s);
                }
                dst[y * bw + x] = (uint8_t)v;
            }
    }
}

/* Lobes: 8-connected components of the cell's nucleus after an opening that cuts thin
 * chromatin bridges; a nucleus the opening removes entirely still counts as one lobe. */
static ls_status count_lobes(const ls_mask *mask, const int32_t *labels, int32_t id, ls_cell *c,
                             int r, ls_error *err)
{
    if (!c->nucleus_area) {
        c->lobes = 0;
        return LS_OK;
    }
    int pad = r + 1, bw = c->bbox_w + 2 * pad, bh = c->bbox_h + 2 * pad;
    size_t n = (size_t)bw * bh;
    uint8_t *m = calloc(n, 1), *tmp = malloc(n);
    int32_t *lab = malloc(n * sizeof *lab), *stack = malloc(n * sizeof *stack);
    if (!m || !tmp || !lab || !stack) {
        free(m), free(tmp), free(lab), free(stack);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory counting nucleus lobes");
    }
    for (int y = 0; y < c->bbox_h; y++)
        for (int x = 0; x < c->bbox_w; x++) {
            size_t p = (size_t)(c->bbox_y + y) * mask->w + c->bbox_x + x;
            m[(y + pad) * bw + x + pad] = labels[p] == id && mask->data[p] == LS_NUCLEUS_CLASS;
        }
    if (r > 0) {
        square_filter(m, tmp, bw, bh, r, 0);
        square_filter(m, tmp, bw, bh, r, 1);
    }
    int k = label_components(m, bw, bh, lab, stack);
    c->lobes = k > 0 ? k : 1;
    free(m), free(tmp), free(lab), free(stack);
    return LS_OK;
}

static ls_status measure(const ls_mask *mask, const ls_cell_params *prm, ls_cells *out,
                         ls_error *err)
{
    int w = mask->w, h = mask->h;
    double *sx = calloc((size_t)out->n + 1, sizeof *sx);
    double *sy = calloc((size_t)out->n + 1, sizeof *sy);
    if (!sx || !sy) {
        free(sx), free(sy);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory measuring cells");
    }
    for (int i = 0; i < out->n; i++) {
        out->cells[i].bbox_x = w;
        out->cells[i].bbox_y = h;
    }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int32_t id = out->labels[(size_t)y * w + x];
            if (!id) continue;
            ls_cell *c = &out->cells[id - 1];
            c->area++;
            c->nucleus_area += mask->data[(size_t)y * w + x] == LS_NUCLEUS_CLASS;
            sx[id] += x;
            sy[id] += y;
            if (x < c->bbox_x) c->bbox_x = x;
            if (y < c->bbox_y) c->bbox_y = y;
            /* bbox_w/h hold the far corner until the loop ends */
            if (x > c->bbox_w) c->bbox_w = x;
            if (y > c->bbox_h) c->bbox_h = y;
            if (x == 0 || y == 0 || x == w - 1 || y == h - 1) c->border = 1;
        }
    ls_status st = LS_OK;
    for (int i = 0; i < out->n && st == LS_OK; i++) {
        ls_cell *c = &out->cells[i];
        c->bbox_w = c->bbox_w - c->bbox_x + 1;
        c->bbox_h = c->bbox_h - c->bbox_y + 1;
        c->cx = sx[i + 1] / (double)c->area;
        c->cy = sy[i + 1] / (double)c->area;
        long cyto = c->area - c->nucleus_area;
        c->nc_ratio = (double)c->nucleus_area / (double)(cyto > 0 ? cyto : 1);
        c->perimeter = crofton_perimeter(out->labels, w, h, i + 1, c);
        c->circularity = 4.0 * M_PI * (double)c->area / (c->perimeter * c->perimeter);
        st = count_lobes(mask, out->labels, i + 1, c, prm->lobe_open, err);
    }
    free(sx), free(sy);
    return st;
}

/* ---- ls_cells_find ---------------------------------------------------------------------- */

/* Seeds: nucleus components, plus one seed at the deepest pixel of each foreground component
 * that holds no nucleus. Returns the seed count, or -1 when out of memory. */
static int32_t place_seeds(const ls_mask *mask, const uint8_t *fg, const float *dt,
                           int32_t *region, int32_t *scratch)
{
    size_t n = (size_t)mask->w * mask->h;
    uint8_t *nuc = calloc(n ? n : 1, 1);
    int32_t *comp = malloc(n * sizeof *comp);
    if (!nuc || !comp) {
        free(nuc), free(comp);
        return -1;
    }
    for (size_t p = 0; p < n; p++) nuc[p] = fg[p] && mask->data[p] == LS_NUCLEUS_CLASS;
    int32_t seeds = label_components(nuc, mask->w, mask->h, region, scratch);
    int ncomp = label_components(fg, mask->w, mask->h, comp, scratch);
    /* scratch now maps component -> its deepest pixel (or -1 when it has a nucleus) */
    for (int c = 0; c <= ncomp; c++) scratch[c] = -2;
    for (size_t p = 0; p < n; p++) {
        int32_t c = comp[p];
        if (!c || scratch[c] == -1) continue;
        if (region[p]) scratch[c] = -1;
        else if (scratch[c] == -2 || dt[p] > dt[scratch[c]]) scratch[c] = (int32_t)p;
    }
    for (int c = 1; c <= ncomp; c++)
        if (scratch[c] >= 0) region[scratch[c]] = ++seeds;
    free(nuc), free(comp);
    return seeds;
}

ls_status ls_cells_find(const ls_mask *mask, const ls_cell_params *prm, ls_cells *out,
                        ls_error *err)
{
    memset(out, 0, sizeof *out);
    if (!mask || !mask->data || mask->w <= 0 || mask->h <= 0)
        return ls_fail(err, LS_ERR_ARG, "ls_cells_find: empty mask");
    if (prm->min_area < 0 || prm->lobe_open < 0 || prm->lobe_open > 32 || !(prm->neck_ratio >= 0))
        return ls_fail(err, LS_ERR_ARG, "cell parameters out of range: min_area %d (>= 0), "
                       "lobe_open %d (0..32), neck_ratio %g (>= 0)", prm->min_area,
                       prm->lobe_open, prm->neck_ratio);
    int w = mask->w, h = mask->h;
    size_t n = (size_t)w * h;
    if (n > (size_t)INT32_MAX / 2)
        return ls_fail(err, LS_ERR_NOMEM, "a %dx%d mask is too large for cell labelling", w, h);
    uint8_t *fg = malloc(n);
    float *dt = malloc(n * sizeof *dt);
    int32_t *region = malloc(n * sizeof *region), *scratch = malloc((n + 1) * sizeof *scratch);
    int32_t *parent = NULL, *final_id = NULL;
    float *peak = NULL;
    long *area = NULL;
    edge *edges = NULL;
    size_t nedges = 0;
    ls_status st = LS_OK;
    if (!fg || !dt || !region || !scratch)
        st = ls_fail(err, LS_ERR_NOMEM, "out of memory finding cells in a %dx%d mask", w, h);
    if (st == LS_OK) {
        for (size_t p = 0; p < n; p++) fg[p] = mask->data[p] >= 1 && mask->data[p] != LS_IGNORE;
        st = distance_transform(fg, w, h, dt, err);
    }
    int32_t nreg = 0;
    if (st == LS_OK && (nreg = place_seeds(mask, fg, dt, region, scratch)) < 0)
        st = ls_fail(err, LS_ERR_NOMEM, "out of memory placing watershed seeds");
    if (st == LS_OK) st = flood(fg, dt, w, h, region, err);
    if (st == LS_OK) st = region_edges(region, dt, w, h, &edges, &nedges, err);
    if (st == LS_OK) {
        parent = malloc(((size_t)nreg + 1) * sizeof *parent);
        final_id = calloc((size_t)nreg + 1, sizeof *final_id);
        peak = calloc((size_t)nreg + 1, sizeof *peak);
        area = calloc((size_t)nreg + 1, sizeof *area);
        if (!parent || !final_id || !peak || !area)
            st = ls_fail(err, LS_ERR_NOMEM, "out of memory merging %d regions", (int)nreg);
    }
    if (st == LS_OK) {
        for (int32_t r = 0; r <= nreg; r++) parent[r] = r;
        for (size_t p = 0; p < n; p++) {
            area[region[p]]++;
            if (dt[p] > peak[region[p]]) peak[region[p]] = dt[p];
        }
        merge_regions(edges, nedges, parent, peak, area, prm->neck_ratio, prm->min_area);
        /* Every white cell has a nucleus: a region without one is a red cell or debris taken
         * for cytoplasm, or a sliver of a cell cut by the border. Count nucleus pixels per
         * merged region (peak is free now and holds them). */
        for (int32_t r = 0; r <= nreg; r++) peak[r] = 0.0f;
        for (size_t p = 0; p < n; p++)
            if (region[p] && mask->data[p] == LS_NUCLEUS_CLASS)
                peak[find_root(parent, region[p])] += 1.0f;
        /* Number surviving roots in raster order of their first pixel; specks and regions
         * without nucleus get -1. */
        for (size_t p = 0; p < n; p++) {
            if (!region[p]) continue;
            int32_t r = find_root(parent, region[p]);
            if (!final_id[r]) {
                if (area[r] < prm->min_area) {
                    final_id[r] = -1;
                    out->specks++;
                    out->speck_pixels += area[r];
                } else if (peak[r] == 0.0f) {
                    final_id[r] = -1;
                    out->anucleate++;
                    out->anucleate_pixels += area[r];
                } else {
                    final_id[r] = ++out->n;
                }
            }
            region[p] = final_id[r] > 0 ? final_id[r] : 0;
        }
        out->w = w;
        out->h = h;
        out->labels = region;
        region = NULL;
        out->cells = calloc((size_t)out->n + 1, sizeof *out->cells);
        if (!out->cells) st = ls_fail(err, LS_ERR_NOMEM, "out of memory for %d cells", out->n);
    }
    if (st == LS_OK) st = measure(mask, prm, out, err);
    free(fg), free(dt), free(region), free(scratch), free(parent), free(final_id), free(peak);
    free(area), free(edges);
    if (st != LS_OK) ls_cells_free(out);
    return st;
}

ls_status ls_cells_merge(ls_cells *cells, const ls_mask *mask, const ls_cell_params *prm,
                         const int *into, ls_error *err)
{
    int n = cells->n;
    for (int i = 0; i < n; i++)
        if (into[i] < 0 || into[i] >= n || into[into[i]] != into[i])
            return ls_fail(err, LS_ERR_ARG, "ls_cells_merge: cell %d goes into %d, which is not "
                           "a kept cell of the %d", i, into[i], n);
    int32_t *new_id = calloc((size_t)n + 1, sizeof *new_id);
    if (!new_id) return ls_fail(err, LS_ERR_NOMEM, "out of memory merging %d cells", n);
    /* Renumber the kept cells in raster order of their first pixel, as ls_cells_find does. */
    int kept = 0;
    size_t npix = (size_t)cells->w * cells->h;
    for (size_t p = 0; p < npix; p++) {
        int32_t id = cells->labels[p];
        if (!id) continue;
        int32_t root = into[id - 1] + 1;
        if (!new_id[root]) new_id[root] = ++kept;
        cells->labels[p] = new_id[root];
    }
    free(new_id);
    ls_cell *fresh = calloc((size_t)kept + 1, sizeof *fresh);
    if (!fresh) return ls_fail(err, LS_ERR_NOMEM, "out of memory for %d cells", kept);
    free(cells->cells);
    cells->cells = fresh;
    cells->n = kept;
    return measure(mask, prm, cells, err);
}
