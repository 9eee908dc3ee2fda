/* leukoseg train: SegFormer training with validation every epoch, best-model keeping, early
 * stopping, exact resume from a checkpoint, and a clean stop on Ctrl-C.
 *
 * Determinism: the epoch order comes from an rng seeded by (seed, epoch) and each step's
 * augmentation, dropout and drop path from an rng seeded by (seed, step), so a resumed run draws
 * exactly what an uninterrupted one would. */
#include "cli.h"
#include "model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define MAX_DATA 8

static const char *train_help =
    "usage: leukoseg train [options]\n"
    "\n"
    "  --data DIR         dataset folder; repeat to train on several (default: the\n"
    "                     segmentation_WBC dataset beside the repo)\n"
    "  --out FILE         best model (default models/leukoseg-b0.safetensors); the\n"
    "                     checkpoint is FILE.ckpt, the log FILE.log.jsonl\n"
    "  --variant V        b0..b5 (default b0)\n"
    "  --size N           square training and inference size (default 128)\n"
    "  --batch N          images per step (default 8)\n"
    "  --epochs N         maximum epochs (default 100)\n"
    "  --lr X             base learning rate (default 6e-4); the decode head gets x10\n"
    "  --head-lr-mult X   decode-head learning-rate multiplier (default 10)\n"
    "  --weight-decay X   AdamW weight decay (default 0.01)\n"
    "  --warmup N         linear warm-up iterations (default 300)\n"
    "  --patience N       stop after N epochs without a better validation mIoU (default 20)\n"
    "  --seed N           seed for initialisation, order and augmentation (default 1)\n"
    "  --threads N        OpenMP threads (default: all cores)\n"
    "  --train-split S    split to train on: train, val, test, all (default train)\n"
    "  --val-split S      split to validate on (default val)\n"
    "  --train-list F     train on the images whose stems F lists, one per line (\"034\" or\n"
    "                     \"Dataset 2/034\"), instead of --train-split\n"
    "  --val-list F       validate on the images F lists, instead of --val-split\n"
    "  --limit N          use only the first N training images (for quick checks)\n"
    "  --balance          draw as many samples per epoch from each dataset folder as the\n"
    "                     largest one has (small folders are repeated)\n"
    "  --init FILE        start from the weights of a model file (by HF name; tensors whose\n"
    "                     shape differs, e.g. another class count, keep their initialisation\n"
    "                     and are listed), e.g. a pretrained encoder or an earlier run\n"
    "  --resume FILE      continue from a checkpoint exactly where it stopped\n"
    "  --stop-at-step N   save a checkpoint and stop after optimiser step N (to split a long\n"
    "                     run into sessions; continue with --resume)\n"
    "\n"
    "  --no-finalize      skip the final step (below)\n"
    "\n"
    "Ctrl-C saves a checkpoint and exits; --resume continues as if never stopped.\n"
    "When training ends, the best model gets the cell-type classifier (fitted on the class\n"
    "labels of the training and validation images, see train-cells) and each dataset\n"
    "folder's test-split metrics.\n";

typedef struct {
    const char *data[MAX_DATA];
    int ndata;
    const char *out, *variant, *resume, *init, *train_list, *val_list;
    int size, batch, epochs, warmup, patience, seed, threads, limit, stop_at_step, balance;
    int no_finalize;
    double lr, head_lr_mult, weight_decay;
    ls_split train_split, val_split;
} train_options;

/* State that a checkpoint carries besides weights and moments. */
typedef struct {
    long step;           /* optimiser steps done */
    int best_epoch;
    double best_miou;
    int bad_epochs;
    cJSON *history;      /* per-epoch records, for the log and the web page */
    cJSON *args;         /* the run's options, so --resume continues the same run */
} train_state;

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) { (void)sig; interrupted = 1; }

