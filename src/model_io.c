/* Model files: safetensors with HuggingFace tensor names, the configuration and everything needed
 * to use the model alone in the __metadata__ map. Foreign name schemes (a "module." prefix, the
 * original mmseg/NVlabs names) are mapped to HF names when loading. */
#include "model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BN_PREFIX "decode_head.batch_norm."

/* ------------------------------------------------------------------------------------------ */
/* Configuration <-> JSON (HF SegformerConfig field names)                                     */
/* ------------------------------------------------------------------------------------------ */

static void add_int_array(cJSON *obj, const char *key, const int *v)
{
    cJSON_AddItemToObject(obj, key, cJSON_CreateIntArray(v, 4));
}

static char *config_to_json(const ls_config *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "variant", c->variant);
    cJSON_AddNumberToObject(o, "num_channels", c->num_channels);
    add_int_array(o, "hidden_sizes", c->hidden);
    add_int_array(o, "depths", c->depths);
    add_int_array(o, "num_attention_heads", c->heads);
    add_int_array(o, "sr_ratios", c->sr);
    add_int_array(o, "patch_sizes", c->patch);
    add_int_array(o, "strides", c->stride);
    cJSON_AddNumberToObject(o, "mlp_ratio", c->mlp_ratio);
    cJSON_AddNumberToObject(o, "decoder_hidden_size", c->decoder_hidden);
    cJSON_AddNumberToObject(o, "num_labels", c->num_labels);
    cJSON_AddNumberToObject(o, "drop_path_rate", c->drop_path_rate);
    cJSON_AddNumberToObject(o, "classifier_dropout_prob", c->classifier_dropout);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static int read_int_array(const cJSON *o, const char *key, int *v)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != 4) return 0;
    for (int i = 0; i < 4; i++) {
        const cJSON *e = cJSON_GetArrayItem(a, i);
        if (!cJSON_IsNumber(e)) return 0;
        v[i] = e->valueint;
    }
    return 1;
}

static int read_int(const cJSON *o, const char *key, int *v)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(e)) return 0;
    *v = e->valueint;
    return 1;
}

ls_status ls_config_from_json(const char *json, ls_config *c, const char *path, ls_error *err)
{
    cJSON *o = cJSON_Parse(json);
    memset(c, 0, sizeof *c);
    int ok = o != NULL;
    ok = ok && read_int_array(o, "hidden_sizes", c->hidden);
    ok = ok && read_int_array(o, "depths", c->depths);
    ok = ok && read_int_array(o, "num_attention_heads", c->heads);
    ok = ok && read_int_array(o, "sr_ratios", c->sr);
    ok = ok && read_int_array(o, "patch_sizes", c->patch);
    ok = ok && read_int_array(o, "strides", c->stride);
    ok = ok && read_int(o, "decoder_hidden_size", &c->decoder_hidden);
    ok = ok && read_int(o, "num_labels", &c->num_labels);
    if (ok) {
        c->num_channels = 3;
        c->mlp_ratio = 4;
        read_int(o, "num_channels", &c->num_channels);
        read_int(o, "mlp_ratio", &c->mlp_ratio);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "variant");
        snprintf(c->variant, sizeof c->variant, "%s",
                 cJSON_IsString(v) ? v->valuestring : "custom");
        const cJSON *dp = cJSON_GetObjectItemCaseSensitive(o, "drop_path_rate");
        const cJSON *cd = cJSON_GetObjectItemCaseSensitive(o, "classifier_dropout_prob");
        c->drop_path_rate = cJSON_IsNumber(dp) ? (float)dp->valuedouble : 0.1f;
        c->classifier_dropout = cJSON_IsNumber(cd) ? (float)cd->valuedouble : 0.1f;
    }
    cJSON_Delete(o);
    if (!ok)
        return ls_fail(err, LS_ERR_FORMAT, "%s: the 'config' metadata is not a SegFormer "
                       "configuration (needs hidden_sizes, depths, num_attention_heads, sr_ratios, "
                       "patch_sizes, strides, decoder_hidden_size, num_labels)", path);
    return LS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Saving                                                                                      */
/* ------------------------------------------------------------------------------------------ */

static void set_tensor(ls_named_tensor *t, const char *name, ls_dtype dtype, int ndim,
                       const int *shape, void *data)
{
    t->name = (char *)name;
    t->array.dtype = dtype;
    t->array.ndim = ndim;
    for (int i = 0; i < ndim; i++) t->array.shape[i] = shape[i];
    t->array.data = data;
}

