/* The data behind the results pages, shared by `leukoseg serve` (kept in memory) and
 * `leukoseg report` (written to a folder that opens with no server):
 *   data/model.js     architecture with shapes and parameter counts, training history
 *   data/results.js   test-split metrics per dataset folder beside published numbers, gallery
 *   data/gallery/NAME.png  image | truth | prediction | error map, one strip per test image
 * The data files are JavaScript (window.LS_... = {json}) rather than JSON because pages opened
 * from file:// may load scripts but may not fetch() files next to them. */
#define LS_WEB_WITH_MODEL
#include "web.h"

#include "model.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const uint8_t web_class_colors[8][3] = {{0, 0, 0},     {255, 200, 0}, {200, 0, 255},
                                        {0, 200, 255}, {0, 255, 0},   {255, 0, 0},
                                        {0, 0, 255},   {255, 255, 255}};


/* ------------------------------------------------------------------------------------------ */
/* Files                                                                                       */
/* ------------------------------------------------------------------------------------------ */

const ls_web_file *web_find_page(const char *name)
{
    for (int i = 0; i < ls_web_nfiles; i++)
        if (!strcmp(ls_web_files[i].name, name)) return &ls_web_files[i];
    return NULL;
}

const web_blob *web_bundle_find(const web_bundle *b, const char *name)
{
    for (int i = 0; i < b->n; i++)
        if (!strcmp(b->v[i].name, name)) return &b->v[i];
    return NULL;
}

void web_bundle_free(web_bundle *b)
{
    for (int i = 0; i < b->n; i++) free(b->v[i].data);
    free(b->v);
    memset(b, 0, sizeof *b);
}

/* Takes ownership of data (freed on failure too). */
static ls_status bundle_add(web_bundle *b, const char *name, const char *type, uint8_t *data,
                            size_t len, ls_error *err)
{
    if (b->n == b->cap) {
        int cap = b->cap ? b->cap * 2 : 32;
        web_blob *v = realloc(b->v, sizeof *v * cap);
        if (!v) {
            free(data);
            return ls_fail(err, LS_ERR_NOMEM, "out of memory building the web data");
        }
        b->v = v;
        b->cap = cap;
    }
    web_blob *e = &b->v[b->n++];
    snprintf(e->name, sizeof e->name, "%s", name);
    e->type = type;
    e->data = data;
    e->len = len;
    return LS_OK;
}

/* data/NAME.js holding "window.VAR = <json>;". Deletes json. */
static ls_status bundle_add_js(web_bundle *b, const char *name, const char *var, cJSON *json,
                               ls_error *err)
{
    char *s = cJSON_PrintUnformatted(json);
    cJSON_Delete(json);
    size_t cap = (s ? strlen(s) : 0) + strlen(var) + 32;
    char *js = s ? malloc(cap) : NULL;
    if (!js) {
        free(s);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory building %s", name);
    }
    int n = snprintf(js, cap, "window.%s = %s;\n", var, s);
    free(s);
    return bundle_add(b, name, "text/javascript; charset=utf-8", (uint8_t *)js, (size_t)n, err);
}

/* ------------------------------------------------------------------------------------------ */
/* Images                                                                                      */
/* ------------------------------------------------------------------------------------------ */

uint8_t *web_color_mask(const ls_mask *mask, const ls_image *img, float alpha)
{
    size_t n = (size_t)mask->w * mask->h;
    uint8_t *out = malloc(n * 3);
    if (!out) return NULL;
    for (size_t p = 0; p < n; p++) {
        int c = mask->data[p];
        for (int ch = 0; ch < 3; ch++) {
            float col = c == LS_IGNORE ? 128.0f : web_class_colors[c & 7][ch];
            float v = col;
            /* Background stays the image itself in an overlay, as in `leukoseg segment`. */
            if (img) v = c == 0 ? img->data[p * 3 + ch]
                                : (1 - alpha) * img->data[p * 3 + ch] + alpha * col;
            out[p * 3 + ch] = (uint8_t)(v + 0.5f);
        }
    }
    return out;
}

