/* SegFormer: Mix Transformer encoder and all-MLP decode head, forward and backward.
 *
 * Sections, in the order data flows: configuration, parameters (HF state_dict names and
 * initialisation), workspace layout, overlapping patch embedding, efficient self-attention,
 * Mix-FFN, transformer block, encoder, decode head, loss, and the model-level forward/backward.
 * Token maps are channels-last [B, N, C] with n = y*W + x (HF's flatten(2).transpose(1, 2)).
 */
#include "model.h"
#include "ops.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Configuration                                                                               */
/* ------------------------------------------------------------------------------------------ */

ls_status ls_config_for_variant(const char *variant, int num_labels, ls_config *cfg,
                                ls_error *err)
{
    static const int depths[6][4] = {{2, 2, 2, 2}, {2, 2, 2, 2}, {3, 4, 6, 3},
                                     {3, 4, 18, 3}, {3, 8, 27, 3}, {3, 6, 40, 3}};
    if (!variant || strlen(variant) != 2 || variant[0] != 'b' || variant[1] < '0' ||
        variant[1] > '5')
        return ls_fail(err, LS_ERR_ARG, "unknown SegFormer variant '%s': use b0, b1, ..., b5",
                       variant ? variant : "(null)");
    if (num_labels < 1 || num_labels > 16)
        return ls_fail(err, LS_ERR_ARG, "number of classes %d is out of range 1..16", num_labels);
    int v = variant[1] - '0';
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->variant, sizeof cfg->variant, "%s", variant);
    cfg->num_channels = 3;
    int base = v == 0 ? 32 : 64;
    int mult[4] = {1, 2, 5, 8};
    static const int sr[4] = {8, 4, 2, 1}, patch[4] = {7, 3, 3, 3}, stride[4] = {4, 2, 2, 2};
    for (int i = 0; i < 4; i++) {
        cfg->hidden[i] = base * mult[i];
        cfg->depths[i] = depths[v][i];
        cfg->heads[i] = mult[i];
        cfg->sr[i] = sr[i];
        cfg->patch[i] = patch[i];
        cfg->stride[i] = stride[i];
    }
    cfg->mlp_ratio = 4;
    cfg->decoder_hidden = v <= 1 ? 256 : 768;
    cfg->num_labels = num_labels;
    cfg->drop_path_rate = 0.1f;
    cfg->classifier_dropout = 0.1f;
    return LS_OK;
}

int ls_min_input_side(const ls_config *cfg)
{
    /* Smallest side s whose stage grids all reach their sr ratio (at least one key). */
    for (int s = 1; s < 4096; s++) {
        int g = s, ok = 1;
        for (int i = 0; i < 4; i++) {
            int p = cfg->patch[i] / 2;
            g = conv_out_size(g, cfg->patch[i], cfg->stride[i], p);
            if (g < cfg->sr[i]) ok = 0;
        }
        if (ok) return s;
    }
    return 4096;
}

static ls_status check_config(const ls_config *cfg, ls_error *err)
{
    for (int i = 0; i < 4; i++) {
        if (cfg->hidden[i] <= 0 || cfg->heads[i] <= 0 || cfg->hidden[i] % cfg->heads[i] != 0)
            return ls_fail(err, LS_ERR_ARG,
                           "stage %d: hidden size %d is not a multiple of %d heads", i,
                           cfg->hidden[i], cfg->heads[i]);
        if (cfg->depths[i] < 1 || cfg->depths[i] > LS_MAX_DEPTH)
            return ls_fail(err, LS_ERR_ARG, "stage %d: depth %d is out of range 1..%d", i,
                           cfg->depths[i], LS_MAX_DEPTH);
        if (cfg->sr[i] < 1 || cfg->patch[i] < 1 || cfg->stride[i] < 1)
            return ls_fail(err, LS_ERR_ARG, "stage %d: bad sr/patch/stride", i);
    }
    if (cfg->num_labels < 1 || cfg->num_labels > 16 || cfg->decoder_hidden < 1 ||
        cfg->mlp_ratio < 1 || cfg->num_channels != 3)
        return ls_fail(err, LS_ERR_ARG, "bad configuration: %d labels, decoder %d, mlp ratio %d, "
                       "%d channels", cfg->num_labels, cfg->decoder_hidden, cfg->mlp_ratio,
                       cfg->num_channels);
    return LS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Parameters: HF state_dict names in registration order                                      */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    ls_model *m;
    int cap;
    int failed;
} param_builder;

static size_t add_param(param_builder *pb, int is_head, int no_decay, int ndim, const int *shape,
                        const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static size_t add_param(param_builder *pb, int is_head, int no_decay, int ndim, const int *shape,
                        const char *fmt, ...)
{
    ls_model *m = pb->m;
    if (m->nparams == pb->cap) {
        int cap = pb->cap ? pb->cap * 2 : 256;
        ls_param *p = realloc(m->params, sizeof *p * cap);
        if (!p) {
            pb->failed = 1;
            return 0;
        }
        m->params = p;
        pb->cap = cap;
    }
    ls_param *p = &m->params[m->nparams++];
    memset(p, 0, sizeof *p);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->name, sizeof p->name, fmt, ap);
    va_end(ap);
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->numel *= (size_t)shape[i];
    }
    p->offset = m->nweights;
    p->is_head = is_head;
    p->no_decay = no_decay;
    m->nweights += p->numel;
    return p->offset;
}

#define SHAPE(...) ((const int[]){__VA_ARGS__})
#define ENC "segformer.encoder."

static void add_layernorm(param_builder *pb, size_t *w, size_t *b, int c, const char *name)
{
    *w = add_param(pb, 0, 1, 1, SHAPE(c), "%s.weight", name);
    *b = add_param(pb, 0, 1, 1, SHAPE(c), "%s.bias", name);
}

static void add_linear(param_builder *pb, size_t *w, size_t *b, int in, int out, int is_head,
                       const char *name)
{
    *w = add_param(pb, is_head, 0, 2, SHAPE(out, in), "%s.weight", name);
    *b = add_param(pb, is_head, 0, 1, SHAPE(out), "%s.bias", name);
}

