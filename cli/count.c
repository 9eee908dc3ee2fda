/* leukoseg count (differential leukocyte count, and --eval of the cell-type classifier) and
 * leukoseg train-cells. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *count_help =
    "usage: leukoseg count [--model M] [--json] [--min-area N] [--threshold X] [--split S]\n"
    "                      [--exclude-border] [--window W] [--threads N] PATH...\n"
    "       leukoseg count --eval [--model M] [--data DIR]... [--split S] [--json]\n"
    "\n"
    "Segments each image, splits the white cells into instances and types each one.\n"
    "PATH is an image (BMP, PNG, JPEG) or a folder: a dataset folder (segmentation_WBC,\n"
    "images/ + masks/, Roboflow) gives the images of --split (default all); any other folder\n"
    "gives its .bmp/.png/.jpg/.jpeg files except *_mask, *_levels and *_overlay ones.\n"
    "\n"
    "Cells: foreground = cytoplasm + nucleus with 8-connectivity; touching cells are split by\n"
    "a watershed on the distance transform seeded from nucleus components, regions meeting\n"
    "without a neck merged again (the lobes of one neutrophil); instances under --min-area\n"
    "pixels are dropped as specks and counted; cells touching the image border are flagged\n"
    "(border=1).\n"
    "Types: 1 neutrophil, 2 lymphocyte, 3 monocyte, 4 eosinophil, 5 basophil from the model's\n"
    "cell classifier; a cell whose top probability is below --threshold is 'unidentified'.\n"
    "\n"
    "Output: CSV on stdout, one row per cell (image,cell,type,confidence,area,nucleus_area,\n"
    "nc_ratio,lobes,circularity,bbox_x,bbox_y,bbox_w,bbox_h,cx,cy,border), the summary on\n"
    "stderr; with --json one object {\"cells\": [...], \"summary\": {...}} on stdout. The\n"
    "summary gives the count and percentage of each type (unidentified included) with a 95%\n"
    "Wilson score interval at the counted total, and warns when fewer than 100 cells were\n"
    "counted (a differential count on fewer cells is too imprecise to use).\n"
    "\n"
    "--eval: for each labelled image of the split (default test), the type of the largest\n"
    "predicted cell against the class-label CSV: accuracy, per-type precision and recall and the\n"
    "5x5 confusion matrix (rows truth, columns prediction; the top type is used whatever its\n"
    "confidence, and the unidentified share at the threshold is reported beside it).\n"
    "\n"
    "  --model M         model file with a cell classifier (default: the shipped model)\n"
    "  --json            one JSON object on stdout instead of CSV (with --eval: the metrics)\n"
    "  --split S         train, val, test or all: which images of a dataset folder\n"
    "  --eval            score cell types against the class labels (see above)\n"
    "  --data DIR        with --eval: dataset folder, repeatable (default:\n"
    "                    ../shared/data/segmentation_WBC beside the repository)\n"
    "  --min-area N      smallest cell in pixels (default 100)\n"
    "  --threshold X     confidence below which a cell is unidentified (default: the model's)\n"
    "  --exclude-border  leave cells touching the image border out of the table and summary\n"
    "  --window W        for fields with many cells: segment in half-overlapping W x W pixel\n"
    "                    windows and type each cell in a W x W window centred on it; W should\n"
    "                    frame one white cell as the training images do (about 2.5 cell\n"
    "                    diameters: 120 at Dataset 1's magnification, 300 at Dataset 2's).\n"
    "                    Default: the whole image is one window (single-cell images)\n"
    "  --threads N       OpenMP threads (default: all cores)\n";

static const char *train_cells_help =
    "usage: leukoseg train-cells [--model M] [--data DIR]... [--split S[,S]] [--out FILE]\n"
    "                            [--views V] [--cv K [--cv-repeats R] [--seed N]]\n"
    "                            [--threads N]\n"
    "\n"
    "Fits the cell-type classifier of a segmentation model on the labelled images of the splits\n"
    "(default train,val; the test split stays unseen): for each image the largest predicted cell\n"
    "and the ground-truth cell, their features pooled from the model's encoder stages plus\n"
    "morphology and background-relative colour, normalised per dataset folder, and a\n"
    "class-weighted softmax regression; every image counts in its 8 flips and quarter turns.\n"
    "An image listed twice (the same folder or split given twice) is used once.\n"
    "\n"
    "  --model M         segmentation model (default: the shipped model)\n"
    "  --data DIR        dataset folder with class labels, repeatable (default:\n"
    "                    ../shared/data/segmentation_WBC beside the repository)\n"
    "  --split S[,S]     splits to learn from (default train,val)\n"
    "  --out FILE        where to write the model with the classifier (default: overwrite M,\n"
    "                    atomically; with --cv nothing is written unless --out is given)\n"
    "  --views V         use the first V of the 8 views (1: the image as it is; default 8)\n"
    "  --cv K            first cross-validate the recipe on the same images: K folds per dataset\n"
    "                    folder, grouped by image; each held-out image's largest predicted cell\n"
    "                    is typed as count --eval does (no cell found counts as wrong). Prints\n"
    "                    accuracy and the confusion matrix per folder: the way to compare\n"
    "                    settings without touching the test split\n"
    "  --cv-repeats R    repeat the K folds R times with new random folds (default 4)\n"
    "  --seed N          seed of the folds (default 1)\n"
    "  --threads N       OpenMP threads (default: all cores)\n";

#define WARN_CELLS 100

typedef struct {
    char **v;
    char **real; /* resolved paths, to notice one file listed twice */
    int *label;  /* cell type from the dataset, 0 unknown */
    int n, cap, duplicates;
} image_list;