char *web_png_data_url(const uint8_t *rgb, int w, int h, ls_error *err)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const char prefix[] = "data:image/png;base64,";
    uint8_t *png = NULL;
    size_t len = 0;
    if (ls_png_encode_rgb(rgb, w, h, &png, &len, err) != LS_OK) return NULL;
    char *out = malloc(sizeof prefix + (len + 2) / 3 * 4 + 1);
    if (!out) {
        free(png);
        ls_fail(err, LS_ERR_NOMEM, "out of memory encoding a PNG");
        return NULL;
    }
    char *o = out + sizeof prefix - 1;
    memcpy(out, prefix, sizeof prefix - 1);
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)png[i] << 16;
        if (i + 1 < len) v |= (uint32_t)png[i + 1] << 8;
        if (i + 2 < len) v |= png[i + 2];
        *o++ = b64[v >> 18 & 63];
        *o++ = b64[v >> 12 & 63];
        *o++ = i + 1 < len ? b64[v >> 6 & 63] : '=';
        *o++ = i + 2 < len ? b64[v & 63] : '=';
    }
    *o = '\0';
    free(png);
    return out;
}

void web_class_name(const ls_model *m, int c, char *out, size_t cap)
{
    const char *meta = ls_model_get_meta(m, "class_names");
    cJSON *a = meta ? cJSON_Parse(meta) : NULL;
    const cJSON *e = cJSON_IsArray(a) ? cJSON_GetArrayItem(a, c) : NULL;
    if (cJSON_IsString(e)) snprintf(out, cap, "%s", e->valuestring);
    else snprintf(out, cap, "class%d", c);
    cJSON_Delete(a);
}

/* ------------------------------------------------------------------------------------------ */
/* Cells                                                                                       */
/* ------------------------------------------------------------------------------------------ */

ls_status web_segment_cells(ls_model *model, const ls_image *img, int window, ls_mask *mask,
                            ls_cells *cells, ls_error *err)
{
    memset(cells, 0, sizeof *cells);
    if (ls_model_config(model)->num_labels <= LS_NUCLEUS_CLASS)
        return ls_segment_windows(model, img, window, mask, NULL, err);
    ls_cell_params prm = ls_cell_params_default();
    prm.window = window;
    /* threshold -1: the one stored with the model's classifier */
    return ls_cells_analyze(model, img, &prm, -1.0, mask, cells, NULL, err);
}

void web_add_cells(cJSON *obj, const ls_model *model, const ls_cells *cells)
{
    cJSON *a = cJSON_AddArrayToObject(obj, "cells");
    int counts[LS_CELL_TYPES + 1] = {0};
    for (int i = 0; cells && i < cells->n; i++) {
        const ls_cell *c = &cells->cells[i];
        int t = c->type >= 0 && c->type <= LS_CELL_TYPES ? c->type : 0;
        counts[t]++;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "id", i + 1);
        cJSON_AddStringToObject(e, "type", ls_cell_type_name(t));
        cJSON_AddStringToObject(e, "predicted", ls_cell_type_name(c->predicted));
        cJSON_AddNumberToObject(e, "confidence", c->confidence);
        cJSON_AddNumberToObject(e, "area", (double)c->area);
        cJSON_AddNumberToObject(e, "nucleus_area", (double)c->nucleus_area);
        cJSON_AddNumberToObject(e, "nc_ratio", c->nc_ratio);
        cJSON_AddNumberToObject(e, "lobes", c->lobes);
        cJSON_AddNumberToObject(e, "circularity", c->circularity);
        cJSON *bb = cJSON_AddObjectToObject(e, "bbox");
        cJSON_AddNumberToObject(bb, "x", c->bbox_x);
        cJSON_AddNumberToObject(bb, "y", c->bbox_y);
        cJSON_AddNumberToObject(bb, "w", c->bbox_w);
        cJSON_AddNumberToObject(bb, "h", c->bbox_h);
        cJSON_AddBoolToObject(e, "border", c->border);
        if (c->predicted) {
            cJSON *p = cJSON_AddObjectToObject(e, "probs");
            for (int k = 0; k < LS_CELL_TYPES; k++)
                cJSON_AddNumberToObject(p, ls_cell_type_name(k + 1), c->probs[k]);
        }
        cJSON_AddItemToArray(a, e);
    }
    cJSON *diff = cJSON_AddObjectToObject(obj, "differential");
    for (int t = 1; t <= LS_CELL_TYPES; t++)
        cJSON_AddNumberToObject(diff, ls_cell_type_name(t), counts[t]);
    cJSON_AddNumberToObject(diff, ls_cell_type_name(0), counts[0]); /* as count's summary */
    cJSON_AddBoolToObject(obj, "cells_classified", ls_model_has_cell_classifier(model));
}