ls_status ls_model_save(const ls_model *m, const char *path, ls_error *err)
{
    int n = m->nparams + 3 + m->nextra, d = m->cfg.decoder_hidden;
    ls_named_tensor *tensors = calloc(n, sizeof *tensors);
    char *config = config_to_json(&m->cfg);
    char **keys = calloc(m->nmeta + 2, sizeof *keys);
    char **values = calloc(m->nmeta + 2, sizeof *values);
    if (!tensors || !config || !keys || !values) {
        free(tensors);
        free(config);
        free(keys);
        free(values);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory saving %s", path);
    }
    for (int i = 0; i < m->nparams; i++) {
        const ls_param *p = &m->params[i];
        set_tensor(&tensors[i], p->name, LS_F32, p->ndim, p->shape, m->w + p->offset);
    }
    int64_t batches = m->bn_batches;
    set_tensor(&tensors[m->nparams], BN_PREFIX "running_mean", LS_F32, 1, &d, m->bn_mean);
    set_tensor(&tensors[m->nparams + 1], BN_PREFIX "running_var", LS_F32, 1, &d, m->bn_var);
    set_tensor(&tensors[m->nparams + 2], BN_PREFIX "num_batches_tracked", LS_I64, 0, NULL,
               &batches);
    for (int i = 0; i < m->nextra; i++) {
        tensors[m->nparams + 3 + i].name = m->extra_name[i];
        tensors[m->nparams + 3 + i].array = m->extra[i];
    }
    int nmeta = 0;
    keys[nmeta] = "format";
    values[nmeta++] = "pt";
    keys[nmeta] = "config";
    values[nmeta++] = config;
    for (int i = 0; i < m->nmeta; i++) {
        if (!strcmp(m->meta_key[i], "format") || !strcmp(m->meta_key[i], "config")) continue;
        keys[nmeta] = m->meta_key[i];
        values[nmeta++] = m->meta_value[i];
    }
    ls_tensor_file tf = {tensors, n, keys, values, nmeta};
    ls_status st = ls_safetensors_save(path, &tf, err);
    free(tensors);
    free(config);
    free(keys);
    free(values);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* Name schemes                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* Replaces the first occurrence of `from` in s (capacity cap) by `to`. */
static int replace_once(char *s, size_t cap, const char *from, const char *to)
{
    char *at = strstr(s, from);
    if (!at) return 0;
    size_t lf = strlen(from), lt = strlen(to), ls = strlen(s);
    if (ls - lf + lt + 1 > cap) return 0;
    memmove(at + lt, at + lf, ls - (size_t)(at - s) - lf + 1);
    memcpy(at, to, lt);
    return 1;
}

/* "<word><digit>" -> "<new>.<digit-1>", for the 1-based indices of the original names. */
static void renumber(char *s, size_t cap, const char *word, const char *new_word)
{
    char *at = strstr(s, word);
    if (!at) return;
    char digit = at[strlen(word)];
    if (digit < '1' || digit > '9') return;
    char from[48], to[48];
    snprintf(from, sizeof from, "%s%c", word, digit);
    snprintf(to, sizeof to, "%s.%c", new_word, digit - 1);
    replace_once(s, cap, from, to);
}

/* Maps a tensor name of another scheme to its HF name (HF convert_segformer_original_to_pytorch
 * rename_keys). Returns 0 for names that have no HF counterpart (conv_seg). */
static int map_name(const char *in, char *out, size_t cap)
{
    snprintf(out, cap, "%s", strncmp(in, "module.", 7) == 0 ? in + 7 : in);
    if (strncmp(out, "backbone.", 9) != 0 && strncmp(out, "decode_head.linear_c", 20) != 0 &&
        strncmp(out, "decode_head.linear_pred", 23) != 0 &&
        strncmp(out, "decode_head.linear_fuse.", 24) != 0 &&
        strncmp(out, "decode_head.conv_seg", 20) != 0)
        return 1;
    if (strstr(out, "conv_seg")) return 0;
    replace_once(out, cap, "backbone.", "segformer.encoder.");
    renumber(out, cap, "patch_embed", "patch_embeddings");
    if (!strstr(out, "linear_fuse.bn")) {
        renumber(out, cap, "encoder.norm", "encoder.layer_norm");
        replace_once(out, cap, ".norm1.", ".layer_norm_1.");
        replace_once(out, cap, ".norm2.", ".layer_norm_2.");
        replace_once(out, cap, ".attn.norm.", ".attention.self.layer_norm.");
        replace_once(out, cap, ".norm.", ".layer_norm.");
    }
    renumber(out, cap, "block", "block");
    replace_once(out, cap, "attn.q.", "attention.self.query.");
    replace_once(out, cap, "attn.proj.", "attention.output.dense.");
    replace_once(out, cap, "attn.", "attention.self.");
    replace_once(out, cap, ".fc1.", ".dense1.");
    replace_once(out, cap, ".fc2.", ".dense2.");
    replace_once(out, cap, "linear_pred", "classifier");
    replace_once(out, cap, "linear_fuse.conv.", "linear_fuse.");
    replace_once(out, cap, "linear_fuse.bn.", "batch_norm.");
    renumber(out, cap, "linear_c", "linear_c");
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Loading                                                                                     */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    const ls_named_tensor *t;
    char hf_name[160];
    int row_begin, rows; /* for a split original kv tensor: the rows this name takes */
} source_tensor;

/* Finds the file tensor for an HF name, mapping schemes and splitting original "kv" tensors
 * (rows [0, C) are the key, [C, 2C) the value). */
static int find_source(const ls_tensor_file *tf, const char *want, source_tensor *src)
{
    char mapped[160];
    for (int i = 0; i < tf->n; i++) {
        if (!map_name(tf->tensors[i].name, mapped, sizeof mapped)) continue;
        src->t = &tf->tensors[i];
        src->row_begin = 0;
        src->rows = -1;
        if (strcmp(mapped, want) == 0) return 1;
        char *kv = strstr(mapped, "attention.self.kv.");
        if (!kv) continue;
        const char *suffix = kv + strlen("attention.self.kv.");
        for (int half = 0; half < 2; half++) {
            char split[160];
            snprintf(split, sizeof split, "%.*s%s.%s", (int)(kv - mapped), mapped,
                     half ? "attention.self.value" : "attention.self.key", suffix);
            if (strcmp(split, want) == 0) {
                int rows = (int)(src->t->array.ndim > 0 ? src->t->array.shape[0] / 2 : 0);
                src->row_begin = half * rows;
                src->rows = rows;
                return 1;
            }
        }
    }
    return 0;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "",
                                 (long long)shape[i]);
    if (used < cap) snprintf(buf + used, cap - used, "]");
}