static int parse_train_options(int argc, char **argv, train_options *o)
{
    memset(o, 0, sizeof *o);
    o->out = "models/leukoseg-b0.safetensors";
    o->variant = "b0";
    o->size = 128;
    o->batch = 8;
    o->epochs = 100;
    o->warmup = 300;
    o->patience = 20;
    o->seed = 1;
    o->lr = 6e-4;
    o->head_lr_mult = 10.0;
    o->weight_decay = 0.01;
    o->train_split = LS_SPLIT_TRAIN;
    o->val_split = LS_SPLIT_VAL;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        ls_error err;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(train_help, stdout);
            exit(cli_finish_stdout(0));
        } else if (opt_value(argc, argv, &i, "--data", &v)) {
            if (!v || o->ndata == MAX_DATA)
                return cli_usage_error("train", "--data needs a folder (at most %d)", MAX_DATA);
            o->data[o->ndata++] = v;
        } else if (opt_value(argc, argv, &i, "--out", &v)) {
            if (!v) return cli_usage_error("train", "--out needs a file name");
            o->out = v;
        } else if (opt_value(argc, argv, &i, "--variant", &v)) {
            if (!v) return cli_usage_error("train", "--variant needs b0..b5");
            o->variant = v;
        } else if (opt_value(argc, argv, &i, "--train-list", &v)) {
            if (!v) return cli_usage_error("train", "--train-list needs a file");
            o->train_list = v;
        } else if (opt_value(argc, argv, &i, "--val-list", &v)) {
            if (!v) return cli_usage_error("train", "--val-list needs a file");
            o->val_list = v;
        } else if (opt_value(argc, argv, &i, "--init", &v)) {
            if (!v) return cli_usage_error("train", "--init needs a model file");
            o->init = v;
        } else if (opt_value(argc, argv, &i, "--resume", &v)) {
            if (!v) return cli_usage_error("train", "--resume needs a checkpoint file");
            o->resume = v;
        } else if (opt_value(argc, argv, &i, "--size", &v)) {
            if (!parse_int("train", "--size", v, 32, 2048, &o->size)) return 2;
        } else if (opt_value(argc, argv, &i, "--batch", &v)) {
            if (!parse_int("train", "--batch", v, 1, 1024, &o->batch)) return 2;
        } else if (opt_value(argc, argv, &i, "--epochs", &v)) {
            if (!parse_int("train", "--epochs", v, 1, 100000, &o->epochs)) return 2;
        } else if (opt_value(argc, argv, &i, "--warmup", &v)) {
            if (!parse_int("train", "--warmup", v, 0, 10000000, &o->warmup)) return 2;
        } else if (opt_value(argc, argv, &i, "--patience", &v)) {
            if (!parse_int("train", "--patience", v, 1, 100000, &o->patience)) return 2;
        } else if (opt_value(argc, argv, &i, "--seed", &v)) {
            if (!parse_int("train", "--seed", v, 0, 2147483647, &o->seed)) return 2;
        } else if (opt_value(argc, argv, &i, "--threads", &v)) {
            if (!parse_int("train", "--threads", v, 1, 1024, &o->threads)) return 2;
        } else if (!strcmp(argv[i], "--no-finalize")) {
            o->no_finalize = 1;
        } else if (!strcmp(argv[i], "--balance")) {
            o->balance = 1;
        } else if (opt_value(argc, argv, &i, "--stop-at-step", &v)) {
            if (!parse_int("train", "--stop-at-step", v, 1, 2147483647, &o->stop_at_step))
                return 2;
        } else if (opt_value(argc, argv, &i, "--limit", &v)) {
            if (!parse_int("train", "--limit", v, 1, 100000000, &o->limit)) return 2;
        } else if (opt_value(argc, argv, &i, "--lr", &v)) {
            if (!parse_float("train", "--lr", v, 1e-9, 1.0, &o->lr)) return 2;
        } else if (opt_value(argc, argv, &i, "--head-lr-mult", &v)) {
            if (!parse_float("train", "--head-lr-mult", v, 0.0, 1000.0, &o->head_lr_mult))
                return 2;
        } else if (opt_value(argc, argv, &i, "--weight-decay", &v)) {
            if (!parse_float("train", "--weight-decay", v, 0.0, 10.0, &o->weight_decay)) return 2;
        } else if (opt_value(argc, argv, &i, "--train-split", &v)) {
            if (ls_split_parse(v ? v : "", &o->train_split, &err) != LS_OK)
                return cli_error("train", &err) + 1;
        } else if (opt_value(argc, argv, &i, "--val-split", &v)) {
            if (ls_split_parse(v ? v : "", &o->val_split, &err) != LS_OK)
                return cli_error("train", &err) + 1;
        } else {
            return cli_usage_error("train", "unknown option '%s'", argv[i]);
        }
    }
    if (o->ndata == 0) o->data[o->ndata++] = default_data_path();
    return 0;
}

/* Options that may differ between a run and its resumption: they do not change what is drawn. */
static int is_session_option(const char *arg)
{
    static const char *names[] = {"--resume", "--threads", "--stop-at-step"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        size_t n = strlen(names[k]);
        if (!strncmp(arg, names[k], n) && (arg[n] == '\0' || arg[n] == '=')) return 1;
    }
    return 0;
}

/* The run's own options (argv without the session ones), as a JSON array of strings. */
static cJSON *run_args(int argc, char **argv)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 1; i < argc; i++) {
        if (is_session_option(argv[i])) {
            if (!strchr(argv[i], '=')) i++; /* skip its value */
            continue;
        }
        cJSON_AddItemToArray(a, cJSON_CreateString(argv[i]));
    }
    return a;
}

/* --resume: the options come from the checkpoint; only session options may be given now.
 * *saved receives the parsed args (kept alive: the options point into it). */