/* ------------------------------------------------------------------------------------------ */
/* data/model.js                                                                               */
/* ------------------------------------------------------------------------------------------ */

/* Token grid of a stage from its input grid: conv with padding patch/2 (HF OverlapPatchEmbed). */
static int conv_out(int in, int patch, int stride)
{
    return (in + 2 * (patch / 2) - patch) / stride + 1;
}

static cJSON *parsed_meta(const ls_model *m, const char *key)
{
    const char *v = ls_model_get_meta(m, key);
    cJSON *j = v ? cJSON_Parse(v) : NULL;
    return j ? j : cJSON_CreateNull();
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static cJSON *model_json(ls_model *model, const char *model_path, int live)
{
    const ls_config *c = ls_model_config(model);
    ls_preproc pp;
    ls_model_preproc(model, &pp);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "live", live);
    /* Only the base name: the page need not learn the server's folders. */
    cJSON_AddStringToObject(o, "file", base_name(model_path));
    char variant[32];
    snprintf(variant, sizeof variant, "SegFormer-%s", c->variant);
    cJSON_AddStringToObject(o, "variant", variant);
    cJSON_AddNumberToObject(o, "parameters", (double)ls_model_num_weights(model));
    cJSON *classes = cJSON_AddArrayToObject(o, "classes");
    for (int k = 0; k < c->num_labels; k++) {
        char name[64], hex[8];
        web_class_name(model, k, name, sizeof name);
        snprintf(hex, sizeof hex, "#%02x%02x%02x", web_class_colors[k & 7][0],
                 web_class_colors[k & 7][1], web_class_colors[k & 7][2]);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", name);
        cJSON_AddStringToObject(e, "color", hex);
        cJSON_AddItemToArray(classes, e);
    }
    cJSON *in = cJSON_AddObjectToObject(o, "input");
    cJSON_AddNumberToObject(in, "width", pp.width);
    cJSON_AddNumberToObject(in, "height", pp.height);
    cJSON_AddItemToObject(in, "mean", cJSON_CreateFloatArray(pp.mean, 3));
    cJSON_AddItemToObject(in, "std", cJSON_CreateFloatArray(pp.std, 3));

    /* Parameters per stage from the HF tensor names. */
    double stage_params[4] = {0}, head_params = 0;
    for (int i = 0; i < ls_model_num_params(model); i++) {
        const ls_param *p = ls_model_param(model, i);
        int s = -1;
        if (sscanf(p->name, "segformer.encoder.patch_embeddings.%d.", &s) == 1 ||
            sscanf(p->name, "segformer.encoder.block.%d.", &s) == 1 ||
            sscanf(p->name, "segformer.encoder.layer_norm.%d.", &s) == 1) {
            if (s >= 0 && s < 4) stage_params[s] += (double)p->numel;
        } else if (!strncmp(p->name, "decode_head.", 12)) {
            head_params += (double)p->numel;
        }
    }
    cJSON *stages = cJSON_AddArrayToObject(o, "stages");
    int h = pp.height, w = pp.width, cin = c->num_channels;
    for (int s = 0; s < 4; s++) {
        h = conv_out(h, c->patch[s], c->stride[s]);
        w = conv_out(w, c->patch[s], c->stride[s]);
        int hr = c->sr[s] > 1 ? h / c->sr[s] : h, wr = c->sr[s] > 1 ? w / c->sr[s] : w;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "stage", s + 1);
        cJSON_AddNumberToObject(e, "in_channels", cin);
        cJSON_AddNumberToObject(e, "channels", c->hidden[s]);
        cJSON_AddNumberToObject(e, "depth", c->depths[s]);
        cJSON_AddNumberToObject(e, "heads", c->heads[s]);
        cJSON_AddNumberToObject(e, "sr", c->sr[s]);
        cJSON_AddNumberToObject(e, "patch", c->patch[s]);
        cJSON_AddNumberToObject(e, "stride", c->stride[s]);
        cJSON_AddNumberToObject(e, "height", h);
        cJSON_AddNumberToObject(e, "width", w);
        cJSON_AddNumberToObject(e, "reduced_height", hr);
        cJSON_AddNumberToObject(e, "reduced_width", wr);
        cJSON_AddNumberToObject(e, "mlp_hidden", c->hidden[s] * c->mlp_ratio);
        cJSON_AddNumberToObject(e, "parameters", stage_params[s]);
        cJSON_AddItemToArray(stages, e);
        cin = c->hidden[s];
    }
    cJSON *head = cJSON_AddObjectToObject(o, "head");
    cJSON_AddNumberToObject(head, "channels", c->decoder_hidden);
    cJSON_AddNumberToObject(head, "height", conv_out(pp.height, c->patch[0], c->stride[0]));
    cJSON_AddNumberToObject(head, "width", conv_out(pp.width, c->patch[0], c->stride[0]));
    cJSON_AddNumberToObject(head, "classes", c->num_labels);
    cJSON_AddNumberToObject(head, "parameters", head_params);
    cJSON_AddItemToObject(o, "training_history", parsed_meta(model, "training_history"));
    cJSON_AddItemToObject(o, "provenance", parsed_meta(model, "provenance"));
    cJSON_AddItemToObject(o, "stored_test_metrics", parsed_meta(model, "test_metrics"));
    return o;
}

