/* Fields with many cells, assembled at test time from test-split images of the real dataset and
 * analysed whole with the shipped model and --window: every placed cell must be found exactly
 * once, nothing else counted, and each cell typed as the same image is typed alone. Also the
 * window geometry (ls_window_around, ls_image_crop) and ls_segment_windows on one window. */
#include "leukoseg.h"
#include "testutil.h"

#include <string.h>
#include <unistd.h>

#define MODEL "models/leukoseg-b0.safetensors"
#define MAX_TILES 9

/* One test image: its pixels, its ground-truth cell's bounding box and its type alone. */
typedef struct {
    ls_image img;
    ls_rect cell; /* bbox of the largest ground-truth cell */
    int type;     /* predicted type of the largest cell when the image is analysed alone */
} tile;

static int largest(const ls_cells *c)
{
    int best = -1;
    for (int i = 0; i < c->n; i++)
        if (best < 0 || c->cells[i].area > c->cells[best].area) best = i;
    return best;
}

static int load_tiles(ls_model *m, const char *folder, int n, tile *t)
{
    ls_error err = {{0}};
    ls_dataset ds = {0};
    ls_cell_params prm = ls_cell_params_default();
    int got = 0;
    CHECK_OK(ls_dataset_add(&ds, folder, LS_SPLIT_TEST, NULL, &err), err);
    for (int i = 0; i < ds.n && got < n; i++) {
        ls_mask gt = {0};
        ls_cells gc = {0}, pc = {0};
        long snapped = 0;
        tile *k = &t[got];
        CHECK_OK(ls_dataset_load(&ds, i, &k->img, &gt, &snapped, &err), err);
        CHECK_OK(ls_cells_find(&gt, &prm, &gc, &err), err);
        CHECK_OK(ls_cells_analyze(m, &k->img, &prm, 0.0, NULL, &pc, NULL, &err), err);
        int g = largest(&gc), p = largest(&pc);
        if (g >= 0 && p >= 0) {
            const ls_cell *c = &gc.cells[g];
            k->cell = (ls_rect){c->bbox_x, c->bbox_y, c->bbox_w, c->bbox_h};
            k->type = pc.cells[p].predicted;
            got++;
        } else {
            ls_image_free(&k->img);
        }
        ls_cells_free(&gc);
        ls_cells_free(&pc);
        ls_mask_free(&gt);
    }
    ls_dataset_free(&ds);
    return got;
}

/* Median colour of the tiles' corner pixels: the plasma between cells. */
static void plasma_colour(const tile *t, int n, uint8_t rgb[3])
{
    for (int ch = 0; ch < 3; ch++) {
        int v[4 * MAX_TILES], k = 0;
        for (int i = 0; i < n; i++) {
            const ls_image *im = &t[i].img;
            int xs[2] = {0, im->w - 1}, ys[2] = {0, im->h - 1};
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 2; b++)
                    v[k++] = im->data[((size_t)ys[a] * im->w + xs[b]) * 3 + ch];
        }
        for (int i = 1; i < k; i++)
            for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
                int s = v[j];
                v[j] = v[j - 1];
                v[j - 1] = s;
            }
        rgb[ch] = (uint8_t)v[k / 2];
    }
}

/* An n x n field. tight = 0: whole images on a grid with `gap` pixels of plasma between them.
 * tight = 1: each image cut to its cell's box plus `gap` pixels (negative: cells cut into and
 * pushed together), packed edge to edge, so neighbouring cells touch. where[i] receives the
 * rectangle of tile i's cell in the field. */