static int list_grow(image_list *l)
{
    int cap = l->cap ? l->cap * 2 : 64;
    char **v = realloc(l->v, sizeof *v * cap);
    if (v) l->v = v;
    char **real = v ? realloc(l->real, sizeof *real * cap) : NULL;
    if (real) l->real = real;
    int *lab = real ? realloc(l->label, sizeof *lab * cap) : NULL;
    if (!lab) return 0;
    l->label = lab;
    l->cap = cap;
    return 1;
}

/* Adds path unless it names a file already listed (a folder and an image in it, or one folder
 * given twice): a cell must enter the count once. Returns 0 when out of memory. */
static int list_add(image_list *l, const char *path, int label)
{
    char *real = realpath(path, NULL);
    for (int i = 0; real && i < l->n; i++) {
        if (strcmp(l->real[i], real)) continue;
        fprintf(stderr, "leukoseg count: note: %s is %s again; counted once\n", path, l->v[i]);
        l->duplicates++;
        free(real);
        return 1;
    }
    if (l->n == l->cap && !list_grow(l)) {
        free(real);
        return 0;
    }
    l->v[l->n] = strdup(path);
    l->real[l->n] = real ? real : strdup(path);
    if (!l->v[l->n] || !l->real[l->n]) {
        free(l->v[l->n]);
        free(l->real[l->n]);
        return 0;
    }
    l->label[l->n++] = label;
    return 1;
}

static void list_free(image_list *l)
{
    for (int i = 0; i < l->n; i++) free(l->v[i]), free(l->real[i]);
    free(l->v);
    free(l->real);
    free(l->label);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* An image file that is not one of our own outputs or a dataset mask. */
static int is_input_image(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name) return 0;
    if (strcasecmp(dot, ".bmp") && strcasecmp(dot, ".png") && strcasecmp(dot, ".jpg") &&
        strcasecmp(dot, ".jpeg"))
        return 0;
    static const char *skip[] = {"_mask", "_levels", "_overlay"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(skip[i]);
        if ((size_t)(dot - name) >= n && !strncmp(dot - n, skip[i], n)) return 0;
    }
    return 1;
}

static ls_status add_plain_folder(image_list *l, const char *dir, ls_error *err)
{
    DIR *d = opendir(dir);
    if (!d) return ls_fail(err, LS_ERR_IO, "cannot open folder %s", dir);
    int first = l->n;
    struct dirent *e;
    ls_status st = LS_OK;
    while (st == LS_OK && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || !is_input_image(e->d_name)) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (!list_add(l, path, 0)) st = ls_fail(err, LS_ERR_NOMEM, "out of memory");
    }
    closedir(d);
    if (st == LS_OK && l->n == first)
        st = ls_fail(err, LS_ERR_ARG, "%s holds no .bmp, .png, .jpg or .jpeg images", dir);
    if (st == LS_OK) qsort(l->v + first, (size_t)(l->n - first), sizeof *l->v, cmp_str);
    return st;
}

/* A dataset folder gives its samples of the split; any other folder its image files. */
static ls_status add_path(image_list *l, const char *path, ls_split split, int eval,
                          ls_error *err)
{
    struct stat sb;
    if (stat(path, &sb) != 0) return ls_fail(err, LS_ERR_IO, "%s does not exist", path);
    if (!S_ISDIR(sb.st_mode))
        return list_add(l, path, 0) ? LS_OK : ls_fail(err, LS_ERR_NOMEM, "out of memory");
    ls_dataset ds = {0};
    ls_error as_dataset = {{0}};
    ls_status st = LS_OK, read = ls_dataset_add(&ds, path, split, NULL, &as_dataset);
    if (read != LS_OK && eval) {
        /* --eval needs the dataset's labels: its error (a bad label row, say) is the answer,
         * not a plain listing of the folder's images without labels. */
        st = ls_fail(err, read, "%s", as_dataset.msg);
    } else if (read == LS_OK) {
        if (eval) cli_print_notes("count", &ds); /* missing labels matter only to --eval */
        for (int i = 0; i < ds.n && st == LS_OK; i++)
            if (!list_add(l, ds.samples[i].image_path, ds.samples[i].cell_type))
                st = ls_fail(err, LS_ERR_NOMEM, "out of memory");
    } else if ((st = add_plain_folder(l, path, err)) != LS_OK) {
        /* Neither a plain image folder nor a usable dataset: say both, since the dataset reason
         * (a split that cannot place a file, say) is usually the one the user needs. */
        char plain[sizeof err->msg];
        snprintf(plain, sizeof plain, "%s", err->msg);
        st = ls_fail(err, st, "%s; read as a dataset: %s", plain, as_dataset.msg);
    }
    ls_dataset_free(&ds);
    return st;
}