/* ------------------------------------------------------------------------------------------ */
/* data/results.js and the gallery                                                             */
/* ------------------------------------------------------------------------------------------ */

static cJSON *num(double v) { return v == v ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

static int nucleus_class(const ls_model *m)
{
    int k = ls_model_config(m)->num_labels;
    for (int c = 0; c < k; c++) {
        char name[64];
        web_class_name(m, c, name, sizeof name);
        if (!strcmp(name, "nucleus")) return c;
    }
    return k - 1;
}

static cJSON *metrics_obj(const ls_model *model, const ls_confusion *cm, int images)
{
    ls_metrics m;
    ls_metrics_compute(cm, &m);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "images", images);
    cJSON_AddItemToObject(o, "miou", num(m.miou));
    cJSON_AddItemToObject(o, "pixel_accuracy", num(m.pixel_accuracy));
    cJSON_AddItemToObject(o, "whole_cell_dice", num(m.whole_cell_dice));
    cJSON_AddItemToObject(o, "nucleus_dice", num(m.dice[nucleus_class(model)]));
    cJSON *classes = cJSON_AddArrayToObject(o, "classes");
    for (int c = 0; c < m.k; c++) {
        char name[64];
        web_class_name(model, c, name, sizeof name);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", name);
        cJSON_AddItemToObject(e, "iou", num(m.iou[c]));
        cJSON_AddItemToObject(e, "dice", num(m.dice[c]));
        cJSON_AddItemToArray(classes, e);
    }
    return o;
}

static cJSON *published_json(void)
{
    /* Numbers as the papers report them, on their own train/test splits (not ours). */
    static const struct {
        const char *method, *metric, *folder;
        double value;
    } pub[] = {
        {"LDAS-Net", "whole_cell_dice", "Dataset 1", 98.97},
        {"LDAS-Net", "whole_cell_dice", "Dataset 2", 99.0},
        {"LDAS-Net", "nucleus_dice", "Dataset 1", 96.35},
        {"LDAS-Net", "nucleus_dice", "Dataset 2", 98.09},
        {"DeepLabv3+", "miou", "pooled", 92.1},
    };
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < sizeof pub / sizeof *pub; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "method", pub[i].method);
        cJSON_AddStringToObject(e, "metric", pub[i].metric);
        cJSON_AddStringToObject(e, "folder", pub[i].folder);
        cJSON_AddNumberToObject(e, "percent", pub[i].value);
        cJSON_AddItemToArray(a, e);
    }
    return a;
}

/* Name of the folder holding path ("Dataset 1"), into out. */
static void parent_name(const char *path, char *out, size_t cap)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    char *slash = strrchr(buf, '/');
    if (slash) *slash = '\0';
    slash = strrchr(buf, '/');
    const char *name = slash ? slash + 1 : buf;
    size_t n = strlen(name) < cap ? strlen(name) : cap - 1; /* long names are cut, not refused */
    memcpy(out, name, n);
    out[n] = '\0';
}