/* Copies one tensor if its shape matches the parameter. Returns 1 on a match. */
static int copy_if_matches(float *dst, const ls_param *p, const source_tensor *src)
{
    const ls_array *a = &src->t->array;
    if (a->dtype != LS_F32) return 0;
    int64_t shape[8];
    for (int i = 0; i < a->ndim; i++) shape[i] = a->shape[i];
    if (src->rows >= 0) shape[0] = src->rows;
    if (a->ndim != p->ndim) return 0;
    for (int i = 0; i < p->ndim; i++)
        if (shape[i] != p->shape[i]) return 0;
    size_t row = p->numel / (size_t)(p->ndim ? p->shape[0] : 1);
    memcpy(dst, (const float *)a->data + (size_t)src->row_begin * row, p->numel * sizeof(float));
    return 1;
}

static void report_add(char *report, size_t cap, const char *fmt, const char *name,
                       const char *detail)
{
    if (!report || !cap) return;
    size_t used = strlen(report);
    if (used + 1 < cap) snprintf(report + used, cap - used, fmt, name, detail);
}

static ls_status load_weights_from(ls_model *m, const ls_tensor_file *tf, const char *path,
                                   int allow_skip, char *report, size_t report_len, ls_error *err)
{
    if (report && report_len) report[0] = '\0';
    for (int i = 0; i < m->nparams; i++) {
        const ls_param *p = &m->params[i];
        source_tensor src;
        char want[160], have[160];
        int64_t pshape[4];
        for (int k = 0; k < p->ndim; k++) pshape[k] = p->shape[k];
        shape_str(want, sizeof want, p->ndim, pshape);
        if (!find_source(tf, p->name, &src)) {
            if (!allow_skip)
                return ls_fail(err, LS_ERR_SHAPE, "%s: tensor %s %s is missing; is this a "
                               "SegFormer file of the same variant?", path, p->name, want);
            report_add(report, report_len, "missing %s %s\n", p->name, want);
            continue;
        }
        if (copy_if_matches(m->w + p->offset, p, &src)) continue;
        shape_str(have, sizeof have, src.t->array.ndim, src.t->array.shape);
        if (!allow_skip)
            return ls_fail(err, LS_ERR_SHAPE, "%s: tensor %s has shape %s in the file but %s in "
                           "the model (another variant or class count?)", path, p->name, have,
                           want);
        report_add(report, report_len, "skipped %s (file %s)\n", p->name, have);
    }
    int d = m->cfg.decoder_hidden;
    const ls_named_tensor *rm = NULL, *rv = NULL, *nb = NULL;
    for (int i = 0; i < tf->n; i++) {
        char mapped[160];
        if (!map_name(tf->tensors[i].name, mapped, sizeof mapped)) continue;
        if (!strcmp(mapped, BN_PREFIX "running_mean")) rm = &tf->tensors[i];
        if (!strcmp(mapped, BN_PREFIX "running_var")) rv = &tf->tensors[i];
        if (!strcmp(mapped, BN_PREFIX "num_batches_tracked")) nb = &tf->tensors[i];
    }
    int stats_ok = rm && rv && rm->array.dtype == LS_F32 && rv->array.dtype == LS_F32 &&
                   ls_array_numel(&rm->array) == (size_t)d &&
                   ls_array_numel(&rv->array) == (size_t)d;
    if (stats_ok) {
        memcpy(m->bn_mean, rm->array.data, sizeof(float) * d);
        memcpy(m->bn_var, rv->array.data, sizeof(float) * d);
    } else if (!allow_skip) {
        return ls_fail(err, LS_ERR_SHAPE, "%s: BatchNorm running statistics (%srunning_mean/var "
                       "[%d]) are missing or mis-shaped", path, BN_PREFIX, d);
    } else {
        report_add(report, report_len, "missing %s%s\n", BN_PREFIX, "running stats");
    }
    /* num_batches_tracked is optional (spec §3). */
    if (nb && nb->array.dtype == LS_I64 && ls_array_numel(&nb->array) == 1)
        m->bn_batches = *(const int64_t *)nb->array.data;
    return LS_OK;
}