/* Wilson score interval for k successes in n at 95%: unlike the normal approximation it stays
 * inside [0, 1] and is usable for the small counts of rare types. */
static void wilson(long k, long n, double *lo, double *hi)
{
    if (n == 0) {
        *lo = 0;
        *hi = 1;
        return;
    }
    const double z = 1.959963984540054;
    double p = (double)k / n, z2n = z * z / n;
    double centre = (p + z2n / 2) / (1 + z2n);
    double half = z / (1 + z2n) * sqrt(p * (1 - p) / n + z2n / (4.0 * n));
    *lo = fmax(0.0, centre - half);
    *hi = fmin(1.0, centre + half);
}

static void csv_field(const char *s)
{
    if (!strpbrk(s, ",\"\n")) {
        fputs(s, stdout);
        return;
    }
    putchar('"');
    for (; *s; s++) {
        if (*s == '"') putchar('"');
        putchar(*s);
    }
    putchar('"');
}

static cJSON *cell_json(const char *image, int index, const ls_cell *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "image", image);
    cJSON_AddNumberToObject(o, "cell", index);
    cJSON_AddStringToObject(o, "type", ls_cell_type_name(c->type));
    cJSON_AddStringToObject(o, "predicted", ls_cell_type_name(c->predicted));
    cJSON_AddNumberToObject(o, "confidence", c->confidence);
    cJSON_AddNumberToObject(o, "area", (double)c->area);
    cJSON_AddNumberToObject(o, "nucleus_area", (double)c->nucleus_area);
    cJSON_AddNumberToObject(o, "nc_ratio", c->nc_ratio);
    cJSON_AddNumberToObject(o, "lobes", c->lobes);
    cJSON_AddNumberToObject(o, "circularity", c->circularity);
    int bbox[4] = {c->bbox_x, c->bbox_y, c->bbox_w, c->bbox_h};
    cJSON_AddItemToObject(o, "bbox", cJSON_CreateIntArray(bbox, 4));
    double centroid[2] = {c->cx, c->cy};
    cJSON_AddItemToObject(o, "centroid", cJSON_CreateDoubleArray(centroid, 2));
    cJSON_AddBoolToObject(o, "border", c->border);
    cJSON *probs = cJSON_AddObjectToObject(o, "probabilities");
    for (int k = 0; k < LS_CELL_TYPES; k++)
        cJSON_AddNumberToObject(probs, ls_cell_type_name(k + 1), c->probs[k]);
    return o;
}

typedef struct {
    long counts[LS_CELL_TYPES + 1]; /* index 0: unidentified */
    long total, specks, anucleate, border, border_excluded, images;
    long field_images[3];      /* images with each ls_field_check warning (bits 1, 2, 4) */
    char *field_first[3];      /* the first such image */
    long grey_images;  /* images without colour, whose types cannot be trusted */
    cJSON *failed;     /* paths of the images that could not be counted */
} tally;

/* The types are told apart largely by stain colour (granules, cytoplasm), which a greyscale
 * image has lost. */
static int is_greyscale(const ls_image *img)
{
    for (size_t p = 0; p < (size_t)img->w * img->h; p++) {
        const uint8_t *px = img->data + p * 3;
        if (px[0] != px[1] || px[1] != px[2]) return 0;
    }
    return 1;
}

static void grey_warning(char *w, size_t n, long images)
{
    snprintf(w, n, "%ld image(s) are greyscale: the cell types are told apart by stain colour, "
             "so their types are unreliable; count colour images", images);
}