#define PANEL_MAX 160 /* gallery panel side: keeps 80 strips light for the page */

/* image | truth | prediction | error map, each scaled to fit PANEL_MAX. Error colours: orange =
 * cell predicted on background, cyan = cell missed, magenta = cytoplasm/nucleus swapped. */
static ls_status gallery_strip(const ls_image *img, const ls_mask *gt, const ls_mask *pred,
                               uint8_t **png, size_t *len, ls_error *err)
{
    int side = img->w > img->h ? img->w : img->h;
    double s = side > PANEL_MAX ? (double)PANEL_MAX / side : 1.0;
    int w = (int)(img->w * s + 0.5), h = (int)(img->h * s + 0.5);
    if (w < 1) w = 1;
    if (h < 1) h = 1;
    ls_image im = {0};
    ls_mask g = {0}, p = {0};
    uint8_t *strip = NULL, *gc = NULL, *pc = NULL;
    ls_status st = ls_image_resize(img, w, h, &im, err);
    if (st == LS_OK) st = ls_mask_resize_nearest(gt, w, h, &g, err);
    if (st == LS_OK) st = ls_mask_resize_nearest(pred, w, h, &p, err);
    if (st == LS_OK) {
        gc = web_color_mask(&g, &im, 0.6f);
        pc = web_color_mask(&p, &im, 0.6f);
        strip = malloc((size_t)4 * w * h * 3);
        if (!gc || !pc || !strip) st = ls_fail(err, LS_ERR_NOMEM, "out of memory (gallery)");
    }
    if (st == LS_OK) {
        int sw = 4 * w;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                size_t q = (size_t)y * w + x;
                uint8_t *row = strip + ((size_t)y * sw + x) * 3;
                int t = g.data[q], r = p.data[q];
                uint8_t err_rgb[3];
                if (t == LS_IGNORE) {
                    memset(err_rgb, 128, 3);
                } else if (t == r) {
                    /* Correct pixels: a dim grey copy of the image, so errors stand out. */
                    int lum = (im.data[q * 3] + im.data[q * 3 + 1] + im.data[q * 3 + 2]) / 3;
                    memset(err_rgb, (uint8_t)(lum * 35 / 100), 3);
                } else {
                    static const uint8_t fp[3] = {255, 140, 0}, fn[3] = {0, 220, 255},
                                         sw_[3] = {255, 0, 200};
                    memcpy(err_rgb, t == 0 ? fp : r == 0 ? fn : sw_, 3);
                }
                memcpy(row, im.data + q * 3, 3);
                memcpy(row + (size_t)w * 3, gc + q * 3, 3);
                memcpy(row + (size_t)2 * w * 3, pc + q * 3, 3);
                memcpy(row + (size_t)3 * w * 3, err_rgb, 3);
            }
        st = ls_png_encode_rgb(strip, sw, h, png, len, err);
    }
    free(strip);
    free(gc);
    free(pc);
    ls_image_free(&im);
    ls_mask_free(&g);
    ls_mask_free(&p);
    return st;
}

#define MAX_FOLDERS 8

/* Rows: labelled type; columns: the 5 types, then "unidentified" (below the classifier's
 * threshold) and "no cell" (the segmentation found none). */
static cJSON *type_confusion_json(long cm[LS_CELL_TYPES][LS_CELL_TYPES + 2])
{
    cJSON *o = cJSON_CreateObject();
    cJSON *rows = cJSON_AddArrayToObject(o, "rows"), *cols = cJSON_AddArrayToObject(o, "columns");
    cJSON *m = cJSON_AddArrayToObject(o, "matrix");
    long total = 0, right = 0;
    for (int t = 1; t <= LS_CELL_TYPES; t++) {
        cJSON_AddItemToArray(rows, cJSON_CreateString(ls_cell_type_name(t)));
        cJSON_AddItemToArray(cols, cJSON_CreateString(ls_cell_type_name(t)));
    }
    cJSON_AddItemToArray(cols, cJSON_CreateString(ls_cell_type_name(0)));
    cJSON_AddItemToArray(cols, cJSON_CreateString("no cell"));
    for (int r = 0; r < LS_CELL_TYPES; r++) {
        cJSON *row = cJSON_CreateArray();
        /* stored column order: type 1..5, then 0 (unidentified), then no cell */
        for (int c = 1; c <= LS_CELL_TYPES + 1; c++) {
            long v = cm[r][c == LS_CELL_TYPES + 1 ? 0 : c];
            cJSON_AddItemToArray(row, cJSON_CreateNumber((double)v));
        }
        cJSON_AddItemToArray(row, cJSON_CreateNumber((double)cm[r][LS_CELL_TYPES + 1]));
        cJSON_AddItemToArray(m, row);
        for (int c = 0; c < LS_CELL_TYPES + 2; c++) total += cm[r][c];
        right += cm[r][r + 1];
    }
    cJSON_AddNumberToObject(o, "images", (double)total);
    cJSON_AddItemToObject(o, "accuracy", num(total ? (double)right / total : NAN));
    return o;
}