static int options_from_checkpoint(int argc, char **argv, train_options *o, cJSON **saved)
{
    for (int i = 1; i < argc; i++) {
        if (is_session_option(argv[i])) {
            if (!strchr(argv[i], '=')) i++;
            continue;
        }
        return cli_usage_error("train", "with --resume the run's options come from the "
                               "checkpoint; give only --resume, --threads and --stop-at-step "
                               "(got '%s')", argv[i]);
    }
    ls_error err = {{0}};
    ls_tensor_file tf;
    if (ls_safetensors_load(o->resume, &tf, &err) != LS_OK) return cli_error("train", &err);
    const char *state_s = ls_tensor_file_meta(&tf, "train_state");
    cJSON *state = state_s ? cJSON_Parse(state_s) : NULL;
    cJSON *args = state ? cJSON_DetachItemFromObject(state, "args") : NULL;
    cJSON_Delete(state);
    ls_tensor_file_free(&tf);
    if (!cJSON_IsArray(args)) {
        cJSON_Delete(args);
        ls_fail(&err, LS_ERR_FORMAT, "%s is not a training checkpoint (no train_state with the "
                "run's options); resume from the FILE.ckpt that train wrote", o->resume);
        return cli_error("train", &err);
    }
    int n = cJSON_GetArraySize(args);
    char **run_argv = calloc((size_t)n + 2, sizeof *run_argv);
    if (!run_argv) return 1;
    run_argv[0] = "train";
    for (int i = 0; i < n; i++) run_argv[i + 1] = cJSON_GetArrayItem(args, i)->valuestring;
    train_options session = *o;
    int rc = parse_train_options(n + 1, run_argv, o);
    free(run_argv);
    o->resume = session.resume;
    o->threads = session.threads;
    o->stop_at_step = session.stop_at_step;
    *saved = args;
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Data in memory                                                                              */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    ls_dataset ds;
    ls_image *images;
    ls_mask *masks;
} loaded_set;

static ls_status load_set(const train_options *o, ls_split split, const char *list, int limit,
                          loaded_set *set, ls_error *err)
{
    memset(set, 0, sizeof *set);
    for (int d = 0; d < o->ndata; d++) {
        ls_status st = ls_dataset_add(&set->ds, o->data[d], split, list, err);
        if (st != LS_OK) return st;
    }
    if (limit > 0 && set->ds.n > limit) set->ds.n = limit;
    if (set->ds.n == 0)
        return ls_fail(err, LS_ERR_ARG, "the %s split of %s holds no images", split_name(split),
                       o->data[0]);
    set->images = calloc(set->ds.n, sizeof *set->images);
    set->masks = calloc(set->ds.n, sizeof *set->masks);
    if (!set->images || !set->masks) return ls_fail(err, LS_ERR_NOMEM, "out of memory");
    for (int i = 0; i < set->ds.n; i++) {
        long snapped = 0;
        ls_status st = ls_dataset_load(&set->ds, i, &set->images[i], &set->masks[i], &snapped,
                                       err);
        if (st != LS_OK) return st;
        if (!set->masks[i].data)
            return ls_fail(err, LS_ERR_ARG, "%s has no mask; training needs one per image",
                           set->ds.samples[i].image_path);
        if (snapped > 0)
            fprintf(stderr, "note: %s: %ld mask pixels were not a declared level and were "
                    "snapped to the nearest one\n", set->ds.samples[i].mask_path, snapped);
    }
    return LS_OK;
}

static void free_set(loaded_set *set)
{
    for (int i = 0; set->images && i < set->ds.n; i++) {
        ls_image_free(&set->images[i]);
        ls_mask_free(&set->masks[i]);
    }
    free(set->images);
    free(set->masks);
    ls_dataset_free(&set->ds);
}

/* ------------------------------------------------------------------------------------------ */
/* Metadata written into the model file                                                        */
/* ------------------------------------------------------------------------------------------ */

static char *json_string_array(const char names[][32], int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(names[i]));
    char *s = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    return s;
}