/* Index of the first NaN or Inf of a float tensor (F32 or F64), or its element count when all
 * are finite or it holds no floats. *value receives the offending value. */
static size_t first_non_finite(const ls_array *a, double *value)
{
    size_t n = ls_array_numel(a);
    if (a->dtype != LS_F32 && a->dtype != LS_F64) return n;
    for (size_t i = 0; i < n; i++) {
        double v = a->dtype == LS_F32 ? ((const float *)a->data)[i]
                                      : ((const double *)a->data)[i];
        if (!isfinite(v)) {
            *value = v;
            return i;
        }
    }
    return n;
}

/* Every float tensor of a model file must be finite: a single NaN or Inf (a damaged file, or one
 * saved from a diverged run) otherwise loads silently and makes every prediction or confidence
 * computed from it NaN. The cell_classifier.* tensors and optimiser moments are checked too. */
static ls_status check_finite(const ls_tensor_file *tf, const char *path, ls_error *err)
{
    for (int i = 0; i < tf->n; i++) {
        double v = 0;
        size_t n = ls_array_numel(&tf->tensors[i].array);
        size_t bad = first_non_finite(&tf->tensors[i].array, &v);
        if (bad < n)
            return ls_fail(err, LS_ERR_FORMAT, "%s: tensor %s holds %s at element %zu of %zu: "
                           "the file is corrupt (or was saved from a diverged training run); "
                           "restore it from a good copy or retrain the model", path,
                           tf->tensors[i].name, v != v ? "NaN" : v > 0 ? "+Inf" : "-Inf", bad,
                           n);
    }
    return LS_OK;
}

/* Reads a model file's tensors and checks they are finite; tf is freed on failure. */
static ls_status load_tensor_file(const char *path, ls_tensor_file *tf, ls_error *err)
{
    ls_status st = ls_safetensors_load(path, tf, err);
    if (st != LS_OK) return st;
    st = check_finite(tf, path, err);
    if (st != LS_OK) ls_tensor_file_free(tf);
    return st;
}

ls_status ls_model_load_weights(ls_model *m, const char *path, int allow_skip, char *report,
                                size_t report_len, ls_error *err)
{
    ls_tensor_file tf;
    ls_status st = load_tensor_file(path, &tf, err);
    if (st != LS_OK) return st;
    st = load_weights_from(m, &tf, path, allow_skip, report, report_len, err);
    ls_tensor_file_free(&tf);
    return st;
}

/* For a plain HF file without our metadata: the configuration from the tensor shapes, with the
 * standard head counts of the MiT family (HF's default), and the variant name when it is one. */