static ls_status results_into(ls_model *model, const char *data_dir, web_bundle *b, cJSON *o,
                              ls_error *err)
{
    int k = ls_model_config(model)->num_labels;
    ls_dataset ds = {0};
    ls_confusion cm[MAX_FOLDERS + 1] = {{0}};
    int images[MAX_FOLDERS + 1] = {0}, nfold = 0;
    char folders[MAX_FOLDERS][64];
    int classified = ls_model_has_cell_classifier(model);
    long type_cm[LS_CELL_TYPES][LS_CELL_TYPES + 2] = {{0}};
    ls_status st = ls_dataset_add(&ds, data_dir, LS_SPLIT_TEST, NULL, err);
    if (st == LS_OK && ds.n == 0)
        st = ls_fail(err, LS_ERR_ARG, "the test split of %s holds no images", data_dir);
    if (st == LS_OK) st = ls_dataset_check_classes(&ds, k, "the model", err);
    for (int f = 0; st == LS_OK && f <= MAX_FOLDERS; f++) st = ls_confusion_init(&cm[f], k, err);
    cJSON *gallery = cJSON_AddArrayToObject(o, "gallery");
    for (int i = 0; st == LS_OK && i < ds.n; i++) {
        const ls_sample *smp = &ds.samples[i];
        char folder[64];
        parent_name(smp->image_path, folder, sizeof folder);
        int f = 0;
        while (f < nfold && strcmp(folders[f], folder)) f++;
        if (f == nfold && nfold < MAX_FOLDERS) snprintf(folders[nfold++], 64, "%s", folder);
        if (f == MAX_FOLDERS) f = MAX_FOLDERS - 1; /* lump any extra folders into the last */
        ls_image img = {0};
        ls_mask gt = {0}, pred = {0};
        ls_confusion one = {0};
        long snapped = 0;
        uint8_t *png = NULL;
        size_t len = 0;
        st = ls_dataset_load(&ds, i, &img, &gt, &snapped, err);
        if (st == LS_OK && !gt.data)
            st = ls_fail(err, LS_ERR_ARG, "%s has no mask", smp->image_path);
        ls_cells cells = {0};
        if (st == LS_OK) st = web_segment_cells(model, &img, 0, &pred, &cells, err);
        /* The labelled cell is taken to be the largest one found (as the classifier's training
         * does); columns LS_CELL_TYPES + 1 = no cell found, 0 = unidentified. */
        int big = -1;
        for (int c = 0; st == LS_OK && c < cells.n; c++)
            if (big < 0 || cells.cells[c].area > cells.cells[big].area) big = c;
        int truth = smp->cell_type, got = big < 0 ? LS_CELL_TYPES + 1 : cells.cells[big].type;
        if (st == LS_OK && truth >= 1 && truth <= LS_CELL_TYPES && got >= 0 &&
            got <= LS_CELL_TYPES + 1)
            type_cm[truth - 1][got]++;
        size_t n = (size_t)img.w * img.h;
        if (st == LS_OK) st = ls_confusion_add(&cm[f], gt.data, pred.data, n, err);
        if (st == LS_OK) st = ls_confusion_add(&cm[MAX_FOLDERS], gt.data, pred.data, n, err);
        if (st == LS_OK) st = ls_confusion_init(&one, k, err);
        if (st == LS_OK) st = ls_confusion_add(&one, gt.data, pred.data, n, err);
        if (st == LS_OK) st = gallery_strip(&img, &gt, &pred, &png, &len, err);
        if (st == LS_OK) {
            char name[128], stem[48];
            /* File names from the folder number and stem only: stems come from disk and the
             * names become URLs and report files, so anything outside [A-Za-z0-9_-] becomes _. */
            snprintf(stem, sizeof stem, "%s", smp->stem);
            for (char *c = stem; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                      (*c >= '0' && *c <= '9') || *c == '-'))
                    *c = '_';
            snprintf(name, sizeof name, "data/gallery/s%d_%s.png", f, stem);
            st = bundle_add(b, name, "image/png", png, len, err);
            png = NULL;
            ls_metrics m;
            ls_metrics_compute(&one, &m);
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "folder", folder);
            cJSON_AddStringToObject(e, "stem", smp->stem);
            cJSON_AddStringToObject(e, "file", name);
            cJSON_AddStringToObject(e, "cell_type", smp->cell_type >= 1 &&
                                    smp->cell_type <= LS_CELL_TYPES ?
                                    ls_cell_type_name(smp->cell_type) : "unlabelled");
            cJSON_AddNumberToObject(e, "cells", cells.n);
            if (big >= 0 && classified) {
                cJSON_AddStringToObject(e, "predicted_type", ls_cell_type_name(got));
                cJSON_AddNumberToObject(e, "type_confidence", cells.cells[big].confidence);
            }
            cJSON_AddItemToObject(e, "whole_cell_dice", num(m.whole_cell_dice));
            cJSON_AddItemToObject(e, "nucleus_dice", num(m.dice[nucleus_class(model)]));
            cJSON_AddItemToObject(e, "miou", num(m.miou));
            cJSON_AddItemToArray(gallery, e);
            images[f]++;
            images[MAX_FOLDERS]++;
        }
        free(png);
        ls_cells_free(&cells);
        ls_confusion_free(&one);
        ls_image_free(&img);
        ls_mask_free(&gt);
        ls_mask_free(&pred);
        progress_line("results: test image %d/%d", i + 1, ds.n);
    }
    progress_done();
    if (st == LS_OK) {
        cJSON *fa = cJSON_AddArrayToObject(o, "folders");
        for (int f = 0; f < nfold; f++) {
            cJSON *e = metrics_obj(model, &cm[f], images[f]);
            cJSON_AddStringToObject(e, "name", folders[f]);
            cJSON_AddItemToArray(fa, e);
        }
        cJSON *pooled = metrics_obj(model, &cm[MAX_FOLDERS], images[MAX_FOLDERS]);
        cJSON_AddStringToObject(pooled, "name", "pooled");
        cJSON_AddItemToObject(o, "pooled", pooled);
        if (classified) cJSON_ReplaceItemInObject(o, "cell_type_confusion",
                                                  type_confusion_json(type_cm));
    }
    for (int f = 0; f <= MAX_FOLDERS; f++) ls_confusion_free(&cm[f]);
    ls_dataset_free(&ds);
    return st;
}