static cJSON *summary_json(const tally *t, double threshold)
{
    cJSON *s = cJSON_CreateObject();
    cJSON_AddNumberToObject(s, "images", (double)t->images);
    cJSON_AddItemReferenceToObject(s, "failed_images", t->failed);
    cJSON_AddNumberToObject(s, "total", (double)t->total);
    cJSON *counts = cJSON_AddObjectToObject(s, "counts");
    cJSON *pct = cJSON_AddObjectToObject(s, "percent");
    cJSON *ci = cJSON_AddObjectToObject(s, "ci95");
    for (int k = 1; k <= LS_CELL_TYPES + 1; k++) {
        int type = k % (LS_CELL_TYPES + 1); /* the five types, then unidentified */
        const char *name = ls_cell_type_name(type);
        double lo, hi;
        wilson(t->counts[type], t->total, &lo, &hi);
        cJSON_AddNumberToObject(counts, name, (double)t->counts[type]);
        if (t->total) cJSON_AddNumberToObject(pct, name, 100.0 * t->counts[type] / t->total);
        else cJSON_AddNullToObject(pct, name);
        double pair[2] = {100.0 * lo, 100.0 * hi};
        cJSON_AddItemToObject(ci, name, cJSON_CreateDoubleArray(pair, 2));
    }
    cJSON_AddStringToObject(s, "ci_method", "Wilson score interval, 95%, at the counted total");
    cJSON_AddNumberToObject(s, "threshold", threshold);
    cJSON_AddNumberToObject(s, "border_cells", (double)t->border);
    cJSON_AddNumberToObject(s, "border_excluded", (double)t->border_excluded);
    cJSON_AddNumberToObject(s, "specks", (double)t->specks);
    cJSON_AddNumberToObject(s, "without_nucleus", (double)t->anucleate);
    cJSON *warnings = cJSON_AddArrayToObject(s, "warnings");
    char w[1024];
    if (t->total < WARN_CELLS) {
        snprintf(w, sizeof w, "only %ld cells counted; a differential count needs at least %d "
                 "for usable percentages", t->total, WARN_CELLS);
        cJSON_AddItemToArray(warnings, cJSON_CreateString(w));
    }
    for (int b = 0; b < 3; b++) {
        if (!t->field_images[b]) continue;
        snprintf(w, sizeof w, "%ld image(s), the first %s: %s", t->field_images[b],
                 t->field_first[b] ? t->field_first[b] : "?", ls_field_warning(1 << b));
        cJSON_AddItemToArray(warnings, cJSON_CreateString(w));
    }
    if (t->grey_images) {
        grey_warning(w, sizeof w, t->grey_images);
        cJSON_AddItemToArray(warnings, cJSON_CreateString(w));
    }
    return s;
}

static void print_summary_text(const tally *t)
{
    fprintf(stderr, "%ld cells in %ld images (%ld on the border", t->total, t->images, t->border);
    if (t->border_excluded)
        fprintf(stderr, ", %ld more on the border left out", t->border_excluded);
    fprintf(stderr, "; dropped: %ld specks, %ld without a nucleus)\n", t->specks, t->anucleate);
    if (cJSON_GetArraySize(t->failed))
        fprintf(stderr, "%d image(s) could not be counted (errors above)\n",
                cJSON_GetArraySize(t->failed));
    for (int k = 1; k <= LS_CELL_TYPES + 1; k++) {
        int type = k % (LS_CELL_TYPES + 1);
        if (!t->total) {
            fprintf(stderr, "  %-13s %6ld       -\n", ls_cell_type_name(type), t->counts[type]);
            continue;
        }
        double lo, hi;
        wilson(t->counts[type], t->total, &lo, &hi);
        fprintf(stderr, "  %-13s %6ld  %5.1f%%  (95%% CI %.1f-%.1f%%)\n", ls_cell_type_name(type),
                t->counts[type], 100.0 * t->counts[type] / t->total, 100 * lo, 100 * hi);
    }
}

typedef struct {
    const char *model;
    ls_cell_params prm;
    double threshold;
    int json, exclude_border;
} count_opts;

/* Says at once which image the window setting may not fit, and tallies it for the summary. */
static void note_field_check(tally *t, const char *path, int flags)
{
    for (int b = 0; b < 3; b++) {
        if (!(flags & (1 << b))) continue;
        fprintf(stderr, "leukoseg count: warning: %s: %s\n", path, ls_field_warning(1 << b));
        if (!t->field_images[b]++) t->field_first[b] = strdup(path);
    }
}

