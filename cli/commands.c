/* leukoseg eval, segment, forward and info. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* eval                                                                                        */
/* ------------------------------------------------------------------------------------------ */

static const char *eval_help =
    "usage: leukoseg eval [--model M] [--data DIR]... [--split S] [--json] [--threads N]\n"
    "\n"
    "Segments every image of the split at the model's input size, upsamples the logits once to\n"
    "the image size, and accumulates one confusion matrix over the whole set (ignored pixels\n"
    "dropped). Prints per-class IoU, Dice, precision and recall, mIoU (classes absent from both\n"
    "truth and prediction excluded), pixel accuracy, mean class accuracy and whole-cell Dice\n"
    "(all cell classes against background). A value that is 0/0 (the recall of a class absent\n"
    "from the truth, the precision of one never predicted) prints as n/a, null in JSON.\n"
    "\n"
    "  --model M    model file (default: the shipped model)\n"
    "  --data DIR   dataset folder, repeatable (default: segmentation_WBC beside the repo)\n"
    "  --split S    train, val, test or all (default test)\n"
    "  --split-file F  evaluate the images whose stems F lists, one per line (\"034\" or\n"
    "               \"Dataset 2/034\"), instead of --split\n"
    "  --json       print one JSON object on stdout\n"
    "  --threads N  OpenMP threads (default: all cores)\n";

typedef struct {
    char s[16];
} metric_text;

/* A metric with 4 decimals, or "n/a" where it is undefined: the library gives NAN for a 0/0,
 * such as the recall of a class absent from the truth or the precision of one never predicted
 * (the JSON output gives null). Returned by value, so one printf can hold several. */
static metric_text metric_str(double v)
{
    metric_text t;
    if (v != v) snprintf(t.s, sizeof t.s, "n/a");
    else snprintf(t.s, sizeof t.s, "%.4f", v);
    return t;
}

static void print_metrics_table(const ls_metrics *m, const ls_dataset *ds, int images)
{
    printf("%d images, %llu pixels\n", images, (unsigned long long)m->pixels);
    printf("%-12s %8s %8s %10s %8s\n", "class", "IoU", "Dice", "precision", "recall");
    for (int c = 0; c < m->k; c++)
        printf("%-12s %8s %8s %10s %8s\n", ds->class_names[c], metric_str(m->iou[c]).s,
               metric_str(m->dice[c]).s, metric_str(m->precision[c]).s,
               metric_str(m->recall[c]).s);
    printf("mIoU %s  pixel accuracy %s  mean accuracy %s  whole-cell Dice %s\n",
           metric_str(m->miou).s, metric_str(m->pixel_accuracy).s,
           metric_str(m->mean_accuracy).s, metric_str(m->whole_cell_dice).s);
}

