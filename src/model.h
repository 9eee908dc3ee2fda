/* Internal layout of the SegFormer model and its workspace (shared by segformer.c, the model file
 * code and the tests). The public API is in leukoseg.h. */
#ifndef LS_MODEL_H
#define LS_MODEL_H

#include "leukoseg.h"

#define LS_MAX_DEPTH 48
#define LS_MAX_META 32
#define LS_MAX_EXTRA 8
#define LS_LN_EPS 1e-5f /* HF builds every LayerNorm with PyTorch's default eps (spec §7.1) */
#define LS_BN_EPS 1e-5f
#define LS_BN_MOMENTUM 0.1f
#define LS_ATTN_CHUNK 1024 /* query rows per attention chunk at inference */

/* Offsets of one transformer block's tensors in the flat parameter array (HF names in comments). */
typedef struct {
    size_t ln1_w, ln1_b;   /* layer_norm_1 */
    size_t q_w, q_b;       /* attention.self.query */
    size_t k_w, k_b;       /* attention.self.key */
    size_t v_w, v_b;       /* attention.self.value */
    size_t sr_w, sr_b;     /* attention.self.sr (sr > 1 only) */
    size_t lnsr_w, lnsr_b; /* attention.self.layer_norm (sr > 1 only) */
    size_t o_w, o_b;       /* attention.output.dense */
    size_t ln2_w, ln2_b;   /* layer_norm_2 */
    size_t fc1_w, fc1_b;   /* mlp.dense1 */
    size_t dw_w, dw_b;     /* mlp.dwconv.dwconv */
    size_t fc2_w, fc2_b;   /* mlp.dense2 */
} block_offsets;

typedef struct {
    size_t pe_w, pe_b;       /* patch_embeddings.i.proj */
    size_t pe_ln_w, pe_ln_b; /* patch_embeddings.i.layer_norm */
    size_t ln_w, ln_b;       /* encoder.layer_norm.i */
    block_offsets blocks[LS_MAX_DEPTH];
} stage_offsets;

typedef struct {
    size_t lin_w[4], lin_b[4]; /* decode_head.linear_c.i.proj */
    size_t fuse_w;             /* decode_head.linear_fuse (no bias) */
    size_t bn_w, bn_b;         /* decode_head.batch_norm */
    size_t cls_w, cls_b;       /* decode_head.classifier */
} head_offsets;

struct ls_model {
    ls_config cfg;
    ls_param *params;
    int nparams;
    size_t nweights;
    float *w, *g;                 /* parameters and their gradients, nweights each */
    float *bn_mean, *bn_var;      /* decode_head.batch_norm running stats [D] */
    int64_t bn_batches;
    stage_offsets stage[4];
    head_offsets head;
    int nmeta;
    char *meta_key[LS_MAX_META], *meta_value[LS_MAX_META];
    /* Extra named tensors saved with the model (the cell classifier, src/celltype.c). */
    int nextra;
    char *extra_name[LS_MAX_EXTRA];
    ls_array extra[LS_MAX_EXTRA];
};

/* Frees the extra tensors (src/celltype.c); ls_model_free calls it. */
void ls_model_free_extras(ls_model *m);
/* ls_model_create without the initialisation (weights zero): for a loader that then sets every
 * tensor, since drawing 3.7 M normal values for b0 costs more than the rest of a small run. */
ls_status ls_model_alloc(const ls_config *cfg, ls_model **out, ls_error *err);