static cJSON *results_json(ls_model *model, const char *data_dir, web_bundle *b)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "data", base_name(data_dir));
    cJSON_AddStringToObject(o, "split", "test (image id % 5 == 1)");
    cJSON_AddItemToObject(o, "published", published_json());
    cJSON_AddStringToObject(o, "published_note",
                            "Published numbers come from the papers' own train/test splits, "
                            "which differ from this split; compare them as orders of magnitude, "
                            "not as a ranking.");
    cJSON_AddNullToObject(o, "cell_type_confusion");
    ls_error err = {{0}};
    int before = b->n;
    if (results_into(model, data_dir, b, o, &err) != LS_OK) {
        /* No dataset (or a broken one) still gives a page: say why instead of failing. */
        cJSON_DeleteItemFromObject(o, "gallery");
        for (int i = before; i < b->n; i++) free(b->v[i].data);
        b->n = before;
        cJSON_AddStringToObject(o, "error", err.msg);
    } else {
        cJSON_AddNullToObject(o, "error");
    }
    return o;
}

ls_status web_build_bundle(ls_model *model, const char *model_path, const char *data_dir,
                           int live, web_bundle *b, ls_error *err)
{
    ls_status st = bundle_add_js(b, "data/model.js", "LS_MODEL",
                                 model_json(model, model_path, live), err);
    if (st == LS_OK)
        st = bundle_add_js(b, "data/results.js", "LS_RESULTS", results_json(model, data_dir, b),
                           err);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* leukoseg report                                                                             */
/* ------------------------------------------------------------------------------------------ */

static const char *report_help =
    "usage: leukoseg report [--model M] [--data DIR] [--threads N] --out DIR\n"
    "\n"
    "Writes the results pages of `leukoseg serve` as a static folder that opens with no server\n"
    "(open OUT/index.html): test-split metrics per dataset folder beside published numbers, a\n"
    "gallery of test images (image, truth, prediction, error map), training curves and the\n"
    "architecture. The upload and attention views need `leukoseg serve`.\n"
    "\n"
    "  --model M   model file (default: the shipped model)\n"
    "  --data DIR  dataset folder (default: segmentation_WBC beside the repo; a DIR given\n"
    "              here must exist, a missing default only leaves the metrics out)\n"
    "  --out DIR   output folder (created; existing files of the same names are replaced)\n"
    "  --threads N OpenMP threads (default: all cores)\n";

static ls_status write_file(const char *dir, const char *name, const void *data, size_t len,
                            ls_error *err)
{
    char path[PATH_MAX], tmp[PATH_MAX + 16];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return ls_fail(err, LS_ERR_ARG, "path too long: %s/%s", dir, name);
    char folder[PATH_MAX];
    snprintf(folder, sizeof folder, "%s", path);
    *strrchr(folder, '/') = '\0';
    ls_status st = make_dirs(folder, err);
    if (st != LS_OK) return st;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return ls_fail(err, LS_ERR_IO, "cannot write %s", tmp);
    int ok = fwrite(data, 1, len, f) == len;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        return ls_fail(err, LS_ERR_IO, "cannot write %s", path);
    }
    return LS_OK;
}