static ls_status infer_config(const ls_tensor_file *tf, const char *path, ls_config *c,
                              ls_error *err)
{
    const ls_named_tensor *cls = ls_tensor_file_find(tf, "decode_head.classifier.weight");
    const ls_named_tensor *lin = ls_tensor_file_find(tf, "decode_head.linear_c.0.proj.weight");
    if (!cls || cls->array.ndim != 4 || !lin || lin->array.ndim != 2)
        return ls_fail(err, LS_ERR_FORMAT, "%s: not a SegFormer segmentation model with HF names "
                       "(no 'config' metadata, no config.json beside it, and no "
                       "decode_head.classifier/linear_c tensors)", path);
    ls_status st = ls_config_for_variant("b0", (int)cls->array.shape[0], c, err);
    if (st != LS_OK) return st;
    char name[96];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "segformer.encoder.patch_embeddings.%d.proj.weight", i);
        const ls_named_tensor *pe = ls_tensor_file_find(tf, name);
        if (!pe || pe->array.ndim != 4)
            return ls_fail(err, LS_ERR_FORMAT, "%s: tensor %s is missing or not 4-D", path, name);
        c->hidden[i] = (int)pe->array.shape[0];
        int depth = 0;
        for (;;) {
            snprintf(name, sizeof name, "segformer.encoder.block.%d.%d.layer_norm_1.weight", i,
                     depth);
            if (!ls_tensor_file_find(tf, name)) break;
            depth++;
        }
        if (depth < 1 || depth > LS_MAX_DEPTH)
            return ls_fail(err, LS_ERR_FORMAT, "%s: stage %d has %d blocks", path, i, depth);
        c->depths[i] = depth;
    }
    c->decoder_hidden = (int)lin->array.shape[0];
    static const int depth3[6] = {2, 2, 6, 18, 27, 40};
    snprintf(c->variant, sizeof c->variant, "custom");
    for (int v = 0; v < 6; v++) {
        ls_config ref;
        char vname[3] = {'b', (char)('0' + v), 0};
        if (ls_config_for_variant(vname, c->num_labels, &ref, NULL) == LS_OK &&
            !memcmp(ref.hidden, c->hidden, sizeof ref.hidden) && c->depths[2] == depth3[v] &&
            !memcmp(ref.depths, c->depths, sizeof ref.depths))
            snprintf(c->variant, sizeof c->variant, "%s", vname);
    }
    return LS_OK;
}

/* HF keeps the configuration in a config.json beside the weights. */
static char *read_sibling_config(const char *path)
{
    char cfg_path[4096];
    const char *slash = strrchr(path, '/');
    int dir_len = slash ? (int)(slash - path) + 1 : 0;
    snprintf(cfg_path, sizeof cfg_path, "%.*sconfig.json", dir_len, path);
    FILE *f = fopen(cfg_path, "rb");
    if (!f) return NULL;
    char *text = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n > 0 && n < (1 << 20) && fseek(f, 0, SEEK_SET) == 0 && (text = malloc(n + 1))) {
            if (fread(text, 1, n, f) == (size_t)n) {
                text[n] = '\0';
            } else {
                free(text);
                text = NULL;
            }
        }
    }
    fclose(f);
    return text;
}

ls_status ls_model_load(const char *path, ls_model **out, ls_error *err)
{
    *out = NULL;
    ls_tensor_file tf;
    ls_status st = load_tensor_file(path, &tf, err);
    if (st != LS_OK) return st;
    ls_config cfg;
    const char *json = ls_tensor_file_meta(&tf, "config");
    char *sibling = json ? NULL : read_sibling_config(path);
    if (json) st = ls_config_from_json(json, &cfg, path, err);
    else if (sibling) st = ls_config_from_json(sibling, &cfg, path, err);
    else st = infer_config(&tf, path, &cfg, err);
    free(sibling);
    ls_model *m = NULL;
    /* The strict load below sets every parameter and the BatchNorm statistics. */
    if (st == LS_OK) st = ls_model_alloc(&cfg, &m, err);
    if (st == LS_OK) st = load_weights_from(m, &tf, path, 0, NULL, 0, err);
    for (int i = 0; st == LS_OK && i < tf.n_meta; i++)
        if (strcmp(tf.meta_keys[i], "config") != 0)
            st = ls_model_set_meta(m, tf.meta_keys[i], tf.meta_values[i], err);
    /* Extra tensors travel with the model: the cell classifier (src/celltype.c). */
    for (int i = 0; st == LS_OK && i < tf.n; i++)
        if (strncmp(tf.tensors[i].name, "cell_classifier.", 16) == 0)
            st = ls_model_set_extra(m, tf.tensors[i].name, &tf.tensors[i].array, err);
    ls_tensor_file_free(&tf);
    if (st != LS_OK) {
        ls_model_free(m);
        return st;
    }
    *out = m;
    return LS_OK;
}