static ls_status set_model_metadata(ls_model *m, const train_options *o, const ls_dataset *ds,
                                    const char *command, ls_error *err)
{
    char buf[256];
    char *names = json_string_array(ds->class_names, ds->num_classes);
    cJSON *levels = cJSON_CreateIntArray(ds->levels.levels, ds->levels.num_levels);
    char *levels_s = cJSON_PrintUnformatted(levels);
    cJSON_Delete(levels);
    ls_status st = ls_model_set_meta(m, "class_names", names, err);
    if (st == LS_OK) st = ls_model_set_meta(m, "mask_levels", levels_s, err);
    free(names);
    free(levels_s);
    snprintf(buf, sizeof buf, "%dx%d", o->size, o->size);
    if (st == LS_OK) st = ls_model_set_meta(m, "input_size", buf, err);
    if (st == LS_OK) st = ls_model_set_meta(m, "image_mean", "[0.485,0.456,0.406]", err);
    if (st == LS_OK) st = ls_model_set_meta(m, "image_std", "[0.229,0.224,0.225]", err);
    if (st == LS_OK)
        st = ls_model_set_meta(m, "preprocessing", "RGB, resized to input_size with PIL-style "
                               "bilinear, v/255, (v - image_mean) / image_std, NCHW float32",
                               err);
    cJSON *prov = cJSON_CreateObject();
    cJSON *data = cJSON_AddArrayToObject(prov, "data");
    for (int d = 0; d < o->ndata; d++) {
        char *full = realpath(o->data[d], NULL);
        cJSON_AddItemToArray(data, cJSON_CreateString(full ? full : o->data[d]));
        free(full);
    }
    cJSON_AddStringToObject(prov, "train_split", split_name(o->train_split));
    cJSON_AddStringToObject(prov, "val_split", split_name(o->val_split));
    cJSON_AddStringToObject(prov, "command", command);
    time_t now = time(NULL);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    cJSON_AddStringToObject(prov, "created", buf);
    cJSON_AddStringToObject(prov, "software", "leukoseg");
    char *prov_s = cJSON_PrintUnformatted(prov);
    cJSON_Delete(prov);
    if (st == LS_OK) st = ls_model_set_meta(m, "provenance", prov_s, err);
    free(prov_s);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* Checkpoints: the model file plus AdamW moments and the training state                       */
/* ------------------------------------------------------------------------------------------ */

static ls_status save_checkpoint(const char *path, ls_model *m, const ls_adamw *opt,
                                 const train_state *ts, ls_error *err)
{
    /* The model file format, with two flat F32 tensors for the moments and a state entry. */
    cJSON *state = cJSON_CreateObject();
    cJSON_AddNumberToObject(state, "step", (double)ts->step);
    cJSON_AddNumberToObject(state, "best_epoch", ts->best_epoch);
    cJSON_AddNumberToObject(state, "best_miou", ts->best_miou);
    cJSON_AddNumberToObject(state, "bad_epochs", ts->bad_epochs);
    cJSON_AddItemToObject(state, "history", cJSON_Duplicate(ts->history, 1));
    cJSON_AddItemToObject(state, "args", cJSON_Duplicate(ts->args, 1));
    char *state_s = cJSON_PrintUnformatted(state);
    cJSON_Delete(state);
    ls_status st = ls_model_set_meta(m, "train_state", state_s, err);
    free(state_s);
    if (st != LS_OK) return st;
    char model_tmp[4096];
    snprintf(model_tmp, sizeof model_tmp, "%s.model", path);
    st = ls_model_save(m, model_tmp, err);
    if (st != LS_OK) return st;
    ls_tensor_file tf;
    st = ls_safetensors_load(model_tmp, &tf, err);
    remove(model_tmp);
    if (st != LS_OK) return st;
    ls_named_tensor *grown = realloc(tf.tensors, sizeof *grown * (tf.n + 2));
    if (!grown) {
        ls_tensor_file_free(&tf);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory writing %s", path);
    }
    tf.tensors = grown;
    const char *names[2] = {"optimizer.adamw.exp_avg", "optimizer.adamw.exp_avg_sq"};
    float *moments[2] = {opt->m, opt->v};
    for (int k = 0; k < 2; k++) {
        ls_named_tensor *t = &tf.tensors[tf.n + k];
        memset(t, 0, sizeof *t);
        t->name = (char *)names[k];
        t->array.dtype = LS_F32;
        t->array.ndim = 1;
        t->array.shape[0] = (int64_t)m->nweights;
        t->array.data = moments[k];
    }
    tf.n += 2;
    st = ls_safetensors_save(path, &tf, err);
    /* The two added entries point at our own memory: detach them before freeing the rest. */
    tf.n -= 2;
    ls_tensor_file_free(&tf);
    return st;
}

static ls_status load_checkpoint(const char *path, ls_model *m, ls_adamw *opt, train_state *ts,
                                 ls_error *err)
{
    ls_status st = ls_model_load_weights(m, path, 0, NULL, 0, err);
    if (st != LS_OK) return st;
    ls_tensor_file tf;
    st = ls_safetensors_load(path, &tf, err);
    if (st != LS_OK) return st;
    const ls_named_tensor *mt = ls_tensor_file_find(&tf, "optimizer.adamw.exp_avg");
    const ls_named_tensor *vt = ls_tensor_file_find(&tf, "optimizer.adamw.exp_avg_sq");
    const char *state_s = ls_tensor_file_meta(&tf, "train_state");
    cJSON *state = state_s ? cJSON_Parse(state_s) : NULL;
    if (!mt || !vt || ls_array_numel(&mt->array) != m->nweights ||
        ls_array_numel(&vt->array) != m->nweights || !state) {
        cJSON_Delete(state);
        ls_tensor_file_free(&tf);
        return ls_fail(err, LS_ERR_FORMAT, "%s is not a training checkpoint of this model (AdamW "
                       "moments or train_state missing); resume from the .ckpt file", path);
    }
    memcpy(opt->m, mt->array.data, sizeof(float) * m->nweights);
    memcpy(opt->v, vt->array.data, sizeof(float) * m->nweights);
    const cJSON *e;
    ts->step = (e = cJSON_GetObjectItem(state, "step")) ? (long)e->valuedouble : 0;
    ts->best_epoch = (e = cJSON_GetObjectItem(state, "best_epoch")) ? e->valueint : 0;
    ts->best_miou = (e = cJSON_GetObjectItem(state, "best_miou")) ? e->valuedouble : -1.0;
    ts->bad_epochs = (e = cJSON_GetObjectItem(state, "bad_epochs")) ? e->valueint : 0;
    cJSON *hist = cJSON_DetachItemFromObject(state, "history");
    if (hist) {
        cJSON_Delete(ts->history);
        ts->history = hist;
    }
    opt->step = ts->step;
    for (int i = 0; i < tf.n_meta; i++)
        if (strcmp(tf.meta_keys[i], "config") && strcmp(tf.meta_keys[i], "train_state"))
            ls_model_set_meta(m, tf.meta_keys[i], tf.meta_values[i], NULL);
    cJSON_Delete(state);
    ls_tensor_file_free(&tf);
    return LS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* The loop                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Images per dataset folder (source); returns the number of sources (at most 64). */
static int source_counts(const ls_dataset *ds, int *counts)
{
    int sources = 0;
    memset(counts, 0, sizeof(int) * 64);
    for (int i = 0; i < ds->n; i++) {
        int s = ds->samples[i].source & 63;
        counts[s]++;
        if (s + 1 > sources) sources = s + 1;
    }
    return sources;
}

/* Samples drawn per epoch: every image once, or with --balance as many from each non-empty
 * source as the largest one holds, so a small folder is not drowned out. */
static int epoch_length(const ls_dataset *ds, int balance, int *per_source)
{
    int counts[64], sources = source_counts(ds, counts), largest = 0, used = 0;
    for (int s = 0; s < sources; s++) {
        if (counts[s] > largest) largest = counts[s];
        used += counts[s] > 0;
    }
    if (per_source) *per_source = largest;
    return balance ? largest * used : ds->n;
}

/* The epoch's sample order, from an rng seeded by (seed, epoch). With balance, each source's
 * images are cycled up to the largest source's count before the shuffle. */
static void epoch_order(int *order, const ls_dataset *ds, int balance, int seed, int epoch)
{
    ls_rng rng;
    ls_rng_seed(&rng, ((uint64_t)seed << 32) ^ (uint64_t)epoch ^ 0x5EEDull);
    int n = 0, per_source, counts[64], sources = source_counts(ds, counts);
    int len = epoch_length(ds, balance, &per_source);
    for (int s = 0; s < (balance ? sources : 1); s++) {
        int first = n;
        for (int i = 0; i < ds->n; i++)
            if (!balance || (ds->samples[i].source & 63) == s) order[n++] = i;
        for (int k = n - first; balance && n > first && k < per_source; k++)
            order[n++] = order[first + k % counts[s]];
    }
    for (int i = len - 1; i > 0; i--) {
        int j = ls_rng_int(&rng, i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

static void log_json(FILE *log, cJSON *record)
{
    if (!log) return;
    char *s = cJSON_PrintUnformatted(record);
    fprintf(log, "%s\n", s);
    fflush(log);
    free(s);
}

static void print_summary(const ls_model *m, const train_options *o, const loaded_set *train,
                          const loaded_set *val, size_t ws_bytes, int threads)
{
    const ls_config *c = &m->cfg;
    fprintf(stderr, "leukoseg train: SegFormer-%s, %d classes, %zu parameters\n", c->variant,
            c->num_labels, m->nweights);
    fprintf(stderr, "  data: %d training images (%s), %d validation images (%s)\n", train->ds.n,
            split_name(o->train_split), val->ds.n, split_name(o->val_split));
    int h = o->size;
    for (int i = 0; i < 4; i++) {
        h = (h + 2 * (c->patch[i] / 2) - c->patch[i]) / c->stride[i] + 1;
        fprintf(stderr, "  stage %d: %3d channels, %d blocks, %d heads, sr %d, tokens %dx%d\n",
                i + 1, c->hidden[i], c->depths[i], c->heads[i], c->sr[i], h, h);
    }
    fprintf(stderr, "  input %dx%d, batch %d, lr %g (head x%g), wd %g, warm-up %d, epochs <= %d, "
            "patience %d, seed %d, threads %d\n", o->size, o->size, o->batch, o->lr,
            o->head_lr_mult, o->weight_decay, o->warmup, o->epochs, o->patience, o->seed, threads);
    double params_mb = m->nweights * 4.0 * 4 / 1048576.0;
    fprintf(stderr, "  memory: %.1f MiB parameters+gradients+AdamW, %.1f MiB activations\n",
            params_mb, ws_bytes / 1048576.0);
}

static char *command_line(int argc, char **argv)
{
    size_t len = 16;
    for (int i = 0; i < argc; i++) len += strlen(argv[i]) + 3;
    char *s = malloc(len);
    if (!s) return NULL;
    strcpy(s, "leukoseg");
    for (int i = 0; i < argc; i++) {
        strcat(s, " ");
        int quote = strchr(argv[i], ' ') != NULL;
        if (quote) strcat(s, "'");
        strcat(s, argv[i]);
        if (quote) strcat(s, "'");
    }
    return s;
}

typedef struct {
    const train_options *o;
    ls_model *m;
    ls_workspace *ws;
    ls_adamw *opt;
    loaded_set *train, *val;
    FILE *log;
    float *x;
    uint8_t *labels;
    int *order;
    int epoch_len;
} trainer;

/* One optimiser step on batch positions [first, first + batch) of this epoch's order. */
static ls_status train_step(trainer *t, int epoch, int first, float *loss, ls_error *err)
{
    const train_options *o = t->o;
    ls_rng rng;
    ls_rng_seed(&rng, ((uint64_t)o->seed << 32) ^ (uint64_t)t->opt->step ^ 0xA06ull);
    ls_augment aug = ls_augment_default(o->size);
    ls_preproc pp;
    ls_model_preproc(t->m, &pp);
    size_t plane = (size_t)o->size * o->size;
    for (int b = 0; b < o->batch; b++) {
        int idx = t->order[(first + b) % t->epoch_len];
        ls_status st = ls_augment_sample(&aug, &rng, &t->train->images[idx],
                                         &t->train->masks[idx], pp.mean, pp.std,
                                         t->x + b * 3 * plane, t->labels + b * plane, err);
        if (st != LS_OK) return st;
    }
    ls_model_zero_grad(t->m);
    ls_status st = ls_model_forward(t->m, t->ws, t->x, 1, &rng, NULL, err);
    if (st == LS_OK) st = ls_model_loss(t->m, t->ws, t->labels, o->size, o->size, loss, err);
    if (st == LS_OK) st = ls_model_backward(t->m, t->ws, err);
    if (st != LS_OK) {
        char first_file[512];
        snprintf(first_file, sizeof first_file, "%s", t->train->ds.samples[t->order[first %
                 t->epoch_len]].image_path);
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        return ls_fail(err, st, "epoch %d, step %ld (batch starting with %s): %s", epoch + 1,
                       t->opt->step, first_file, msg);
    }
    ls_adamw_step(t->opt, t->m);
    return LS_OK;
}

static ls_status validate(trainer *t, double *miou, ls_error *err)
{
    ls_confusion cm;
    ls_status st = ls_confusion_init(&cm, t->m->cfg.num_labels, err);
    if (st != LS_OK) return st;
    st = evaluate_dataset(t->m, &t->val->ds, &cm, "validating", err);
    if (st == LS_OK) {
        ls_metrics met;
        ls_metrics_compute(&cm, &met);
        *miou = met.miou;
    }
    ls_confusion_free(&cm);
    return st;
}

static ls_status run_epochs(trainer *t, train_state *ts, const char *ckpt, ls_error *err)
{
    const train_options *o = t->o;
    int n = t->epoch_len;
    int steps_per_epoch = n / o->batch > 0 ? n / o->batch : 1;
    long total_steps = (long)steps_per_epoch * o->epochs;
    double t_start = now_seconds();
    long step_at_start = ts->step;
    while (ts->step < total_steps && ts->bad_epochs < o->patience) {
        int epoch = (int)(ts->step / steps_per_epoch);
        int in_epoch = (int)(ts->step % steps_per_epoch);
        epoch_order(t->order, &t->train->ds, o->balance, o->seed, epoch);
        double loss_sum = 0.0, t_epoch = now_seconds();
        for (int s = in_epoch; s < steps_per_epoch; s++) {
            if (interrupted || (o->stop_at_step > 0 && ts->step >= o->stop_at_step)) {
                progress_done();
                ls_status st = save_checkpoint(ckpt, t->m, t->opt, ts, err);
                if (st != LS_OK) return st;
                fprintf(stderr, "%s: checkpoint saved to %s at step %ld; continue with "
                        "--resume %s\n", interrupted ? "interrupted" : "stopped", ckpt, ts->step,
                        ckpt);
                return interrupted ? LS_ERR_INTERRUPTED : LS_OK;
            }
            float lr = ls_lr_at(&t->opt->cfg, t->opt->step), loss = 0.0f;
            double t0 = now_seconds();
            ls_status st = train_step(t, epoch, s * o->batch, &loss, err);
            if (st != LS_OK) return st;
            ts->step = t->opt->step;
            loss_sum += loss;
            double dt = now_seconds() - t0, elapsed = now_seconds() - t_start;
            double rate = (ts->step - step_at_start) / (elapsed > 0 ? elapsed : 1e-9);
            double eta = (total_steps - ts->step) / (rate > 0 ? rate : 1e-9);
            cJSON *rec = cJSON_CreateObject();
            cJSON_AddStringToObject(rec, "type", "step");
            cJSON_AddNumberToObject(rec, "epoch", epoch + 1);
            cJSON_AddNumberToObject(rec, "step", (double)ts->step);
            cJSON_AddNumberToObject(rec, "loss", loss);
            cJSON_AddNumberToObject(rec, "lr", lr);
            cJSON_AddNumberToObject(rec, "img_s", o->batch / dt);
            log_json(t->log, rec);
            cJSON_Delete(rec);
            progress_line("epoch %d/%d [%d/%d] loss %.4f lr %.2e %.1f img/s ETA %dm%02ds (max)",
                          epoch + 1, o->epochs, s + 1, steps_per_epoch, loss, lr, o->batch / dt,
                          (int)(eta / 60), (int)eta % 60);
        }
        double miou = 0.0;
        ls_status st = validate(t, &miou, err);
        if (st != LS_OK) return st;
        int improved = miou > ts->best_miou;
        if (improved) {
            ts->best_miou = miou;
            ts->best_epoch = epoch + 1;
            ts->bad_epochs = 0;
        } else {
            ts->bad_epochs++;
        }
        double train_loss = loss_sum / (steps_per_epoch - in_epoch);
        cJSON *rec = cJSON_CreateObject();
        cJSON_AddStringToObject(rec, "type", "epoch");
        cJSON_AddNumberToObject(rec, "epoch", epoch + 1);
        cJSON_AddNumberToObject(rec, "step", (double)ts->step);
        cJSON_AddNumberToObject(rec, "train_loss", train_loss);
        cJSON_AddNumberToObject(rec, "val_miou", miou);
        cJSON_AddNumberToObject(rec, "seconds", now_seconds() - t_epoch);
        cJSON_AddBoolToObject(rec, "best", improved);
        log_json(t->log, rec);
        cJSON_AddItemToArray(ts->history, cJSON_Duplicate(rec, 1));
        cJSON_Delete(rec);
        fprintf(stderr, "epoch %3d  train loss %.4f  val mIoU %.4f%s\n", epoch + 1, train_loss,
                miou, improved ? "  (best, saved)" : "");
        if (improved) {
            char *hist = cJSON_PrintUnformatted(ts->history);
            st = ls_model_set_meta(t->m, "training_history", hist, err);
            free(hist);
            if (st == LS_OK) st = ls_model_save(t->m, o->out, err);
            if (st != LS_OK) return st;
        }
        st = save_checkpoint(ckpt, t->m, t->opt, ts, err);
        if (st != LS_OK) return st;
        if (ts->bad_epochs >= o->patience) {
            fprintf(stderr, "early stop: no better validation mIoU for %d epochs (best %.4f at "
                    "epoch %d)\n", o->patience, ts->best_miou, ts->best_epoch);
            break;
        }
    }
    return LS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* After training: the cell-type classifier and the test metrics, into the best model's file    */
/* ------------------------------------------------------------------------------------------ */

/* Test-split metrics of each dataset folder (source), as {"<folder>": {eval JSON}, ...}. The
 * test split is used once, here, after model selection on the validation split. */
static ls_status test_metrics_json(ls_model *m, const train_options *o, char **out,
                                   ls_error *err)
{
    ls_dataset test = {0};
    cJSON *all = cJSON_CreateObject();
    ls_status st = LS_OK;
    for (int d = 0; st == LS_OK && d < o->ndata; d++)
        st = ls_dataset_add(&test, o->data[d], LS_SPLIT_TEST, NULL, err);
    int sources = 0;
    for (int i = 0; i < test.n; i++)
        if (test.samples[i].source + 1 > sources) sources = test.samples[i].source + 1;
    for (int s = 0; st == LS_OK && s < sources; s++) {
        /* A view of this source's samples; the samples stay owned by `test`. */
        ls_dataset view = test;
        view.samples = malloc(sizeof *view.samples * (test.n > 0 ? test.n : 1));
        if (!view.samples) {
            st = ls_fail(err, LS_ERR_NOMEM, "out of memory");
            break;
        }
        view.n = 0;
        for (int i = 0; i < test.n; i++)
            if (test.samples[i].source == s) view.samples[view.n++] = test.samples[i];
        ls_confusion cm = {0};
        if (view.n > 0) st = ls_confusion_init(&cm, m->cfg.num_labels, err);
        if (st == LS_OK && view.n > 0) st = evaluate_dataset(m, &view, &cm, "testing", err);
        if (st == LS_OK && view.n > 0) {
            ls_metrics met;
            ls_metrics_compute(&cm, &met);
            char *js = metrics_json(&met, &view, view.n);
            /* Name the entry by the folder holding the images ("Dataset 1"). */
            char name[256];
            const char *path = view.samples[0].image_path, *slash = strrchr(path, '/');
            int len = slash ? (int)(slash - path) : 0;
            const char *start = path;
            for (const char *p = path; p < path + len; p++)
                if (*p == '/') start = p + 1;
            snprintf(name, sizeof name, "%.*s", (int)(path + len - start), start);
            cJSON_AddItemToObject(all, name, cJSON_Parse(js));
            fprintf(stderr, "test split of %s: %d images, mIoU %.4f, whole-cell Dice %.4f\n", name,
                    view.n, met.miou, met.whole_cell_dice);
            free(js);
        }
        ls_confusion_free(&cm);
        free(view.samples);
    }
    *out = st == LS_OK ? cJSON_PrintUnformatted(all) : NULL;
    cJSON_Delete(all);
    ls_dataset_free(&test);
    return st;
}

/* Loads the best model, fits the cell-type classifier on the training and validation images
 * (the segmentation model is already chosen; the test split stays unseen) and records the test
 * metrics, then saves it again (atomically). */
static ls_status finalize_model(const train_options *o, ls_error *err)
{
    ls_model *best = NULL;
    char *metrics = NULL;
    ls_dataset labelled = {0};
    ls_status st = ls_model_load(o->out, &best, err);
    for (int d = 0; st == LS_OK && d < o->ndata; d++) {
        st = ls_dataset_add(&labelled, o->data[d], o->train_split, o->train_list, err);
        if (st == LS_OK)
            st = ls_dataset_add(&labelled, o->data[d], o->val_split, o->val_list, err);
    }
    if (st == LS_OK) {
        cli_print_notes("train", &labelled);
        fprintf(stderr, "fitting the cell-type classifier on %d training and validation images\n",
                labelled.n);
        st = ls_celltype_train(best, &labelled, err);
    }
    ls_dataset_free(&labelled);
    if (st == LS_OK) st = test_metrics_json(best, o, &metrics, err);
    if (st == LS_OK) st = ls_model_set_meta(best, "test_metrics", metrics, err);
    if (st == LS_OK) st = ls_model_save(best, o->out, err);
    free(metrics);
    ls_model_free(best);
    return st;
}

int cmd_train(int argc, char **argv)
{
    train_options o;
    int rc = parse_train_options(argc, argv, &o);
    if (rc) return rc;
    cJSON *args = NULL;
    if (o.resume && (rc = options_from_checkpoint(argc, argv, &o, &args))) {
        cJSON_Delete(args);
        return rc;
    }
    if (!args) args = run_args(argc, argv);
#ifdef _OPENMP
    if (o.threads > 0) omp_set_num_threads(o.threads);
    int threads = omp_get_max_threads();
#else
    int threads = 1;
#endif
    ls_error err = {{0}};
    loaded_set train, val;
    ls_model *m = NULL;
    ls_workspace *ws = NULL;
    ls_adamw opt = {0};
    train_state ts = {0, 0, -1.0, 0, cJSON_CreateArray(), args};
    char *command = command_line(argc, argv);
    char ckpt[4096], log_path[4096];
    snprintf(ckpt, sizeof ckpt, "%s.ckpt", o.out);
    snprintf(log_path, sizeof log_path, "%s.log.jsonl", o.out);
    FILE *log = NULL;
    trainer t = {0};

    ls_config cfg;
    /* Check the variant before the (slow) data loading; the class count comes from the data. */
    ls_status st = ls_config_for_variant(o.variant, 3, &cfg, &err);
    if (st == LS_OK) st = load_set(&o, o.train_split, o.train_list, o.limit, &train, &err);
    else memset(&train, 0, sizeof train);
    if (st == LS_OK) st = load_set(&o, o.val_split, o.val_list, 0, &val, &err);
    else memset(&val, 0, sizeof val);
    if (st == LS_OK) st = ls_config_for_variant(o.variant, train.ds.num_classes, &cfg, &err);
    if (st == LS_OK) st = ls_model_create(&cfg, (uint64_t)o.seed, &m, &err);
    if (st == LS_OK && o.init) {
        char report[4096];
        st = ls_model_load_weights(m, o.init, 1, report, sizeof report, &err);
        if (st == LS_OK)
            fprintf(stderr, "initialised from %s%s%s", o.init,
                    report[0] ? "; kept initial:\n" : "\n", report);
    }
    if (st == LS_OK) st = set_model_metadata(m, &o, &train.ds, command ? command : "", &err);
    if (st == LS_OK) st = ls_workspace_create(m, o.batch, o.size, o.size, 1, &ws, &err);
    ls_adamw_config ac = ls_adamw_default();
    ac.lr = (float)o.lr;
    ac.head_lr_mult = (float)o.head_lr_mult;
    ac.weight_decay = (float)o.weight_decay;
    ac.warmup_iters = o.warmup;
    if (st == LS_OK) {
        int len = epoch_length(&train.ds, o.balance, NULL);
        int spe = len / o.batch > 0 ? len / o.batch : 1;
        ac.max_iters = (long)spe * o.epochs;
        st = ls_adamw_init(&opt, m, &ac, &err);
    }
    if (st == LS_OK && o.resume) {
        st = load_checkpoint(o.resume, m, &opt, &ts, &err);
        if (st == LS_OK && ts.best_epoch > 0)
            fprintf(stderr, "resuming from %s at step %ld (best val mIoU %.4f at epoch %d)\n",
                    o.resume, ts.step, ts.best_miou, ts.best_epoch);
        else if (st == LS_OK)
            fprintf(stderr, "resuming from %s at step %ld (no validation yet)\n", o.resume,
                    ts.step);
    }
    if (st == LS_OK) {
        char *slash = strrchr(o.out, '/');
        if (slash) {
            char dir[4096];
            snprintf(dir, sizeof dir, "%.*s", (int)(slash - o.out), o.out);
            st = make_dirs(dir, &err);
        }
    }
    if (st == LS_OK && !(log = fopen(log_path, o.resume ? "a" : "w")))
        st = ls_fail(&err, LS_ERR_IO, "cannot write the training log %s", log_path);
    if (st == LS_OK) {
        print_summary(m, &o, &train, &val, ls_workspace_bytes(ws), threads);
        t = (trainer){&o, m, ws, &opt, &train, &val, log, NULL, NULL, NULL, 0};
        t.x = malloc(sizeof(float) * 3 * o.batch * o.size * o.size);
        t.labels = malloc((size_t)o.batch * o.size * o.size);
        t.epoch_len = epoch_length(&train.ds, o.balance, NULL);
        t.order = malloc(sizeof(int) * t.epoch_len);
        if (!t.x || !t.labels || !t.order) st = ls_fail(&err, LS_ERR_NOMEM, "out of memory");
    }
    if (st == LS_OK) {
        signal(SIGINT, on_sigint);
        st = run_epochs(&t, &ts, ckpt, &err);
        signal(SIGINT, SIG_DFL);
    }
    int finished = st == LS_OK && !(o.stop_at_step > 0 && ts.step >= o.stop_at_step);
    if (finished && !o.no_finalize) st = finalize_model(&o, &err);
    if (finished && st == LS_OK)
        fprintf(stderr, "done: best validation mIoU %.4f at epoch %d, model in %s\n", ts.best_miou,
                ts.best_epoch, o.out);
    rc = st == LS_OK ? 0 : st == LS_ERR_INTERRUPTED ? 130 : cli_error("train", &err);
    if (log) fclose(log);
    free(t.x);
    free(t.labels);
    free(t.order);
    free(command);
    cJSON_Delete(ts.history);
    cJSON_Delete(ts.args);
    ls_adamw_free(&opt);
    ls_workspace_free(ws);
    ls_model_free(m);
    free_set(&train);
    free_set(&val);
    return rc;
}