static ls_status count_one(ls_model *m, const count_opts *o, const char *path, tally *t,
                           cJSON *cells_json, ls_error *err)
{
    ls_image img = {0};
    ls_cells cells = {0};
    ls_status st = ls_image_load(path, &img, err);
    if (st == LS_OK) st = ls_cells_analyze(m, &img, &o->prm, o->threshold, NULL, &cells, NULL, err);
    if (st == LS_OK) {
        t->images++;
        t->specks += cells.specks;
        t->anucleate += cells.anucleate;
        note_field_check(t, path, ls_field_check(m, &img, &cells, o->prm.window));
        t->grey_images += cells.n > 0 && is_greyscale(&img);
    } else {
        cJSON_AddItemToArray(t->failed, cJSON_CreateString(path));
    }
    int index = 0;
    for (int i = 0; st == LS_OK && i < cells.n; i++) {
        const ls_cell *c = &cells.cells[i];
        if (o->exclude_border && c->border) {
            t->border_excluded++;
            continue;
        }
        t->counts[c->type]++;
        t->total++;
        t->border += c->border;
        index++;
        if (o->json) {
            cJSON_AddItemToArray(cells_json, cell_json(path, index, c));
            continue;
        }
        csv_field(path);
        printf(",%d,%s,%.4f,%ld,%ld,%.4f,%d,%.4f,%d,%d,%d,%d,%.1f,%.1f,%d\n", index,
               ls_cell_type_name(c->type), c->confidence, c->area, c->nucleus_area, c->nc_ratio,
               c->lobes, c->circularity, c->bbox_x, c->bbox_y, c->bbox_w, c->bbox_h, c->cx, c->cy,
               c->border);
    }
    ls_cells_free(&cells);
    ls_image_free(&img);
    return st;
}

/* ---- --eval ----------------------------------------------------------------------------- */

/* A precision or recall in a 9-wide column; n/a where no cell was predicted or true. */
static void print_ratio(double v)
{
    if (isnan(v)) printf("%9s ", "n/a");
    else printf("%9.4f ", v);
}

static int count_eval(ls_model *m, const count_opts *o, const image_list *l)
{
    long conf[LS_CELL_TYPES][LS_CELL_TYPES] = {{0}}, none = 0, unidentified = 0, n = 0;
    long right_at_threshold = 0;
    int failures = 0;
    for (int i = 0; i < l->n; i++) {
        if (l->label[i] < 1 || l->label[i] > LS_CELL_TYPES) continue;
        ls_image img = {0};
        ls_cells cells = {0};
        ls_error err = {{0}};
        ls_status st = ls_image_load(l->v[i], &img, &err);
        if (st == LS_OK)
            st = ls_cells_analyze(m, &img, &o->prm, o->threshold, NULL, &cells, NULL, &err);
        if (st != LS_OK) {
            cli_error("count", &err);
            failures++;
        } else {
            n++;
            int best = -1;
            for (int k = 0; k < cells.n; k++)
                if (best < 0 || cells.cells[k].area > cells.cells[best].area) best = k;
            if (best < 0) {
                none++;
            } else {
                const ls_cell *c = &cells.cells[best];
                conf[l->label[i] - 1][c->predicted - 1]++;
                unidentified += c->type == 0;
                right_at_threshold += c->type == l->label[i];
            }
        }
        ls_cells_free(&cells);
        ls_image_free(&img);
        progress_line("evaluating %d/%d", i + 1, l->n);
    }
    progress_done();
    if (n == 0) {
        fprintf(stderr, "leukoseg count: error: no labelled images to evaluate (the class-label "
                "CSVs of segmentation_WBC give the labels)\n");
        return 1;
    }
    long right = 0;
    double prec[LS_CELL_TYPES], rec[LS_CELL_TYPES];
    long truth[LS_CELL_TYPES] = {0}, pred[LS_CELL_TYPES] = {0};
    for (int a = 0; a < LS_CELL_TYPES; a++)
        for (int b = 0; b < LS_CELL_TYPES; b++) {
            truth[a] += conf[a][b];
            pred[b] += conf[a][b];
            if (a == b) right += conf[a][b];
        }
    for (int k = 0; k < LS_CELL_TYPES; k++) {
        prec[k] = pred[k] ? (double)conf[k][k] / pred[k] : NAN;
        rec[k] = truth[k] ? (double)conf[k][k] / truth[k] : NAN;
    }
    /* images without any found cell count as wrong */
    double acc = (double)right / n, acc_t = (double)right_at_threshold / n;
    if (o->json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "images", (double)n);
        cJSON_AddNumberToObject(j, "accuracy", acc);
        cJSON_AddNumberToObject(j, "accuracy_at_threshold", acc_t);
        cJSON_AddNumberToObject(j, "unidentified", (double)unidentified);
        cJSON_AddNumberToObject(j, "no_cell_found", (double)none);
        cJSON_AddNumberToObject(j, "threshold", o->threshold);
        cJSON *types = cJSON_AddArrayToObject(j, "types");
        cJSON *matrix = cJSON_AddArrayToObject(j, "confusion");
        for (int k = 0; k < LS_CELL_TYPES; k++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "name", ls_cell_type_name(k + 1));
            cJSON_AddNumberToObject(e, "support", (double)truth[k]);
            if (isnan(prec[k])) cJSON_AddNullToObject(e, "precision");
            else cJSON_AddNumberToObject(e, "precision", prec[k]);
            if (isnan(rec[k])) cJSON_AddNullToObject(e, "recall");
            else cJSON_AddNumberToObject(e, "recall", rec[k]);
            cJSON_AddItemToArray(types, e);
            double row[LS_CELL_TYPES];
            for (int b = 0; b < LS_CELL_TYPES; b++) row[b] = (double)conf[k][b];
            cJSON_AddItemToArray(matrix, cJSON_CreateDoubleArray(row, LS_CELL_TYPES));
        }
        char *s = cJSON_PrintUnformatted(j);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(j);
    } else {
        printf("%ld labelled images: accuracy %.4f (top type), %.4f counting the %ld unidentified "
               "(threshold %.2f) as wrong; %ld without a cell\n", n, acc, acc_t, unidentified,
               o->threshold, none);
        printf("%-12s %9s %9s %8s\n", "type", "precision", "recall", "support");
        for (int k = 0; k < LS_CELL_TYPES; k++) {
            printf("%-12s ", ls_cell_type_name(k + 1));
            print_ratio(prec[k]);
            print_ratio(rec[k]);
            printf("%8ld\n", truth[k]);
        }
        printf("confusion (rows truth, columns prediction):\n%-12s", "");
        for (int b = 0; b < LS_CELL_TYPES; b++) printf(" %6.6s", ls_cell_type_name(b + 1));
        printf("\n");
        for (int a = 0; a < LS_CELL_TYPES; a++) {
            printf("%-12s", ls_cell_type_name(a + 1));
            for (int b = 0; b < LS_CELL_TYPES; b++) printf(" %6ld", conf[a][b]);
            printf("\n");
        }
    }
    return failures ? 1 : 0;
}