static ls_image make_field(const tile *t, int n, int tight, int gap, ls_rect *where)
{
    ls_rect src[MAX_TILES];
    int cw = 0, ch = 0;
    for (int i = 0; i < n * n; i++) {
        ls_rect r = {0, 0, t[i].img.w, t[i].img.h};
        if (tight) {
            int x0 = t[i].cell.x - gap, y0 = t[i].cell.y - gap;
            int x1 = t[i].cell.x + t[i].cell.w + gap, y1 = t[i].cell.y + t[i].cell.h + gap;
            x0 = x0 < 0 ? 0 : x0, y0 = y0 < 0 ? 0 : y0;
            x1 = x1 > t[i].img.w ? t[i].img.w : x1, y1 = y1 > t[i].img.h ? t[i].img.h : y1;
            r = (ls_rect){x0, y0, x1 - x0, y1 - y0};
        }
        src[i] = r;
        cw = r.w > cw ? r.w : cw;
        ch = r.h > ch ? r.h : ch;
    }
    int space = tight ? 0 : gap, margin = tight ? 40 : 0;
    int pw = cw + space, ph = ch + space;
    ls_image f = {2 * margin + n * pw - space, 2 * margin + n * ph - space, NULL};
    f.data = malloc((size_t)f.w * f.h * 3);
    uint8_t bg[3];
    plasma_colour(t, n * n, bg);
    for (size_t p = 0; p < (size_t)f.w * f.h; p++) memcpy(f.data + p * 3, bg, 3);
    for (int i = 0; i < n * n; i++) {
        /* centre each piece in its slot */
        int ox = margin + (i % n) * pw + (cw - src[i].w) / 2;
        int oy = margin + (i / n) * ph + (ch - src[i].h) / 2;
        for (int y = 0; y < src[i].h; y++)
            memcpy(f.data + ((size_t)(oy + y) * f.w + ox) * 3,
                   t[i].img.data + ((size_t)(src[i].y + y) * t[i].img.w + src[i].x) * 3,
                   (size_t)src[i].w * 3);
        where[i] = (ls_rect){ox + t[i].cell.x - src[i].x, oy + t[i].cell.y - src[i].y,
                             t[i].cell.w, t[i].cell.h};
    }
    return f;
}

/* Each placed cell must hold the centroid of exactly one found cell, every found cell's
 * centroid must lie in a placed cell, and that cell's type must be the tile's own. */
static void check_field(ls_model *m, const tile *t, int n, int tight, int gap, int window,
                        const char *what)
{
    ls_rect where[MAX_TILES];
    ls_image f = make_field(t, n, tight, gap, where);
    ls_cell_params prm = ls_cell_params_default();
    prm.window = window;
    ls_cells c = {0};
    ls_error err = {{0}};
    CHECK_OK(ls_cells_analyze(m, &f, &prm, 0.0, NULL, &c, NULL, &err), err);
    int hits[MAX_TILES] = {0}, typed[MAX_TILES] = {0}, stray = 0;
    for (int k = 0; k < c.n; k++) {
        const ls_cell *cell = &c.cells[k];
        int owner = -1;
        for (int i = 0; i < n * n; i++)
            if (cell->cx >= where[i].x && cell->cx < where[i].x + where[i].w &&
                cell->cy >= where[i].y && cell->cy < where[i].y + where[i].h)
                owner = i;
        if (owner < 0) {
            fprintf(stderr, "%s: found cell %d at (%.0f, %.0f), area %ld, is no placed cell\n",
                    what, k, cell->cx, cell->cy, cell->area);
            stray++;
            continue;
        }
        hits[owner]++;
        typed[owner] = cell->predicted;
    }
    CHECK(stray == 0);
    int right = 0;
    for (int i = 0; i < n * n; i++) {
        if (hits[i] != 1)
            fprintf(stderr, "%s: placed cell %d found %d times\n", what, i, hits[i]);
        CHECK(hits[i] == 1);
        if (hits[i] == 1 && typed[i] != t[i].type)
            fprintf(stderr, "%s: cell %d typed %s, alone %s\n", what, i,
                    ls_cell_type_name(typed[i]), ls_cell_type_name(t[i].type));
        right += hits[i] == 1 && typed[i] == t[i].type;
    }
    printf("  %-36s %dx%d field: %d cells found, %d of %d typed as alone\n", what, f.w, f.h,
           c.n, right, n * n);
    CHECK(right == n * n);
    CHECK(ls_field_check(m, &f, &c, window) == 0);            /* the window fits: no warning */
    CHECK(ls_field_check(m, &f, &c, 0) & LS_FIELD_LARGE);     /* without one: told to set it */
    ls_cells_free(&c);
    ls_image_free(&f);
}

static void test_fields(ls_model *m, const char *folder, int n, int window, const char *name)
{
    tile t[MAX_TILES];
    int got = load_tiles(m, folder, n * n, t);
    CHECK(got == n * n);
    if (got == n * n) {
        char what[96];
        snprintf(what, sizeof what, "%s, apart (gap 24)", name);
        check_field(m, t, n, 0, 24, window, what);
        snprintf(what, sizeof what, "%s, abutting whole images", name);
        check_field(m, t, n, 0, 0, window, what);
        snprintf(what, sizeof what, "%s, cells touching", name);
        check_field(m, t, n, 1, 0, window, what);
    }
    for (int i = 0; i < got; i++) ls_image_free(&t[i].img);
}

/* Windows stay inside the image, are centred where they can be, and cover a short side whole;
 * a crop copies exactly its rectangle; one window covering the image segments as the image. */