int cmd_eval(int argc, char **argv)
{
    const char *model_path = default_model_path(), *data[8], *split_file = NULL;
    int ndata = 0, json = 0;
    ls_split split = LS_SPLIT_TEST;
    ls_error err = {{0}};
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(eval_help, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (opt_value(argc, argv, &i, "--model", &v)) {
            if (!v) return cli_usage_error("eval", "--model needs a file");
            model_path = v;
        } else if (opt_value(argc, argv, &i, "--data", &v)) {
            if (!v || ndata == 8) return cli_usage_error("eval", "--data needs a folder (max 8)");
            data[ndata++] = v;
        } else if (opt_value(argc, argv, &i, "--threads", &v)) {
            if (!parse_threads("eval", v)) return 2;
        } else if (opt_value(argc, argv, &i, "--split-file", &v)) {
            if (!v) return cli_usage_error("eval", "--split-file needs a file");
            split_file = v;
        } else if (opt_value(argc, argv, &i, "--split", &v)) {
            if (ls_split_parse(v ? v : "", &split, &err) != LS_OK)
                return cli_error("eval", &err) + 1; /* a usage error: exit 2 */
        } else {
            return cli_usage_error("eval", "unknown option '%s'", argv[i]);
        }
    }
    if (ndata == 0) data[ndata++] = default_data_path();
    ls_dataset ds = {0};
    ls_model *model = NULL;
    ls_confusion cm = {0};
    ls_status st = cli_load_model(model_path, &model, &err);
    for (int d = 0; st == LS_OK && d < ndata; d++)
        st = ls_dataset_add(&ds, data[d], split, split_file, &err);
    if (st == LS_OK && ds.n == 0)
        st = ls_fail(&err, LS_ERR_ARG, "the %s split of %s holds no images", split_name(split),
                     data[0]);
    if (st == LS_OK)
        st = ls_dataset_check_classes(&ds, ls_model_config(model)->num_labels, model_path, &err);
    if (st == LS_OK) st = ls_confusion_init(&cm, ds.num_classes, &err);
    if (st == LS_OK) st = evaluate_dataset(model, &ds, &cm, "evaluating", &err);
    int rc = 0;
    if (st == LS_OK) {
        ls_metrics met;
        ls_metrics_compute(&cm, &met);
        if (json) {
            char *s = metrics_json(&met, &ds, ds.n);
            printf("%s\n", s);
            free(s);
        } else {
            print_metrics_table(&met, &ds, ds.n);
        }
    } else {
        rc = cli_error("eval", &err);
    }
    ls_confusion_free(&cm);
    ls_dataset_free(&ds);
    ls_model_free(model);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* segment                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static const char *segment_help =
    "usage: leukoseg segment [--model M] [--out DIR] [--levels] [--window W] [--threads N]\n"
    "                        IMAGE...\n"
    "\n"
    "For each image (BMP, PNG or JPEG) writes into DIR (default .):\n"
    "  NAME_mask.png     class indices (0 background, 1 cytoplasm, 2 nucleus), input size\n"
    "  NAME_levels.png   with --levels: the mask in the dataset's own gray levels (0/128/255)\n"
    "  NAME_overlay.png  the image with classes coloured over it\n"
    "  NAME.json         pixel count and fraction of each class\n"
    "A summary JSON line per image goes to stdout. --threads N sets the OpenMP threads\n"
    "(default: all cores). --window W segments a field with many cells in half-overlapping\n"
    "W x W pixel windows, W framing one white cell as the training images do (about 2.5 cell\n"
    "diameters; default: the whole image as one window).\n";

static const uint8_t class_colors[8][3] = {{0, 0, 0},     {255, 200, 0}, {200, 0, 255},
                                           {0, 200, 255}, {0, 255, 0},   {255, 0, 0},
                                           {0, 0, 255},   {255, 255, 255}};

/* Blends class colours over the image at 45%, background left as it is. */
static uint8_t *make_overlay(const ls_image *img, const ls_mask *mask)
{
    size_t n = (size_t)img->w * img->h;
    uint8_t *out = malloc(n * 3);
    if (!out) return NULL;
    for (size_t p = 0; p < n; p++) {
        int c = mask->data[p];
        for (int ch = 0; ch < 3; ch++) {
            float v = img->data[p * 3 + ch];
            if (c > 0) v = 0.55f * v + 0.45f * class_colors[c & 7][ch];
            out[p * 3 + ch] = (uint8_t)(v + 0.5f);
        }
    }
    return out;
}

/* Class names and levels from the model's metadata (JSON arrays). */
static int model_levels(const ls_model *m, int *levels, int k)
{
    cJSON *a = cJSON_Parse(ls_model_get_meta(m, "mask_levels") ? ls_model_get_meta(m, "mask_levels")
                                                               : "");
    int ok = cJSON_IsArray(a) && cJSON_GetArraySize(a) == k;
    for (int i = 0; ok && i < k; i++) levels[i] = cJSON_GetArrayItem(a, i)->valueint;
    cJSON_Delete(a);
    return ok;
}

static void model_class_name(const ls_model *m, int c, char *out, size_t cap)
{
    cJSON *a = cJSON_Parse(ls_model_get_meta(m, "class_names") ? ls_model_get_meta(m, "class_names")
                                                               : "");
    const cJSON *e = cJSON_IsArray(a) ? cJSON_GetArrayItem(a, c) : NULL;
    if (cJSON_IsString(e)) snprintf(out, cap, "%s", e->valuestring);
    else snprintf(out, cap, "class%d", c);
    cJSON_Delete(a);
}

static char *areas_json(const ls_model *m, const char *image, const ls_mask *mask)
{
    int k = ls_model_config(m)->num_labels;
    long counts[16] = {0};
    size_t n = (size_t)mask->w * mask->h;
    for (size_t p = 0; p < n; p++) counts[mask->data[p]]++;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "image", image);
    cJSON_AddNumberToObject(o, "width", mask->w);
    cJSON_AddNumberToObject(o, "height", mask->h);
    cJSON *classes = cJSON_AddArrayToObject(o, "classes");
    for (int c = 0; c < k; c++) {
        char name[64];
        model_class_name(m, c, name, sizeof name);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", name);
        cJSON_AddNumberToObject(e, "pixels", (double)counts[c]);
        cJSON_AddNumberToObject(e, "fraction", (double)counts[c] / (double)n);
        cJSON_AddItemToArray(classes, e);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static void stem_of(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(out, cap, "%s", base);
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = '\0';
}

static ls_status segment_one(ls_model *model, const char *path, const char *out_dir, int levels,
                             int window, ls_error *err)
{
    ls_image img = {0};
    ls_mask mask = {0};
    uint8_t *overlay = NULL, *level_img = NULL;
    char *json = NULL, stem[256], file[PATH_MAX];
    stem_of(path, stem, sizeof stem);
    ls_status st = ls_image_load(path, &img, err);
    if (st == LS_OK) st = ls_segment_windows(model, &img, window, &mask, NULL, err);
    if (st == LS_OK && !(overlay = make_overlay(&img, &mask)))
        st = ls_fail(err, LS_ERR_NOMEM, "out of memory");
    if (st == LS_OK) {
        snprintf(file, sizeof file, "%s/%s_mask.png", out_dir, stem);
        st = ls_png_write_gray(file, mask.data, mask.w, mask.h, err);
    }
    if (st == LS_OK && levels) {
        int lv[16], k = ls_model_config(model)->num_labels;
        if (!model_levels(model, lv, k)) {
            st = ls_fail(err, LS_ERR_ARG, "the model declares no mask levels; drop --levels");
        } else if (!(level_img = malloc((size_t)mask.w * mask.h))) {
            st = ls_fail(err, LS_ERR_NOMEM, "out of memory");
        } else {
            for (size_t p = 0; p < (size_t)mask.w * mask.h; p++)
                level_img[p] = (uint8_t)lv[mask.data[p]];
            snprintf(file, sizeof file, "%s/%s_levels.png", out_dir, stem);
            st = ls_png_write_gray(file, level_img, mask.w, mask.h, err);
        }
    }
    if (st == LS_OK) {
        snprintf(file, sizeof file, "%s/%s_overlay.png", out_dir, stem);
        st = ls_png_write_rgb(file, overlay, img.w, img.h, err);
    }
    if (st == LS_OK && !(json = areas_json(model, path, &mask)))
        st = ls_fail(err, LS_ERR_NOMEM, "out of memory");
    if (st == LS_OK) {
        snprintf(file, sizeof file, "%s/%s.json", out_dir, stem);
        size_t len = strlen(json);
        char *with_newline = malloc(len + 2);
        if (!with_newline) {
            st = ls_fail(err, LS_ERR_NOMEM, "out of memory");
        } else {
            memcpy(with_newline, json, len);
            memcpy(with_newline + len, "\n", 2);
            st = write_text_atomic(file, with_newline, err);
            free(with_newline);
        }
    }
    if (st == LS_OK) printf("%s\n", json);
    free(json);
    free(overlay);
    free(level_img);
    ls_image_free(&img);
    ls_mask_free(&mask);
    return st;
}

int cmd_segment(int argc, char **argv)
{
    const char *model_path = default_model_path(), *out_dir = ".";
    int levels = 0, nimages = 0, window = 0;
    const char **images = calloc(argc, sizeof *images);
    if (!images) return 1;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(segment_help, stdout);
            free(images);
            return 0;
        } else if (!strcmp(argv[i], "--levels")) {
            levels = 1;
        } else if (opt_value(argc, argv, &i, "--model", &v)) {
            if (!v) return free(images), cli_usage_error("segment", "--model needs a file");
            model_path = v;
        } else if (opt_value(argc, argv, &i, "--out", &v)) {
            if (!v) return free(images), cli_usage_error("segment", "--out needs a folder");
            out_dir = v;
        } else if (opt_value(argc, argv, &i, "--threads", &v)) {
            if (!parse_threads("segment", v)) return free(images), 2;
        } else if (opt_value(argc, argv, &i, "--window", &v)) {
            if (!parse_int("segment", "--window", v, 16, 1 << 14, &window))
                return free(images), 2;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            free(images);
            return cli_usage_error("segment", "unknown option '%s'", argv[i]);
        } else {
            images[nimages++] = argv[i];
        }
    }
    if (nimages == 0) {
        free(images);
        return cli_usage_error("segment", "give at least one image");
    }
    /* Outputs are named after the input's file name: two inputs with one name would overwrite
     * each other, so refuse before writing anything. */
    for (int i = 0; i < nimages; i++) {
        char a[256], b[256];
        stem_of(images[i], a, sizeof a);
        for (int j = 0; j < i; j++) {
            stem_of(images[j], b, sizeof b);
            if (strcmp(a, b) == 0) {
                int rc = cli_usage_error("segment", "'%s' and '%s' would both write %s_mask.png "
                                         "(and the rest) into %s; segment them into different "
                                         "--out folders", images[j], images[i], a, out_dir);
                free(images);
                return rc;
            }
        }
    }
    ls_error err = {{0}};
    ls_model *model = NULL;
    ls_status st = cli_load_model(model_path, &model, &err);
    if (st == LS_OK) st = make_dirs(out_dir, &err);
    int failures = 0;
    for (int i = 0; st == LS_OK && i < nimages; i++) {
        ls_error one = {{0}};
        if (segment_one(model, images[i], out_dir, levels, window, &one) != LS_OK) {
            cli_error("segment", &one);
            failures++;
        }
    }
    int rc = st != LS_OK ? cli_error("segment", &err) : failures ? 1 : 0;
    ls_model_free(model);
    free(images);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* forward                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static const char *forward_help =
    "usage: leukoseg forward [--model M] --input x.npy --output logits.npy\n"
    "\n"
    "Runs the raw eval-mode forward on a preprocessed float32 NCHW tensor [B, 3, H, W] and writes\n"
    "the logits [B, K, ceil(H/4), ceil(W/4)] as float32, for parity checks against PyTorch.\n";

int cmd_forward(int argc, char **argv)
{
    const char *model_path = default_model_path(), *in = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(forward_help, stdout);
            return 0;
        } else if (opt_value(argc, argv, &i, "--model", &v)) {
            model_path = v;
        } else if (opt_value(argc, argv, &i, "--input", &v)) {
            in = v;
        } else if (opt_value(argc, argv, &i, "--output", &v)) {
            out = v;
        } else {
            return cli_usage_error("forward", "unknown option '%s'", argv[i]);
        }
    }
    if (!model_path || !in || !out)
        return cli_usage_error("forward", "--model, --input and --output need values");
    ls_error err = {{0}};
    ls_model *model = NULL;
    ls_workspace *ws = NULL;
    ls_array x = {0}, logits = {0};
    ls_status st = cli_load_model(model_path, &model, &err);
    if (st == LS_OK) st = ls_npy_load(in, &x, &err);
    if (st == LS_OK && (x.dtype != LS_F32 || x.ndim != 4 || x.shape[1] != 3)) {
        static const char *dtype_names[] = {"float32", "int64", "uint8", "int32", "float64"};
        char shape[96] = "";
        for (int d = 0; d < x.ndim && d < 8; d++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld", d ? ", " : "",
                     (long long)x.shape[d]);
        st = ls_fail(&err, LS_ERR_SHAPE, "%s holds %s [%s]; forward needs float32 [B, 3, H, W] "
                     "(NCHW, preprocessed; np.float32 and transpose(0, 3, 1, 2) from NHWC)", in,
                     dtype_names[x.dtype], shape);
    }
    if (st == LS_OK && (x.shape[0] > 4096 || x.shape[2] > 16384 || x.shape[3] > 16384))
        st = ls_fail(&err, LS_ERR_SHAPE, "%s: shape too large", in);
    if (st == LS_OK)
        st = ls_workspace_create(model, (int)x.shape[0], (int)x.shape[2], (int)x.shape[3], 0, &ws,
                                 &err);
    if (st == LS_OK) {
        int h4, w4;
        ls_workspace_logits(ws, &h4, &w4);
        logits.dtype = LS_F32;
        logits.ndim = 4;
        logits.shape[0] = x.shape[0];
        logits.shape[1] = ls_model_config(model)->num_labels;
        logits.shape[2] = h4;
        logits.shape[3] = w4;
        logits.data = malloc(ls_array_numel(&logits) * sizeof(float));
        if (!logits.data) st = ls_fail(&err, LS_ERR_NOMEM, "out of memory");
    }
    if (st == LS_OK && ls_model_forward(model, ws, x.data, 0, NULL, logits.data, &err) != LS_OK) {
        char msg[sizeof err.msg];
        snprintf(msg, sizeof msg, "%s", err.msg);
        st = ls_fail(&err, LS_ERR_NUMERIC, "%s: %s", in, msg);
    }
    if (st == LS_OK) st = ls_npy_save(out, &logits, &err);
    int rc = st == LS_OK ? 0 : cli_error("forward", &err);
    ls_array_free(&x);
    ls_array_free(&logits);
    ls_workspace_free(ws);
    ls_model_free(model);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* info                                                                                        */