/* ---- count ------------------------------------------------------------------------------ */

int cmd_count(int argc, char **argv)
{
    count_opts o = {default_model_path(), ls_cell_params_default(), -1.0, 0, 0};
    const char *data[8];
    int ndata = 0, eval = 0, split_given = 0, npaths = 0;
    ls_split split = LS_SPLIT_ALL;
    ls_error err = {{0}};
    const char **paths = calloc(argc, sizeof *paths);
    if (!paths) return 1;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        int bad = 0;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(count_help, stdout);
            free(paths);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            o.json = 1;
        } else if (!strcmp(argv[i], "--eval")) {
            eval = 1;
        } else if (!strcmp(argv[i], "--exclude-border")) {
            o.exclude_border = 1;
        } else if (opt_value(argc, argv, &i, "--model", &v)) {
            if (!(bad = !v)) o.model = v;
            else cli_usage_error("count", "--model needs a file");
        } else if (opt_value(argc, argv, &i, "--data", &v)) {
            if (!(bad = !v || ndata == 8)) data[ndata++] = v;
            else cli_usage_error("count", "--data needs a folder (max 8)");
        } else if (opt_value(argc, argv, &i, "--split", &v)) {
            if (ls_split_parse(v ? v : "", &split, &err) != LS_OK) {
                free(paths);
                return cli_error("count", &err) + 1; /* a usage error: exit 2 */
            }
            split_given = 1;
        } else if (opt_value(argc, argv, &i, "--min-area", &v)) {
            bad = !parse_int("count", "--min-area", v, 0, 1 << 30, &o.prm.min_area);
        } else if (opt_value(argc, argv, &i, "--window", &v)) {
            bad = !parse_int("count", "--window", v, 16, 1 << 14, &o.prm.window);
        } else if (opt_value(argc, argv, &i, "--threshold", &v)) {
            bad = !parse_float("count", "--threshold", v, 0.0, 1.0, &o.threshold);
        } else if (opt_value(argc, argv, &i, "--threads", &v)) {
            bad = !parse_threads("count", v);
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            bad = 1;
            cli_usage_error("count", "unknown option '%s'", argv[i]);
        } else {
            paths[npaths++] = argv[i];
        }
        if (bad) {
            free(paths);
            return 2;
        }
    }
    if (eval && npaths) {
        free(paths);
        return cli_usage_error("count", "--eval reads --data folders, not paths");
    }
    if (!eval && (ndata || !npaths)) {
        free(paths);
        return cli_usage_error("count", "give images or folders to count (or --eval --data DIR)");
    }
    if (eval && !split_given) split = LS_SPLIT_TEST;
    if (eval && !ndata) data[ndata++] = default_data_path();
    image_list list = {0};
    ls_model *m = NULL;
    ls_status st = cli_load_model(o.model, &m, &err);
    if (st == LS_OK && !ls_model_has_cell_classifier(m))
        st = ls_fail(&err, LS_ERR_ARG, "%s has no cell classifier; add one with: leukoseg "
                     "train-cells --model %s", o.model, o.model);
    for (int i = 0; st == LS_OK && i < (eval ? ndata : npaths); i++)
        st = add_path(&list, eval ? data[i] : paths[i], split, eval, &err);
    free(paths);
    if (st != LS_OK) {
        list_free(&list);
        ls_model_free(m);
        return cli_error("count", &err);
    }
    if (o.threshold < 0) {
        cJSON *meta = cJSON_Parse(ls_model_get_meta(m, "cell_classifier"));
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(meta, "threshold");
        o.threshold = cJSON_IsNumber(t) ? t->valuedouble : 0.5;
        cJSON_Delete(meta);
    }
    int rc = 0;
    if (eval) {
        rc = count_eval(m, &o, &list);
    } else {
        tally t = {.failed = cJSON_CreateArray()};
        cJSON *cells_json = o.json ? cJSON_CreateArray() : NULL;
        if (!o.json)
            printf("image,cell,type,confidence,area,nucleus_area,nc_ratio,lobes,circularity,"
                   "bbox_x,bbox_y,bbox_w,bbox_h,cx,cy,border\n");
        for (int i = 0; i < list.n; i++) {
            ls_error one = {{0}};
            if (count_one(m, &o, list.v[i], &t, cells_json, &one) != LS_OK) {
                cli_error("count", &one);
                rc = 1;
            }
            progress_line("counting %d/%d", i + 1, list.n);
        }
        progress_done();
        if (o.json) {
            cJSON *root = cJSON_CreateObject();
            cJSON_AddItemToObject(root, "cells", cells_json);
            cJSON_AddItemToObject(root, "summary", summary_json(&t, o.threshold));
            char *s = cJSON_PrintUnformatted(root);
            printf("%s\n", s);
            free(s);
            cJSON_Delete(root);
        } else {
            print_summary_text(&t);
        }
        if (t.total < WARN_CELLS)
            fprintf(stderr, "leukoseg count: warning: only %ld cells counted; a differential "
                    "count needs at least %d for usable percentages\n", t.total, WARN_CELLS);
        char w[400];
        if (t.grey_images) {
            grey_warning(w, sizeof w, t.grey_images);
            fprintf(stderr, "leukoseg count: warning: %s\n", w);
        }
        cJSON_Delete(t.failed);
        for (int b = 0; b < 3; b++) free(t.field_first[b]);
    }
    list_free(&list);
    ls_model_free(m);
    return rc;
}