static void test_window_geometry(ls_model *m)
{
    ls_image img = {50, 30, malloc(50 * 30 * 3)};
    for (int p = 0; p < 50 * 30 * 3; p++) img.data[p] = (uint8_t)(p * 7 % 253);
    ls_rect r = ls_window_around(&img, 20, 25.0, 15.0);
    CHECK(r.x == 15 && r.y == 5 && r.w == 20 && r.h == 20);
    r = ls_window_around(&img, 20, 2.0, 29.0); /* shifted inside at the corner */
    CHECK(r.x == 0 && r.y == 10 && r.w == 20 && r.h == 20);
    r = ls_window_around(&img, 40, 49.0, 1.0); /* taller than the image: the whole height */
    CHECK(r.x == 10 && r.y == 0 && r.w == 40 && r.h == 30);
    r = ls_window_around(&img, 0, 3.0, 3.0);
    CHECK(r.x == 0 && r.y == 0 && r.w == 50 && r.h == 30);
    ls_image crop = {0};
    ls_error err = {{0}};
    CHECK_OK(ls_image_crop(&img, (ls_rect){7, 4, 10, 6}, &crop, &err), err);
    int same = crop.w == 10 && crop.h == 6;
    for (int y = 0; same && y < 6; y++)
        same = !memcmp(crop.data + (size_t)y * 10 * 3, img.data + ((size_t)(4 + y) * 50 + 7) * 3,
                       30);
    CHECK(same);
    ls_image_free(&crop);
    CHECK(ls_image_crop(&img, (ls_rect){45, 0, 10, 6}, &crop, &err) == LS_ERR_ARG);
    CHECK(strstr(err.msg, "outside the 50x30 image") != NULL);
    ls_mask a = {0}, b = {0};
    CHECK_OK(ls_segment_image(m, &img, &a, NULL, &err), err);
    CHECK_OK(ls_segment_windows(m, &img, 64, &b, NULL, &err), err);
    CHECK(a.data && b.data && !memcmp(a.data, b.data, 50 * 30));
    ls_mask_free(&a);
    ls_mask_free(&b);
    ls_image_free(&img);
}

/* ls_field_check on hand-made cells of a known size (the model gives the 128 px input). */
static void test_field_check(const ls_model *m)
{
    ls_image img = {400, 400, NULL}; /* only the size is read */
    ls_cell cell[3] = {{0}};
    for (int i = 0; i < 3; i++) cell[i].area = 707; /* 30 px across */
    ls_cells c = {400, 400, NULL, cell, 3, 0, 0, 0, 0};
    CHECK(ls_field_check(m, &img, &c, 0) == (LS_FIELD_LARGE | LS_FIELD_SMALL_CELLS));
    CHECK(ls_field_check(m, &img, &c, 120) == 0);                       /* 30 / 120 = 0.25 */
    CHECK(ls_field_check(m, &img, &c, 200) == LS_FIELD_WINDOW_MISMATCH); /* 0.15 */
    CHECK(ls_field_check(m, &img, &c, 30) == LS_FIELD_WINDOW_MISMATCH);  /* 1.0 */
    CHECK(ls_field_check(m, &img, &c, 400) == (LS_FIELD_LARGE | LS_FIELD_SMALL_CELLS));
    img.w = img.h = 300; /* a Dataset 2 image: not large; two cells of 0.1 side are small */
    c.n = 2;
    CHECK(ls_field_check(m, &img, &c, 0) == LS_FIELD_SMALL_CELLS);
    cell[1].border = 1; /* one cell not cut by the border is no field */
    CHECK(ls_field_check(m, &img, &c, 0) == 0);
    CHECK(strstr(ls_field_warning(LS_FIELD_LARGE), "--window W") != NULL);
}

int main(void)
{
    if (access(tu_wbc(""), R_OK) != 0 || access(MODEL, R_OK) != 0) {
        fprintf(stderr, "%s or %s not found (run from the repository root; set LEUKOSEG_DATA)\n",
                tu_wbc(""), MODEL);
        CHECK(!"real dataset and shipped model present");
        TEST_DONE();
    }
    ls_model *m = NULL;
    ls_error err = {{0}};
    CHECK_OK(ls_model_load(MODEL, &m, &err), err);
    if (m) {
        test_window_geometry(m);
        test_field_check(m);
        /* Windows frame one cell as the training images do: the images' own sizes. */
        test_fields(m, tu_wbc("/Dataset 1"), 3, 120, "Dataset 1, 3x3");
        test_fields(m, tu_wbc("/Dataset 2"), 2, 300, "Dataset 2, 2x2");
    }
    ls_model_free(m);
    TEST_DONE();
}