static void register_block(param_builder *pb, block_offsets *o, int c, int sr, int f,
                           const char *prefix)
{
    char name[128];
#define NAME(suffix) (snprintf(name, sizeof name, "%s.%s", prefix, suffix), name)
    add_layernorm(pb, &o->ln1_w, &o->ln1_b, c, NAME("layer_norm_1"));
    add_linear(pb, &o->q_w, &o->q_b, c, c, 0, NAME("attention.self.query"));
    add_linear(pb, &o->k_w, &o->k_b, c, c, 0, NAME("attention.self.key"));
    add_linear(pb, &o->v_w, &o->v_b, c, c, 0, NAME("attention.self.value"));
    if (sr > 1) {
        o->sr_w = add_param(pb, 0, 0, 4, SHAPE(c, c, sr, sr), "%s.attention.self.sr.weight",
                            prefix);
        o->sr_b = add_param(pb, 0, 0, 1, SHAPE(c), "%s.attention.self.sr.bias", prefix);
        add_layernorm(pb, &o->lnsr_w, &o->lnsr_b, c, NAME("attention.self.layer_norm"));
    }
    add_linear(pb, &o->o_w, &o->o_b, c, c, 0, NAME("attention.output.dense"));
    add_layernorm(pb, &o->ln2_w, &o->ln2_b, c, NAME("layer_norm_2"));
    add_linear(pb, &o->fc1_w, &o->fc1_b, c, f, 0, NAME("mlp.dense1"));
    o->dw_w = add_param(pb, 0, 0, 4, SHAPE(f, 1, 3, 3), "%s.mlp.dwconv.dwconv.weight", prefix);
    o->dw_b = add_param(pb, 0, 0, 1, SHAPE(f), "%s.mlp.dwconv.dwconv.bias", prefix);
    add_linear(pb, &o->fc2_w, &o->fc2_b, f, c, 0, NAME("mlp.dense2"));
#undef NAME
}

static void register_params(param_builder *pb)
{
    ls_model *m = pb->m;
    const ls_config *cfg = &m->cfg;
    char name[128];
    for (int i = 0; i < 4; i++) {
        stage_offsets *s = &m->stage[i];
        int cin = i == 0 ? cfg->num_channels : cfg->hidden[i - 1], c = cfg->hidden[i];
        int k = cfg->patch[i];
        s->pe_w = add_param(pb, 0, 0, 4, SHAPE(c, cin, k, k), ENC "patch_embeddings.%d.proj.weight",
                            i);
        s->pe_b = add_param(pb, 0, 0, 1, SHAPE(c), ENC "patch_embeddings.%d.proj.bias", i);
        snprintf(name, sizeof name, ENC "patch_embeddings.%d.layer_norm", i);
        add_layernorm(pb, &s->pe_ln_w, &s->pe_ln_b, c, name);
    }
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < cfg->depths[i]; j++) {
            char prefix[48];
            snprintf(prefix, sizeof prefix, ENC "block.%d.%d", i, j);
            register_block(pb, &m->stage[i].blocks[j], cfg->hidden[i], cfg->sr[i],
                           cfg->hidden[i] * cfg->mlp_ratio, prefix);
        }
    }
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, ENC "layer_norm.%d", i);
        add_layernorm(pb, &m->stage[i].ln_w, &m->stage[i].ln_b, cfg->hidden[i], name);
    }
    head_offsets *h = &m->head;
    int d = cfg->decoder_hidden;
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "decode_head.linear_c.%d.proj", i);
        add_linear(pb, &h->lin_w[i], &h->lin_b[i], cfg->hidden[i], d, 1, name);
    }
    h->fuse_w = add_param(pb, 1, 0, 4, SHAPE(d, 4 * d, 1, 1), "decode_head.linear_fuse.weight");
    h->bn_w = add_param(pb, 1, 0, 1, SHAPE(d), "decode_head.batch_norm.weight");
    h->bn_b = add_param(pb, 1, 0, 1, SHAPE(d), "decode_head.batch_norm.bias");
    h->cls_w = add_param(pb, 1, 0, 4, SHAPE(cfg->num_labels, d, 1, 1),
                         "decode_head.classifier.weight");
    h->cls_b = add_param(pb, 1, 0, 1, SHAPE(cfg->num_labels), "decode_head.classifier.bias");
}

/* HF _init_weights: Linear and Conv2d weights N(0, 0.02), biases 0; norms weight 1, bias 0. */
static void init_params(ls_model *m, uint64_t seed)
{
    ls_rng rng;
    ls_rng_seed(&rng, seed);
    for (int i = 0; i < m->nparams; i++) {
        const ls_param *p = &m->params[i];
        float *w = m->w + p->offset;
        int is_norm = strstr(p->name, "layer_norm") || strstr(p->name, "batch_norm");
        int is_bias = strstr(p->name, ".bias") != NULL;
        for (size_t k = 0; k < p->numel; k++) {
            if (is_bias) w[k] = 0.0f;
            else if (is_norm) w[k] = 1.0f;
            else w[k] = 0.02f * ls_rng_normal(&rng);
        }
    }
    for (int c = 0; c < m->cfg.decoder_hidden; c++) {
        m->bn_mean[c] = 0.0f;
        m->bn_var[c] = 1.0f;
    }
    m->bn_batches = 0;
}

ls_status ls_model_alloc(const ls_config *cfg, ls_model **out, ls_error *err)
{
    *out = NULL;
    ls_status st = check_config(cfg, err);
    if (st != LS_OK) return st;
    ls_model *m = calloc(1, sizeof *m);
    if (!m) return ls_fail(err, LS_ERR_NOMEM, "out of memory creating the model");
    m->cfg = *cfg;
    param_builder pb = {m, 0, 0};
    register_params(&pb);
    m->w = pb.failed ? NULL : calloc(m->nweights, sizeof(float));
    m->g = pb.failed ? NULL : calloc(m->nweights, sizeof(float));
    m->bn_mean = calloc(cfg->decoder_hidden, sizeof(float));
    m->bn_var = calloc(cfg->decoder_hidden, sizeof(float));
    if (!m->w || !m->g || !m->bn_mean || !m->bn_var) {
        ls_model_free(m);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory allocating model parameters");
    }
    *out = m;
    return LS_OK;
}

ls_status ls_model_create(const ls_config *cfg, uint64_t seed, ls_model **out, ls_error *err)
{
    ls_status st = ls_model_alloc(cfg, out, err);
    if (st == LS_OK) init_params(*out, seed);
    return st;
}

void ls_model_free(ls_model *m)
{
    if (!m) return;
    free(m->params);
    free(m->w);
    free(m->g);
    free(m->bn_mean);
    free(m->bn_var);
    for (int i = 0; i < m->nmeta; i++) {
        free(m->meta_key[i]);
        free(m->meta_value[i]);
    }
    ls_model_free_extras(m);
    free(m);
}

const ls_config *ls_model_config(const ls_model *m) { return &m->cfg; }
int ls_model_num_params(const ls_model *m) { return m->nparams; }
const ls_param *ls_model_param(const ls_model *m, int i) { return &m->params[i]; }
float *ls_model_weights(ls_model *m) { return m->w; }
float *ls_model_grads(ls_model *m) { return m->g; }
size_t ls_model_num_weights(const ls_model *m) { return m->nweights; }
float *ls_model_bn_running_mean(ls_model *m) { return m->bn_mean; }
float *ls_model_bn_running_var(ls_model *m) { return m->bn_var; }
int64_t ls_model_bn_batches_tracked(const ls_model *m) { return m->bn_batches; }
void ls_model_zero_grad(ls_model *m) { memset(m->g, 0, m->nweights * sizeof(float)); }