/* ---- train-cells ------------------------------------------------------------------------ */

/* The folder of out must be writable before the fit, not found unwritable after it. */
static ls_status check_output_folder(const char *out, ls_error *err)
{
    char dir[4096];
    const char *slash = strrchr(out, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == out) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - out), out);
    if (access(dir, W_OK | X_OK) != 0)
        return ls_fail(err, LS_ERR_IO, "cannot write %s: its folder %s: %s; create the folder or "
                       "give another --out", out, dir, strerror(errno));
    return LS_OK;
}

static void print_cv(const ls_cell_cv *cv, const ls_celltype_options *opt)
{
    printf("cross-validation: %d folds x %d repeat%s (seed %llu), each image typed once per "
           "repeat\n", opt->cv_folds, opt->cv_repeats, opt->cv_repeats == 1 ? "" : "s",
           (unsigned long long)opt->cv_seed);
    for (int d = 0; d < cv->domains; d++) {
        long total = cv->no_cell[d], correct = 0;
        for (int t = 0; t < LS_CELL_TYPES; t++)
            for (int p = 0; p < LS_CELL_TYPES; p++) {
                total += cv->confusion[d][t][p];
                correct += t == p ? cv->confusion[d][t][p] : 0;
            }
        const char *name = strrchr(cv->domain_names[d], '/');
        printf("%s: accuracy %.4f (%ld of %ld; %d without a cell) in %s\n",
               name ? name + 1 : cv->domain_names[d],
               total ? (double)correct / (double)total : NAN, correct, total, cv->no_cell[d],
               cv->domain_names[d]);
        printf("  rows truth, columns prediction:");
        for (int p = 1; p <= LS_CELL_TYPES; p++) printf(" %.6s", ls_cell_type_name(p));
        printf("\n");
        for (int t = 0; t < LS_CELL_TYPES; t++) {
            printf("  %-10s", ls_cell_type_name(t + 1));
            for (int p = 0; p < LS_CELL_TYPES; p++) printf(" %6d", cv->confusion[d][t][p]);
            printf("\n");
        }
    }
}