/* ------------------------------------------------------------------------------------------ */

int cmd_info(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            puts("usage: leukoseg info [--model] [MODEL]\n\nPrints the configuration, classes, "
                 "parameter count, preprocessing, provenance\nand test metrics of a model file "
                 "(default: the shipped model).");
            return 0;
        } else if (opt_value(argc, argv, &i, "--model", &v)) {
            if (!v) return cli_usage_error("info", "--model needs a file");
            path = v;
        } else if (argv[i][0] == '-') {
            return cli_usage_error("info", "unknown option '%s'", argv[i]);
        } else if (path) {
            return cli_usage_error("info", "give one model (got '%s' and '%s')", path, argv[i]);
        } else {
            path = argv[i];
        }
    }
    if (!path) path = default_model_path();
    ls_error err = {{0}};
    ls_model *m = NULL;
    if (cli_load_model(path, &m, &err) != LS_OK) return cli_error("info", &err);
    const ls_config *c = ls_model_config(m);
    ls_preproc pp;
    ls_model_preproc(m, &pp);
    printf("model        %s\n", path);
    printf("variant      SegFormer-%s (MiT encoder + all-MLP head)\n", c->variant);
    printf("parameters   %zu\n", ls_model_num_weights(m));
    printf("classes      %d", c->num_labels);
    for (int k = 0; k < c->num_labels; k++) {
        char name[64];
        model_class_name(m, k, name, sizeof name);
        printf("%s%s", k ? ", " : ": ", name);
    }
    printf("\n");
    for (int i = 0; i < 4; i++)
        printf("stage %d      hidden %d, depth %d, heads %d, sr %d\n", i + 1, c->hidden[i],
               c->depths[i], c->heads[i], c->sr[i]);
    printf("decoder      %d channels\n", c->decoder_hidden);
    printf("input        %dx%d, mean [%.3f %.3f %.3f], std [%.3f %.3f %.3f]\n", pp.width,
           pp.height, pp.mean[0], pp.mean[1], pp.mean[2], pp.std[0], pp.std[1], pp.std[2]);
    const char *keys[] = {"mask_levels", "provenance", "test_metrics"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        const char *v = ls_model_get_meta(m, keys[k]);
        if (v) printf("%-12s %s\n", keys[k], v);
    }
    ls_model_free(m);
    return 0;
}