ls_status ls_model_set_meta(ls_model *m, const char *key, const char *value, ls_error *err)
{
    for (int i = 0; i < m->nmeta; i++) {
        if (strcmp(m->meta_key[i], key) == 0) {
            char *v = strdup(value);
            if (!v) return ls_fail(err, LS_ERR_NOMEM, "out of memory storing metadata '%s'", key);
            free(m->meta_value[i]);
            m->meta_value[i] = v;
            return LS_OK;
        }
    }
    if (m->nmeta == LS_MAX_META)
        return ls_fail(err, LS_ERR_ARG, "too many metadata entries (max %d)", LS_MAX_META);
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory storing metadata '%s'", key);
    }
    m->meta_key[m->nmeta] = k;
    m->meta_value[m->nmeta] = v;
    m->nmeta++;
    return LS_OK;
}

const char *ls_model_get_meta(const ls_model *m, const char *key)
{
    for (int i = 0; i < m->nmeta; i++)
        if (strcmp(m->meta_key[i], key) == 0) return m->meta_value[i];
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Workspace layout                                                                            */
/* ------------------------------------------------------------------------------------------ */

/* Bump allocator: a first pass with base == NULL only counts, the second hands out views. */
typedef struct {
    float *base;
    size_t used;
} arena;

static float *take(arena *a, size_t n)
{
    float *p = a->base ? a->base + a->used : NULL;
    a->used += (n + 15) & ~(size_t)15; /* 64-byte aligned views */
    return p;
}

static void layout_workspace(ls_workspace *ws, const ls_config *cfg, arena *a)
{
    int b = ws->batch, h = ws->h, w = ws->w, training = ws->training;
    size_t max_mc = 0, max_mrc = 0, max_mf = 0, max_probs = 0;
    int max_c = 0, max_f = 0;
    for (int i = 0; i < 4; i++) {
        stage_acts *s = &ws->stage[i];
        int c = cfg->hidden[i], f = c * cfg->mlp_ratio, k = cfg->patch[i], sr = cfg->sr[i];
        int cin = i == 0 ? cfg->num_channels : cfg->hidden[i - 1];
        s->h = conv_out_size(i == 0 ? h : ws->stage[i - 1].h, k, cfg->stride[i], k / 2);
        s->w = conv_out_size(i == 0 ? w : ws->stage[i - 1].w, k, cfg->stride[i], k / 2);
        s->n = s->h * s->w;
        s->hr = sr > 1 ? s->h / sr : s->h;
        s->wr = sr > 1 ? s->w / sr : s->w;
        s->nr = s->hr * s->wr;
        size_t m = (size_t)b * s->n, mr = (size_t)b * s->nr;
        s->pe_col = take(a, m * cin * k * k);
        s->pe_out = take(a, m * c);
        s->pe_mean = take(a, m);
        s->pe_rstd = take(a, m);
        s->tokens = take(a, m * c);
        const float *x = s->tokens;
        for (int j = 0; j < cfg->depths[i]; j++) {
            block_acts *bl = &s->blocks[j];
            bl->x_in = (float *)x;
            bl->ln1 = take(a, m * c);
            bl->ln1_mean = take(a, m);
            bl->ln1_rstd = take(a, m);
            bl->q = take(a, m * c);
            bl->sr_col = sr > 1 ? take(a, mr * c * sr * sr) : NULL;
            bl->sr_out = sr > 1 ? take(a, mr * c) : NULL;
            bl->kv_in = sr > 1 ? take(a, mr * c) : bl->ln1;
            bl->lnsr_mean = sr > 1 ? take(a, mr) : NULL;
            bl->lnsr_rstd = sr > 1 ? take(a, mr) : NULL;
            bl->k = take(a, mr * c);
            bl->v = take(a, mr * c);
            bl->probs = training ? take(a, (size_t)b * cfg->heads[i] * s->n * s->nr)
                                 : take(a, (size_t)(s->n < LS_ATTN_CHUNK ? s->n : LS_ATTN_CHUNK)
                                               * s->nr);
            bl->ctx = take(a, m * c);
            bl->x_mid = take(a, m * c);
            bl->ln2 = take(a, m * c);
            bl->ln2_mean = take(a, m);
            bl->ln2_rstd = take(a, m);
            bl->h1 = take(a, m * f);
            bl->h2 = take(a, m * f);
            bl->h3 = take(a, m * f);
            bl->x_out = take(a, m * c);
            bl->keep_attn = take(a, b);
            bl->keep_ffn = take(a, b);
            x = bl->x_out;
        }
        s->out = take(a, m * c);
        s->out_mean = take(a, m);
        s->out_rstd = take(a, m);
        s->d_out = training ? take(a, m * c) : NULL;
        size_t mc = m * c, mrc = mr * c, mf = m * f, probs = (size_t)s->n * s->nr;
        if (mc > max_mc) max_mc = mc;
        if (m * cin * k * k > max_mc) max_mc = m * cin * k * k;
        if (mrc > max_mrc) max_mrc = mrc;
        if (mf > max_mf) max_mf = mf;
        if (probs > max_probs) max_probs = probs;
        if (c > max_c) max_c = c;
        if (f > max_f) max_f = f;
    }
    int d = cfg->decoder_hidden, nl = cfg->num_labels;
    ws->h4 = ws->stage[0].h;
    ws->w4 = ws->stage[0].w;
    size_t m1 = (size_t)b * ws->h4 * ws->w4;
    for (int i = 0; i < 4; i++) ws->lin[i] = take(a, (size_t)b * ws->stage[i].n * d);
    ws->cat = training ? take(a, m1 * 4 * d) : NULL; /* inference takes the fused path */
    ws->fuse = take(a, m1 * d);
    ws->bn_mean = take(a, d);
    ws->bn_rstd = take(a, d);
    ws->bn_out = take(a, m1 * d);
    ws->relu = take(a, m1 * d);
    ws->drop_scale = training ? take(a, m1 * d) : NULL;
    ws->drop = training ? take(a, m1 * d) : NULL;
    ws->logits = take(a, m1 * nl);
    ws->dw_taps = take(a, (size_t)9 * max_f);
    ws->head_w = take(a, (size_t)d * max_c);
    ws->head_b = take(a, d);
    if (!training) return;
    ws->d_logits = take(a, m1 * nl);
    ws->g_res = take(a, max_mc);
    ws->g_u = take(a, max_mc);
    ws->g_q = take(a, max_mc);
    ws->g_ctx = take(a, max_mc);
    ws->g_tmp = take(a, max_mc);
    ws->g_col = take(a, max_mc);
    ws->g_k = take(a, max_mrc);
    ws->g_v = take(a, max_mrc);
    ws->g_m = take(a, max_mrc);
    ws->g_sr = take(a, max_mrc);
    ws->g_probs = take(a, max_probs);
    ws->g_h1 = take(a, max_mf);
    ws->g_h2 = take(a, max_mf);
    ws->g_h3 = take(a, max_mf);
    ws->g_cat = take(a, m1 * 4 * d);
    ws->g_a = take(a, m1 * d);
    ws->g_b = take(a, m1 * d);
    ws->g_lin = take(a, m1 * d);
}

ls_status ls_workspace_create(const ls_model *model, int batch, int h, int w, int training,
                              ls_workspace **out, ls_error *err)
{
    *out = NULL;
    int min_side = ls_min_input_side(&model->cfg);
    if (batch < 1) return ls_fail(err, LS_ERR_ARG, "batch size %d must be at least 1", batch);
    if (h < min_side || w < min_side)
        return ls_fail(err, LS_ERR_SHAPE, "input %dx%d is too small for SegFormer: each side must "
                       "be at least %d pixels (every stage needs one key after sequence "
                       "reduction); resize the image up", w, h, min_side);
    ls_workspace *ws = calloc(1, sizeof *ws);
    if (!ws) return ls_fail(err, LS_ERR_NOMEM, "out of memory creating a workspace");
    ws->batch = batch;
    ws->h = h;
    ws->w = w;
    ws->training = training;
    arena count = {NULL, 0};
    layout_workspace(ws, &model->cfg, &count);
    ws->arena_floats = count.used;
    ws->arena = malloc(count.used * sizeof(float));
    if (!ws->arena) {
        free(ws);
        return ls_fail(err, LS_ERR_NOMEM, "need %.1f MiB of activations for batch %d at %dx%d; "
                       "use a smaller batch or input size",
                       count.used * 4.0 / 1048576.0, batch, w, h);
    }
    arena real = {ws->arena, 0};
    layout_workspace(ws, &model->cfg, &real);
    *out = ws;
    return LS_OK;
}

void ls_workspace_free(ls_workspace *ws)
{
    if (!ws) return;
    free(ws->arena);
    free(ws->up);
    free(ws);
}

size_t ls_workspace_bytes(const ls_workspace *ws)
{
    return (ws->arena_floats + ws->up_capacity) * sizeof(float);
}

const float *ls_workspace_logits(const ls_workspace *ws, int *h4, int *w4)
{
    if (h4) *h4 = ws->h4;
    if (w4) *w4 = ws->w4;
    return ws->logits;
}

/* ------------------------------------------------------------------------------------------ */
/* Overlapping patch embedding: conv k/s/p (as im2col + matrix product), then LayerNorm        */
/* in: map view of [B, Cin, H, W] (image) or [B, H, W, Cin] (tokens); out: tokens [B*N, C]     */
/* ------------------------------------------------------------------------------------------ */

static void patch_embed_forward(ls_model *m, stage_acts *s, int i, const float *in, map_view v)
{
    const ls_config *cfg = &m->cfg;
    const stage_offsets *o = &m->stage[i];
    int c = cfg->hidden[i], k = cfg->patch[i], mrows = v.b * s->n;
    im2col(s->pe_col, in, v, k, cfg->stride[i], k / 2, s->h, s->w);
    linear_forward(s->pe_out, s->pe_col, m->w + o->pe_w, m->w + o->pe_b, mrows, v.c * k * k, c);
    layernorm_forward(s->tokens, s->pe_mean, s->pe_rstd, s->pe_out, m->w + o->pe_ln_w,
                      m->w + o->pe_ln_b, mrows, c, LS_LN_EPS);
}

/* d_tokens: gradient of the LayerNorm output; d_in (may be NULL) receives the input gradient. */
static void patch_embed_backward(ls_model *m, ls_workspace *ws, stage_acts *s, int i,
                                 const float *d_tokens, float *d_in, map_view v)
{
    const ls_config *cfg = &m->cfg;
    const stage_offsets *o = &m->stage[i];
    int c = cfg->hidden[i], k = cfg->patch[i], mrows = v.b * s->n, kk = v.c * k * k;
    float *d_pe = ws->g_tmp;
    memset(d_pe, 0, sizeof(float) * mrows * c);
    layernorm_backward(d_pe, m->g + o->pe_ln_w, m->g + o->pe_ln_b, d_tokens, s->pe_out,
                       s->pe_mean, s->pe_rstd, m->w + o->pe_ln_w, mrows, c);
    float *d_col = d_in ? ws->g_col : NULL;
    if (d_col) memset(d_col, 0, sizeof(float) * mrows * kk);
    linear_backward(d_col, m->g + o->pe_w, m->g + o->pe_b, d_pe, s->pe_col, m->w + o->pe_w,
                    mrows, kk, c);
    if (d_in) col2im_accumulate(d_in, d_col, v, k, cfg->stride[i], k / 2, s->h, s->w);
}

/* ------------------------------------------------------------------------------------------ */
/* Efficient self-attention: Q from all tokens, K/V from tokens reduced by an sr x sr conv     */
/* (+ its LayerNorm); softmax(Q K^T / sqrt(d)) V; output dense.                                */
/* u: LayerNorm-1 output [B*N, C]; result (before the residual) in ws->g-free buffer `out`.     */
/* ------------------------------------------------------------------------------------------ */

static void attention_block_forward(ls_model *m, const stage_acts *s, block_acts *bl,
                                    const block_offsets *o, int i, int batch, int keep_probs,
                                    float *out)
{
    const ls_config *cfg = &m->cfg;
    int c = cfg->hidden[i], sr = cfg->sr[i], heads = cfg->heads[i];
    int mrows = batch * s->n, mr = batch * s->nr;
    const float *w = m->w;
    linear_forward(bl->q, bl->ln1, w + o->q_w, w + o->q_b, mrows, c, c);
    if (sr > 1) {
        im2col(bl->sr_col, bl->ln1, map_nhwc(batch, s->h, s->w, c), sr, sr, 0, s->hr, s->wr);
        linear_forward(bl->sr_out, bl->sr_col, w + o->sr_w, w + o->sr_b, mr, c * sr * sr, c);
        layernorm_forward(bl->kv_in, bl->lnsr_mean, bl->lnsr_rstd, bl->sr_out, w + o->lnsr_w,
                          w + o->lnsr_b, mr, c, LS_LN_EPS);
    }
    linear_forward(bl->k, bl->kv_in, w + o->k_w, w + o->k_b, mr, c, c);
    linear_forward(bl->v, bl->kv_in, w + o->v_w, w + o->v_b, mr, c, c);
    for (int b = 0; b < batch; b++) {
        size_t tok = (size_t)b * s->n * c, red = (size_t)b * s->nr * c;
        float *probs = keep_probs ? bl->probs + (size_t)b * heads * s->n * s->nr : bl->probs;
        attention_forward(bl->ctx + tok, probs, bl->q + tok, bl->k + red, bl->v + red, s->n,
                          s->nr, c, heads, keep_probs ? 0 : LS_ATTN_CHUNK);
    }
    linear_forward(out, bl->ctx, w + o->o_w, w + o->o_b, mrows, c, c);
}

/* d_out: gradient of the attention branch output [B*N, C]; accumulates d(u) into d_u. */
static void attention_block_backward(ls_model *m, ls_workspace *ws, const stage_acts *s,
                                     const block_acts *bl, const block_offsets *o, int i,
                                     const float *d_out, float *d_u)
{
    const ls_config *cfg = &m->cfg;
    int c = cfg->hidden[i], sr = cfg->sr[i], heads = cfg->heads[i], batch = ws->batch;
    int mrows = batch * s->n, mr = batch * s->nr;
    const float *w = m->w;
    float *g = m->g;
    memset(ws->g_ctx, 0, sizeof(float) * mrows * c);
    linear_backward(ws->g_ctx, g + o->o_w, g + o->o_b, d_out, bl->ctx, w + o->o_w, mrows, c, c);
    memset(ws->g_q, 0, sizeof(float) * mrows * c);
    memset(ws->g_k, 0, sizeof(float) * mr * c);
    memset(ws->g_v, 0, sizeof(float) * mr * c);
    for (int b = 0; b < batch; b++) {
        size_t tok = (size_t)b * s->n * c, red = (size_t)b * s->nr * c;
        attention_backward(ws->g_q + tok, ws->g_k + red, ws->g_v + red, ws->g_probs,
                           ws->g_ctx + tok, bl->probs + (size_t)b * heads * s->n * s->nr,
                           bl->q + tok, bl->k + red, bl->v + red, s->n, s->nr, c, heads);
    }
    /* K and V read the reduced tokens (or u itself when sr == 1). */
    float *d_kv = sr > 1 ? ws->g_m : d_u;
    if (sr > 1) memset(d_kv, 0, sizeof(float) * mr * c);
    linear_backward(d_kv, g + o->k_w, g + o->k_b, ws->g_k, bl->kv_in, w + o->k_w, mr, c, c);
    linear_backward(d_kv, g + o->v_w, g + o->v_b, ws->g_v, bl->kv_in, w + o->v_w, mr, c, c);
    if (sr > 1) {
        memset(ws->g_sr, 0, sizeof(float) * mr * c);
        layernorm_backward(ws->g_sr, g + o->lnsr_w, g + o->lnsr_b, d_kv, bl->sr_out,
                           bl->lnsr_mean, bl->lnsr_rstd, w + o->lnsr_w, mr, c);
        int kk = c * sr * sr;
        memset(ws->g_col, 0, sizeof(float) * mr * kk);
        linear_backward(ws->g_col, g + o->sr_w, g + o->sr_b, ws->g_sr, bl->sr_col, w + o->sr_w,
                        mr, kk, c);
        col2im_accumulate(d_u, ws->g_col, map_nhwc(batch, s->h, s->w, c), sr, sr, 0, s->hr,
                          s->wr);
    }
    linear_backward(d_u, g + o->q_w, g + o->q_b, ws->g_q, bl->ln1, w + o->q_w, mrows, c, c);
}

/* ------------------------------------------------------------------------------------------ */
/* Mix-FFN: dense1 (C -> 4C), depthwise 3x3 conv, exact GELU, dense2 (4C -> C)                 */
/* ------------------------------------------------------------------------------------------ */

static void mix_ffn_forward(ls_model *m, ls_workspace *ws, const stage_acts *s, block_acts *bl,
                            const block_offsets *o, int i, float *out)
{
    const ls_config *cfg = &m->cfg;
    int c = cfg->hidden[i], f = c * cfg->mlp_ratio, batch = ws->batch, mrows = batch * s->n;
    const float *w = m->w;
    linear_forward(bl->h1, bl->ln2, w + o->fc1_w, w + o->fc1_b, mrows, c, f);
    dwconv3x3_forward(bl->h2, bl->h1, w + o->dw_w, w + o->dw_b, ws->dw_taps, batch, s->h, s->w,
                      f);
    gelu_forward(bl->h3, bl->h2, (long)mrows * f);
    linear_forward(out, bl->h3, w + o->fc2_w, w + o->fc2_b, mrows, f, c);
}

static void mix_ffn_backward(ls_model *m, ls_workspace *ws, const stage_acts *s,
                             const block_acts *bl, const block_offsets *o, int i,
                             const float *d_out, float *d_ln2)
{
    const ls_config *cfg = &m->cfg;
    int c = cfg->hidden[i], f = c * cfg->mlp_ratio, batch = ws->batch, mrows = batch * s->n;
    const float *w = m->w;
    float *g = m->g;
    size_t mf = (size_t)mrows * f;
    memset(ws->g_h3, 0, sizeof(float) * mf);
    linear_backward(ws->g_h3, g + o->fc2_w, g + o->fc2_b, d_out, bl->h3, w + o->fc2_w, mrows, f,
                    c);
    memset(ws->g_h2, 0, sizeof(float) * mf);
    gelu_backward(ws->g_h2, ws->g_h3, bl->h2, (long)mf);
    memset(ws->g_h1, 0, sizeof(float) * mf);
    dwconv3x3_backward(ws->g_h1, g + o->dw_w, g + o->dw_b, ws->g_h2, bl->h1, w + o->dw_w,
                       ws->dw_taps, batch, s->h, s->w, f);
    linear_backward(d_ln2, g + o->fc1_w, g + o->fc1_b, ws->g_h1, bl->ln2, w + o->fc1_w, mrows, c,
                    f);
}

/* ------------------------------------------------------------------------------------------ */
/* Transformer block (pre-norm): x += DropPath(Attn(LN1 x)); x += DropPath(MixFFN(LN2 x))      */
/* ------------------------------------------------------------------------------------------ */

/* Drop-path scales, one draw per sample: floor(keep + U) / keep (timm/HF drop_path). */
static void draw_drop_path(float *scale, int batch, float rate, int training, ls_rng *rng)
{
    for (int b = 0; b < batch; b++) {
        if (!training || rate <= 0.0f || !rng) {
            scale[b] = 1.0f;
            continue;
        }
        float keep = 1.0f - rate;
        scale[b] = floorf(keep + ls_rng_uniform(rng)) / keep;
    }
}

/* out[b] = x[b] + scale[b] * branch[b], over the tokens of each sample. */
static void residual_add(float *out, const float *x, const float *branch, const float *scale,
                         int batch, size_t per_sample)
{
    for (int b = 0; b < batch; b++) {
        size_t off = b * per_sample;
        float sc = scale[b];
#pragma omp parallel for schedule(static)
        for (size_t k = 0; k < per_sample; k++) out[off + k] = x[off + k] + sc * branch[off + k];
    }
}

static void block_forward(ls_model *m, ls_workspace *ws, stage_acts *s, int i, int j, float rate,
                          int training, ls_rng *rng)
{
    const ls_config *cfg = &m->cfg;
    const block_offsets *o = &m->stage[i].blocks[j];
    block_acts *bl = &s->blocks[j];
    int c = cfg->hidden[i], batch = ws->batch, mrows = batch * s->n;
    size_t per_sample = (size_t)s->n * c;
    float *branch = training ? ws->g_tmp : ws->stage[i].out; /* scratch [M, C] */
    layernorm_forward(bl->ln1, bl->ln1_mean, bl->ln1_rstd, bl->x_in, m->w + o->ln1_w,
                      m->w + o->ln1_b, mrows, c, LS_LN_EPS);
    attention_block_forward(m, s, bl, o, i, batch, ws->training, branch);
    draw_drop_path(bl->keep_attn, batch, rate, training, rng);
    residual_add(bl->x_mid, bl->x_in, branch, bl->keep_attn, batch, per_sample);
    layernorm_forward(bl->ln2, bl->ln2_mean, bl->ln2_rstd, bl->x_mid, m->w + o->ln2_w,
                      m->w + o->ln2_b, mrows, c, LS_LN_EPS);
    mix_ffn_forward(m, ws, s, bl, o, i, branch);
    draw_drop_path(bl->keep_ffn, batch, rate, training, rng);
    residual_add(bl->x_out, bl->x_mid, branch, bl->keep_ffn, batch, per_sample);
}

/* ws->g_res holds d(x_out) on entry and d(x_in) on return. */
static void block_backward(ls_model *m, ls_workspace *ws, stage_acts *s, int i, int j)
{
    const ls_config *cfg = &m->cfg;
    const block_offsets *o = &m->stage[i].blocks[j];
    const block_acts *bl = &s->blocks[j];
    int c = cfg->hidden[i], batch = ws->batch, mrows = batch * s->n;
    size_t mc = (size_t)mrows * c, per_sample = (size_t)s->n * c;
    float *d_res = ws->g_res, *d_branch = ws->g_tmp, *d_norm = ws->g_u;

    /* FFN branch: d(branch) = scale * d(x_out); the residual passes d(x_out) through. */
    for (int b = 0; b < batch; b++)
        for (size_t k = 0; k < per_sample; k++)
            d_branch[b * per_sample + k] = bl->keep_ffn[b] * d_res[b * per_sample + k];
    memset(d_norm, 0, sizeof(float) * mc);
    mix_ffn_backward(m, ws, s, bl, o, i, d_branch, d_norm);
    layernorm_backward(d_res, m->g + o->ln2_w, m->g + o->ln2_b, d_norm, bl->x_mid, bl->ln2_mean,
                       bl->ln2_rstd, m->w + o->ln2_w, mrows, c);

    /* Attention branch, same pattern. */
    for (int b = 0; b < batch; b++)
        for (size_t k = 0; k < per_sample; k++)
            d_branch[b * per_sample + k] = bl->keep_attn[b] * d_res[b * per_sample + k];
    memset(d_norm, 0, sizeof(float) * mc);
    attention_block_backward(m, ws, s, bl, o, i, d_branch, d_norm);
    layernorm_backward(d_res, m->g + o->ln1_w, m->g + o->ln1_b, d_norm, bl->x_in, bl->ln1_mean,
                       bl->ln1_rstd, m->w + o->ln1_w, mrows, c);
}

/* ------------------------------------------------------------------------------------------ */
/* Encoder: four stages of patch embedding, blocks and a final LayerNorm                       */
/* ------------------------------------------------------------------------------------------ */

/* Drop-path rate of block j in stage i: linspace(0, rate, sum(depths)). */
static float drop_path_rate(const ls_config *cfg, int i, int j)
{
    int total = 0, index = 0;
    for (int s = 0; s < 4; s++) total += cfg->depths[s];
    for (int s = 0; s < i; s++) index += cfg->depths[s];
    index += j;
    return total > 1 ? cfg->drop_path_rate * (float)index / (float)(total - 1) : 0.0f;
}

static void encoder_forward(ls_model *m, ls_workspace *ws, const float *x, int training,
                            ls_rng *rng)
{
    const ls_config *cfg = &m->cfg;
    int batch = ws->batch;
    for (int i = 0; i < 4; i++) {
        stage_acts *s = &ws->stage[i];
        const stage_acts *prev = i > 0 ? &ws->stage[i - 1] : NULL;
        map_view v = i == 0 ? map_nchw(batch, cfg->num_channels, ws->h, ws->w)
                            : map_nhwc(batch, prev->h, prev->w, cfg->hidden[i - 1]);
        patch_embed_forward(m, s, i, i == 0 ? x : prev->out, v);
        for (int j = 0; j < cfg->depths[i]; j++)
            block_forward(m, ws, s, i, j, drop_path_rate(cfg, i, j), training, rng);
        const float *last = s->blocks[cfg->depths[i] - 1].x_out;
        layernorm_forward(s->out, s->out_mean, s->out_rstd, last, m->w + m->stage[i].ln_w,
                          m->w + m->stage[i].ln_b, (long)batch * s->n, cfg->hidden[i], LS_LN_EPS);
    }
}

/* Consumes stage[i].d_out (filled by the head, and by stage i+1's patch embedding). */
static void encoder_backward(ls_model *m, ls_workspace *ws)
{
    const ls_config *cfg = &m->cfg;
    int batch = ws->batch;
    for (int i = 3; i >= 0; i--) {
        stage_acts *s = &ws->stage[i];
        int c = cfg->hidden[i];
        long mrows = (long)batch * s->n;
        memset(ws->g_res, 0, sizeof(float) * mrows * c);
        const float *last = s->blocks[cfg->depths[i] - 1].x_out;
        layernorm_backward(ws->g_res, m->g + m->stage[i].ln_w, m->g + m->stage[i].ln_b, s->d_out,
                           last, s->out_mean, s->out_rstd, m->w + m->stage[i].ln_w, mrows, c);
        for (int j = cfg->depths[i] - 1; j >= 0; j--) block_backward(m, ws, s, i, j);
        if (i == 0) {
            /* The image needs no gradient; only the weights of stage 1's patch embedding do. */
            patch_embed_backward(m, ws, s, 0, ws->g_res, NULL,
                                 map_nchw(batch, cfg->num_channels, ws->h, ws->w));
        } else {
            stage_acts *prev = &ws->stage[i - 1];
            patch_embed_backward(m, ws, s, i, ws->g_res, prev->d_out,
                                 map_nhwc(batch, prev->h, prev->w, cfg->hidden[i - 1]));
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* All-MLP decode head: per-stage linear to D, bilinear to the 1/4 grid, concat [c4,c3,c2,c1], */
/* 1x1 fuse conv (no bias), BatchNorm, ReLU, dropout, 1x1 classifier -> logits [M1, K]         */
/* ------------------------------------------------------------------------------------------ */

/* Inference shortcut of linear_c + upsampling + concat + linear_fuse. Bilinear resizing is linear
 * per channel with weights that sum to 1, so it commutes with channel mixing and passes biases
 * through: fuse = sum_i up(x_i (Wf_i Wl_i)^T + Wf_i bl_i), with Wf_i stage i's slice of the fuse
 * weight. The products then run at each stage's own resolution with C_i inputs, instead of
 * 4D x D at the 1/4 grid (half of b0's work at 512 px). Equal up to float rounding; training
 * keeps the plain order, whose intermediates the backward needs. */
static void fused_head_forward(ls_model *m, ls_workspace *ws)
{
    const ls_config *cfg = &m->cfg;
    const head_offsets *o = &m->head;
    int d = cfg->decoder_hidden, batch = ws->batch;
    float *wc = ws->head_w, *bc = ws->head_b;
    for (int i = 0; i < 4; i++) {
        const stage_acts *s = &ws->stage[i];
        int c = cfg->hidden[i];
        const float *wf = m->w + o->fuse_w + (size_t)(3 - i) * d; /* [D, D] slice, ld 4D */
        ls_gemm(0, 0, d, c, d, 1.0f, wf, 4 * d, m->w + o->lin_w[i], c, 0.0f, wc, c);
        ls_gemm(0, 0, d, 1, d, 1.0f, wf, 4 * d, m->w + o->lin_b[i], 1, 0.0f, bc, 1);
        linear_forward(ws->lin[i], s->out, wc, bc, batch * s->n, c, d);
        /* Stage 1 is already on the 1/4 grid (an exact copy); the others add in upsampled. */
        if (i == 0)
            bilinear_forward(ws->fuse, d, ws->lin[i], batch, s->h, s->w, ws->h4, ws->w4, d);
        else
            bilinear_forward_add(ws->fuse, d, ws->lin[i], batch, s->h, s->w, ws->h4, ws->w4, d);
    }
}

static void decode_head_forward(ls_model *m, ls_workspace *ws, int training, ls_rng *rng)
{
    const ls_config *cfg = &m->cfg;
    const head_offsets *o = &m->head;
    int d = cfg->decoder_hidden, batch = ws->batch, nl = cfg->num_labels;
    long m1 = (long)batch * ws->h4 * ws->w4;
    if (!training) {
        fused_head_forward(m, ws);
    } else {
        for (int i = 0; i < 4; i++) {
            const stage_acts *s = &ws->stage[i];
            linear_forward(ws->lin[i], s->out, m->w + o->lin_w[i], m->w + o->lin_b[i],
                           batch * s->n, cfg->hidden[i], d);
            bilinear_forward(ws->cat + (size_t)(3 - i) * d, 4 * d, ws->lin[i], batch, s->h,
                             s->w, ws->h4, ws->w4, d);
        }
        linear_forward(ws->fuse, ws->cat, m->w + o->fuse_w, NULL, (int)m1, 4 * d, d);
    }
    if (training) {
        batchnorm_train_forward(ws->bn_out, ws->bn_mean, ws->bn_rstd, m->bn_mean, m->bn_var,
                                ws->fuse, m->w + o->bn_w, m->w + o->bn_b, m1, d, LS_BN_EPS,
                                LS_BN_MOMENTUM);
        m->bn_batches++;
    } else {
        batchnorm_eval_forward(ws->bn_out, ws->fuse, m->bn_mean, m->bn_var, m->w + o->bn_w,
                               m->w + o->bn_b, m1, d, LS_BN_EPS);
    }
    size_t md = (size_t)m1 * d;
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < md; k++) ws->relu[k] = ws->bn_out[k] < 0.0f ? 0.0f : ws->bn_out[k];
    const float *feat = ws->relu;
    float p = cfg->classifier_dropout;
    if (training && p > 0.0f && rng) {
        /* Element-wise dropout (HF uses nn.Dropout, not Dropout2d); drawn serially so the mask
         * does not depend on the thread count. */
        float keep_scale = 1.0f / (1.0f - p);
        for (size_t k = 0; k < md; k++)
            ws->drop_scale[k] = ls_rng_uniform(rng) >= p ? keep_scale : 0.0f;
#pragma omp parallel for schedule(static)
        for (size_t k = 0; k < md; k++) ws->drop[k] = ws->relu[k] * ws->drop_scale[k];
        feat = ws->drop;
    } else if (training) {
        for (size_t k = 0; k < md; k++) ws->drop_scale[k] = 1.0f;
        /* The backward reads ws->drop whenever the configuration has dropout; with no rng none
         * was drawn, so it must hold the undropped features. */
        if (p > 0.0f) memcpy(ws->drop, ws->relu, sizeof(float) * md);
    }
    linear_forward(ws->logits, feat, m->w + o->cls_w, m->w + o->cls_b, (int)m1, d, nl);
}

static void decode_head_backward(ls_model *m, ls_workspace *ws)
{
    const ls_config *cfg = &m->cfg;
    const head_offsets *o = &m->head;
    int d = cfg->decoder_hidden, batch = ws->batch, nl = cfg->num_labels;
    long m1 = (long)batch * ws->h4 * ws->w4;
    size_t md = (size_t)m1 * d;
    int dropped = cfg->classifier_dropout > 0.0f;
    const float *feat = dropped ? ws->drop : ws->relu;
    float *d_feat = ws->g_a, *d_fuse = ws->g_b;
    memset(d_feat, 0, sizeof(float) * md);
    linear_backward(d_feat, m->g + o->cls_w, m->g + o->cls_b, ws->d_logits, feat,
                    m->w + o->cls_w, (int)m1, d, nl);
    /* Through dropout and ReLU in place: d(bn_out) = d_feat * scale * [bn_out > 0]. */
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < md; k++) {
        float sc = dropped ? ws->drop_scale[k] : 1.0f;
        d_feat[k] = ws->bn_out[k] > 0.0f ? d_feat[k] * sc : 0.0f;
    }
    memset(d_fuse, 0, sizeof(float) * md);
    batchnorm_backward(d_fuse, m->g + o->bn_w, m->g + o->bn_b, d_feat, ws->fuse, ws->bn_mean,
                       ws->bn_rstd, m->w + o->bn_w, m1, d);
    memset(ws->g_cat, 0, sizeof(float) * md * 4);
    linear_backward(ws->g_cat, m->g + o->fuse_w, NULL, d_fuse, ws->cat, m->w + o->fuse_w,
                    (int)m1, 4 * d, d);
    for (int i = 0; i < 4; i++) {
        stage_acts *s = &ws->stage[i];
        size_t mi = (size_t)batch * s->n;
        memset(ws->g_lin, 0, sizeof(float) * mi * d);
        bilinear_backward(ws->g_lin, ws->g_cat + (size_t)(3 - i) * d, 4 * d, batch, s->h, s->w,
                          ws->h4, ws->w4, d);
        memset(s->d_out, 0, sizeof(float) * mi * cfg->hidden[i]);
        linear_backward(s->d_out, m->g + o->lin_w[i], m->g + o->lin_b[i], ws->g_lin, s->out,
                        m->w + o->lin_w[i], (int)mi, cfg->hidden[i], d);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Model forward / loss / backward                                                             */
/* ------------------------------------------------------------------------------------------ */

static ls_status check_finite(const float *a, size_t n, const char *what, ls_error *err)
{
    for (size_t k = 0; k < n; k++)
        if (!isfinite(a[k]))
            return ls_fail(err, LS_ERR_NUMERIC, "%s holds a non-finite value (%g) at index %zu; "
                           "check the input and the weights (in training: lower the learning "
                           "rate)", what, (double)a[k], k);
    return LS_OK;
}

ls_status ls_model_forward(ls_model *m, ls_workspace *ws, const float *x, int training,
                           ls_rng *rng, float *logits, ls_error *err)
{
    if (training && !ws->training)
        return ls_fail(err, LS_ERR_ARG, "training forward needs a training workspace");
    ls_status st = check_finite(x, (size_t)ws->batch * m->cfg.num_channels * ws->h * ws->w,
                                "the input tensor", err);
    if (st != LS_OK) return st;
    encoder_forward(m, ws, x, training, rng);
    decode_head_forward(m, ws, training, rng);
    int nl = m->cfg.num_labels;
    size_t plane = (size_t)ws->h4 * ws->w4;
    st = check_finite(ws->logits, plane * ws->batch * nl, "logits", err);
    if (st != LS_OK || !logits) return st;
    /* NHWC -> NCHW for the caller, matching HF's logits layout. */
    for (int b = 0; b < ws->batch; b++)
        for (size_t p = 0; p < plane; p++)
            for (int k = 0; k < nl; k++)
                logits[((size_t)b * nl + k) * plane + p] = ws->logits[((size_t)b * plane + p) * nl
                                                                      + k];
    return LS_OK;
}

ls_status ls_model_loss(ls_model *m, ls_workspace *ws, const uint8_t *labels, int lh, int lw,
                        float *loss, ls_error *err)
{
    int nl = m->cfg.num_labels, batch = ws->batch;
    if (!ws->training) return ls_fail(err, LS_ERR_ARG, "the loss needs a training workspace");
    if (lh < 1 || lw < 1) return ls_fail(err, LS_ERR_SHAPE, "label size %dx%d", lw, lh);
    size_t npix = (size_t)batch * lh * lw, need = npix * nl;
    for (size_t p = 0; p < npix; p++)
        if (labels[p] != LS_IGNORE && labels[p] >= nl)
            return ls_fail(err, LS_ERR_ARG, "label value %d at pixel %zu is neither a class "
                           "(0..%d) nor the ignore label 255", labels[p], p, nl - 1);
    if (need > ws->up_capacity) {
        float *up = realloc(ws->up, need * sizeof(float));
        if (!up) return ls_fail(err, LS_ERR_NOMEM, "out of memory for %zu loss values", need);
        ws->up = up;
        ws->up_capacity = need;
    }
    ws->label_h = lh;
    ws->label_w = lw;
    /* Logits are upsampled once to the label size (align_corners=False), then CE over the valid
     * pixels; the mean divides by their count (HF), and no valid pixel means loss 0. */
    bilinear_forward(ws->up, nl, ws->logits, batch, ws->h4, ws->w4, lh, lw, nl);
    size_t valid = 0;
    for (size_t p = 0; p < npix; p++) valid += labels[p] != LS_IGNORE;
    double total = 0.0;
    float inv = valid ? 1.0f / (float)valid : 0.0f;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (size_t p = 0; p < npix; p++) {
        float *z = ws->up + p * nl;
        if (labels[p] == LS_IGNORE) {
            for (int k = 0; k < nl; k++) z[k] = 0.0f;
            continue;
        }
        float mx = z[0];
        for (int k = 1; k < nl; k++) mx = z[k] > mx ? z[k] : mx;
        double sum = 0.0;
        for (int k = 0; k < nl; k++) sum += exp((double)(z[k] - mx));
        double lse = mx + log(sum);
        total += lse - z[labels[p]];
        for (int k = 0; k < nl; k++) {
            float prob = (float)exp(z[k] - lse);
            z[k] = (prob - (k == labels[p] ? 1.0f : 0.0f)) * inv;
        }
    }
    *loss = valid ? (float)(total / (double)valid) : 0.0f;
    memset(ws->d_logits, 0, sizeof(float) * (size_t)batch * ws->h4 * ws->w4 * nl);
    bilinear_backward(ws->d_logits, ws->up, nl, batch, ws->h4, ws->w4, lh, lw, nl);
    if (!isfinite(*loss))
        return ls_fail(err, LS_ERR_NUMERIC, "loss is %g; the logits overflowed", (double)*loss);
    return LS_OK;
}

ls_status ls_model_backward(ls_model *m, ls_workspace *ws, ls_error *err)
{
    if (!ws->training || ws->label_h == 0)
        return ls_fail(err, LS_ERR_ARG, "backward needs a training forward and a loss first");
    decode_head_backward(m, ws);
    encoder_backward(m, ws);
    return check_finite(m->g, m->nweights, "parameter gradients", err);
}

/* ------------------------------------------------------------------------------------------ */
/* Attention maps for inspection                                                               */
/* ------------------------------------------------------------------------------------------ */

ls_status ls_attention_map(const ls_model *m, const ls_workspace *ws, int stage, int block,
                           int sample, int query, float *out, int *hr, int *wr, ls_error *err)
{
    const ls_config *cfg = &m->cfg;
    if (stage < 0 || stage > 3 || block < 0 || block >= cfg->depths[stage] || sample < 0 ||
        sample >= ws->batch)
        return ls_fail(err, LS_ERR_ARG, "no attention at stage %d, block %d, sample %d", stage,
                       block, sample);
    const stage_acts *s = &ws->stage[stage];
    if (query < 0 || query >= s->n)
        return ls_fail(err, LS_ERR_ARG, "query token %d outside stage %d's %dx%d grid", query,
                       stage, s->w, s->h);
    const block_acts *bl = &s->blocks[block];
    int c = cfg->hidden[stage], heads = cfg->heads[stage], d = c / heads;
    const float *q = bl->q + ((size_t)sample * s->n + query) * c;
    const float *k = bl->k + (size_t)sample * s->nr * c;
    float sqrt_d = sqrtf((float)d);
    for (int j = 0; j < s->nr; j++) out[j] = 0.0f;
    for (int h = 0; h < heads; h++) {
        float mx = -INFINITY;
        double sum = 0.0;
        float *scores = malloc(sizeof(float) * s->nr);
        if (!scores) return ls_fail(err, LS_ERR_NOMEM, "out of memory");
        for (int j = 0; j < s->nr; j++) {
            float dot = 0.0f;
            for (int t = 0; t < d; t++) dot += q[h * d + t] * k[(size_t)j * c + h * d + t];
            scores[j] = dot / sqrt_d;
            mx = scores[j] > mx ? scores[j] : mx;
        }
        for (int j = 0; j < s->nr; j++) sum += exp((double)(scores[j] - mx));
        for (int j = 0; j < s->nr; j++)
            out[j] += (float)(exp((double)(scores[j] - mx)) / sum) / (float)heads;
        free(scores);
    }
    *hr = s->hr;
    *wr = s->wr;
    return LS_OK;
}

void ls_workspace_stage_grid(const ls_workspace *ws, int stage, int *h, int *w, int *hr, int *wr)
{
    const stage_acts *s = &ws->stage[stage < 0 ? 0 : stage > 3 ? 3 : stage];
    *h = s->h;
    *w = s->w;
    *hr = s->hr;
    *wr = s->wr;
}