int cmd_report(int argc, char **argv)
{
    const char *model_path = default_model_path(), *data = default_data_path(), *out = NULL;
    int data_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(report_help, stdout);
            return 0;
        } else if (opt_value(argc, argv, &i, "--model", &v)) {
            if (!v) return cli_usage_error("report", "--model needs a file");
            model_path = v;
        } else if (opt_value(argc, argv, &i, "--data", &v)) {
            if (!v) return cli_usage_error("report", "--data needs a folder");
            data = v;
            data_given = 1;
        } else if (opt_value(argc, argv, &i, "--out", &v)) {
            if (!v) return cli_usage_error("report", "--out needs a folder");
            out = v;
        } else if (opt_value(argc, argv, &i, "--threads", &v)) {
            if (!parse_threads("report", v)) return 2;
        } else {
            return cli_usage_error("report", "unknown option '%s'", argv[i]);
        }
    }
    if (!out) return cli_usage_error("report", "--out DIR is required");
    ls_error err = {{0}};
    ls_model *model = NULL;
    web_bundle b = {0};
    ls_status st = data_given ? cli_check_folder("--data", data, &err) : LS_OK;
    if (st == LS_OK) st = cli_load_model(model_path, &model, &err);
    if (st == LS_OK) st = make_dirs(out, &err);
    if (st == LS_OK) st = web_build_bundle(model, model_path, data, 0, &b, &err);
    for (int i = 0; st == LS_OK && i < ls_web_nfiles; i++)
        st = write_file(out, ls_web_files[i].name, ls_web_files[i].data, ls_web_files[i].len,
                        &err);
    for (int i = 0; st == LS_OK && i < b.n; i++)
        st = write_file(out, b.v[i].name, b.v[i].data, b.v[i].len, &err);
    int rc = 0;
    if (st == LS_OK) {
        const web_blob *r = web_bundle_find(&b, "data/results.js");
        if (r && strstr((const char *)r->data, "\"error\":\"")) {
            fprintf(stderr, "leukoseg report: note: no test metrics (see the page): %s\n",
                    data);
        }
        printf("%s/index.html\n", out);
    } else {
        rc = cli_error("report", &err);
    }
    web_bundle_free(&b);
    ls_model_free(model);
    return rc;
}