int cmd_train_cells(int argc, char **argv)
{
    const char *model_path = default_model_path(), *out = NULL, *data[8];
    const char *splits = "train,val";
    int ndata = 0, seed = 1;
    ls_celltype_options cv_opt = ls_celltype_options_default();
    ls_cell_cv cv;
    ls_error err = {{0}};
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(train_cells_help, stdout);
            return 0;
        } else if (opt_value(argc, argv, &i, "--model", &v)) {
            if (!v) return cli_usage_error("train-cells", "--model needs a file");
            model_path = v;
        } else if (opt_value(argc, argv, &i, "--out", &v)) {
            if (!v) return cli_usage_error("train-cells", "--out needs a file");
            out = v;
        } else if (opt_value(argc, argv, &i, "--data", &v)) {
            if (!v || ndata == 8)
                return cli_usage_error("train-cells", "--data needs a folder (max 8)");
            data[ndata++] = v;
        } else if (opt_value(argc, argv, &i, "--split", &v)) {
            if (!v) return cli_usage_error("train-cells", "--split needs e.g. train or train,val");
            splits = v;
        } else if (opt_value(argc, argv, &i, "--cv", &v)) {
            if (!parse_int("train-cells", "--cv", v, 2, 100, &cv_opt.cv_folds)) return 2;
        } else if (opt_value(argc, argv, &i, "--cv-repeats", &v)) {
            if (!parse_int("train-cells", "--cv-repeats", v, 1, 100, &cv_opt.cv_repeats)) return 2;
        } else if (opt_value(argc, argv, &i, "--views", &v)) {
            if (!parse_int("train-cells", "--views", v, 1, LS_DIHEDRAL_VIEWS, &cv_opt.views))
                return 2;
        } else if (opt_value(argc, argv, &i, "--threads", &v)) {
            if (!parse_threads("train-cells", v)) return 2;
        } else if (opt_value(argc, argv, &i, "--seed", &v)) {
            if (!parse_int("train-cells", "--seed", v, 0, 2147483647, &seed)) return 2;
        } else {
            return cli_usage_error("train-cells", "unknown option '%s'", argv[i]);
        }
    }
    if (!ndata) data[ndata++] = default_data_path();
    if (!out && !cv_opt.cv_folds) out = model_path;
    char list[256];
    if (strlen(splits) >= sizeof list)
        return cli_usage_error("train-cells", "--split is %zu characters long; at most %zu",
                               strlen(splits), sizeof list - 1);
    snprintf(list, sizeof list, "%s", splits);
    ls_model *m = NULL;
    ls_dataset ds = {0};
    ls_status st = out ? check_output_folder(out, &err) : LS_OK;
    if (st == LS_OK) st = cli_load_model(model_path, &m, &err);
    int sees_test = 0;
    /* Each named split of each folder; one folder added twice stays one domain (by folder). */
    for (char *save = NULL, *name = strtok_r(list, ",", &save); st == LS_OK && name;
         name = strtok_r(NULL, ",", &save)) {
        ls_split split;
        st = ls_split_parse(name, &split, &err);
        sees_test |= st == LS_OK && (split == LS_SPLIT_TEST || split == LS_SPLIT_ALL);
        for (int d = 0; st == LS_OK && d < ndata; d++)
            st = ls_dataset_add(&ds, data[d], split, NULL, &err);
    }
    if (st == LS_OK) cli_print_notes("train-cells", &ds);
    if (st == LS_OK && sees_test)
        fprintf(stderr, "leukoseg train-cells: warning: --split %s includes the test split; "
                "count --eval --split test then no longer measures this classifier (fit on "
                "train,val to keep the test split unseen)\n", splits);
    if (st == LS_OK) {
        cv_opt.cv_seed = (uint64_t)seed;
        progress_line("%s the cell classifier on %d images",
                      cv_opt.cv_folds ? "cross-validating and fitting" : "fitting", ds.n);
        st = ls_celltype_train_opts(m, &ds, &cv_opt, &cv, &err);
        progress_done();
        if (st == LS_OK && cv_opt.cv_folds) print_cv(&cv, &cv_opt);
    }
    if (st == LS_OK && out) st = ls_model_save(m, out, &err);
    if (st == LS_OK) {
        cJSON *meta = cJSON_Parse(ls_model_get_meta(m, "cell_classifier"));
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(meta, "train_samples");
        const cJSON *acc = cJSON_GetObjectItemCaseSensitive(meta, "train_accuracy");
        printf("cell classifier fitted on %d rows (the predicted and the ground-truth cell of "
               "each image in %d view%s) of the %s split(s), training accuracy %.4f; %s%s\n",
               cJSON_IsNumber(n) ? n->valueint : 0, cv_opt.views, cv_opt.views == 1 ? "" : "s",
               splits, cJSON_IsNumber(acc) ? acc->valuedouble : NAN,
               out ? "written to " : "not written (give --out FILE to keep it)", out ? out : "");
        cJSON_Delete(meta);
    }
    int rc = st == LS_OK ? 0 : cli_error("train-cells", &err);
    ls_dataset_free(&ds);
    ls_model_free(m);
    return rc;
}