/* Activations kept for the backward of one transformer block. M = B*N tokens, Mr = B*Nr. */
typedef struct {
    float *x_in;                          /* [M, C] block input (alias of the previous output) */
    float *ln1, *ln1_mean, *ln1_rstd;     /* [M, C], [M], [M] */
    float *q;                             /* [M, C] */
    float *sr_col;                        /* [Mr, C*sr*sr] im2col of ln1 (sr > 1) */
    float *sr_out;                        /* [Mr, C] */
    float *kv_in, *lnsr_mean, *lnsr_rstd; /* [Mr, C] reduced tokens after their LayerNorm */
    float *k, *v;                         /* [Mr, C] */
    float *probs;                         /* training: [B, heads, N, Nr]; inference: a
                                             [LS_ATTN_CHUNK, Nr] scratch */
    float *ctx;                           /* [M, C] attention output before output.dense */
    float *x_mid;                         /* [M, C] residual stream after attention */
    float *ln2, *ln2_mean, *ln2_rstd;     /* [M, C], [M], [M] */
    float *h1, *h2, *h3;                  /* [M, F] dense1, dwconv, gelu outputs */
    float *x_out;                         /* [M, C] block output */
    float *keep_attn, *keep_ffn;          /* [B] drop-path scales (0 or 1/keep) */
} block_acts;

typedef struct {
    int h, w, n, hr, wr, nr;  /* token grid and reduced key grid */
    float *pe_col;            /* [M, Cin*k*k] */
    float *pe_out;            /* [M, C] projection before its LayerNorm */
    float *pe_mean, *pe_rstd; /* [M] */
    float *tokens;            /* [M, C] patch embedding output = first block input */
    block_acts blocks[LS_MAX_DEPTH];
    float *out, *out_mean, *out_rstd; /* [M, C] stage output after encoder.layer_norm.i */
    float *d_out;             /* [M, C] gradient of the stage output */
} stage_acts;

struct ls_workspace {
    int batch, h, w, training, h4, w4;
    stage_acts stage[4];
    /* decode head, M1 = B * h4 * w4 */
    float *lin[4];          /* [B*Ni, D] */
    float *cat;             /* [M1, 4D] stages in order 4, 3, 2, 1 */
    float *fuse;            /* [M1, D] */
    float *bn_mean, *bn_rstd; /* [D] batch statistics */
    float *bn_out;          /* [M1, D] */
    float *relu;            /* [M1, D] */
    float *drop_scale;      /* [M1, D] dropout scales (training with p > 0) */
    float *drop;            /* [M1, D] */
    float *logits;          /* [M1, K] NHWC */
    float *d_logits;        /* [M1, K] */
    /* kernel scratch */
    float *dw_taps;         /* [9, Fmax] depthwise weights taps-major */
    float *head_w, *head_b; /* [D, Cmax], [D] one stage's fused linear_c + linear_fuse */
    /* gradient scratch, sized for the largest stage */
    float *g_res, *g_u, *g_q, *g_ctx, *g_tmp, *g_col; /* [Mmax, Cmax] */
    float *g_k, *g_v, *g_m, *g_sr;                    /* [Mr max, C] */
    float *g_probs;                                   /* [Nmax, Nr max] */
    float *g_h1, *g_h2, *g_h3;                        /* [Mmax, Fmax] */
    float *g_cat;                                     /* [M1, 4D] */
    float *g_a, *g_b;                                 /* [M1, D] */
    float *g_lin;                                     /* [B*N1, D] */
    /* loss at label resolution */
    int label_h, label_w;
    float *up;              /* [B, lh, lw, K] */
    size_t up_capacity;
    float *arena;
    size_t arena_floats;
};

/* Inference building blocks shared by segmentation and cell analysis (src/infer.c).
 * ls_encode_image: preprocess img as the model's metadata says and run the eval forward into a
 * new batch-1 workspace (every stage's output stays in it).
 * ls_mask_from_logits: that forward's logits upsampled once (bilinear, align_corners=False) to
 * w x h, argmax into mask (malloc'd); probs (optional) receives the softmax [h*w*K]. */
ls_status ls_encode_image(ls_model *model, const ls_image *img, ls_workspace **ws, ls_error *err);
ls_status ls_mask_from_logits(const ls_model *model, const ls_workspace *ws, int w, int h,
                              ls_mask *mask, float **probs, ls_error *err);

/* Minimum input side: every stage must keep at least one key after sequence reduction. */
int ls_min_input_side(const ls_config *cfg);

#endif
