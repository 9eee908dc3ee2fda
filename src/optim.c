/* AdamW with PyTorch semantics, parameter groups of the official SegFormer recipe and the mmcv
 * poly learning-rate schedule with linear warm-up. */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

ls_adamw_config ls_adamw_default(void)
{
    ls_adamw_config c;
    c.lr = 6e-5f;
    c.head_lr_mult = 10.0f;
    c.weight_decay = 0.01f;
    c.beta1 = 0.9f;
    c.beta2 = 0.999f;
    c.eps = 1e-8f;
    c.warmup_iters = 1500;
    c.warmup_ratio = 1e-6f;
    c.max_iters = 160000;
    c.power = 1.0f;
    return c;
}

ls_status ls_adamw_init(ls_adamw *opt, const ls_model *model, const ls_adamw_config *cfg,
                        ls_error *err)
{
    memset(opt, 0, sizeof *opt);
    if (!(cfg->lr > 0.0f) || cfg->max_iters < 1 || cfg->warmup_iters < 0)
        return ls_fail(err, LS_ERR_ARG, "bad optimiser settings: lr %g, max_iters %ld, warm-up %ld",
                       (double)cfg->lr, cfg->max_iters, cfg->warmup_iters);
    opt->cfg = *cfg;
    opt->m = calloc(model->nweights, sizeof(float));
    opt->v = calloc(model->nweights, sizeof(float));
    if (!opt->m || !opt->v) {
        ls_adamw_free(opt);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory for AdamW moments");
    }
    return LS_OK;
}

void ls_adamw_free(ls_adamw *opt)
{
    free(opt->m);
    free(opt->v);
    opt->m = opt->v = NULL;
}

/* mmcv PolyLrUpdaterHook with linear warm-up, both by iteration:
 * regular = lr (1 - it/max)^power; during warm-up lr = regular (1 - (1 - it/W)(1 - ratio)). */
float ls_lr_at(const ls_adamw_config *cfg, long it)
{
    double progress = (double)it / (double)cfg->max_iters;
    double regular = progress >= 1.0 ? 0.0 : cfg->lr * pow(1.0 - progress, cfg->power);
    if (it < cfg->warmup_iters) {
        double k = (1.0 - (double)it / (double)cfg->warmup_iters) * (1.0 - cfg->warmup_ratio);
        regular *= 1.0 - k;
    }
    return (float)regular;
}

void ls_adamw_step(ls_adamw *opt, ls_model *model)
{
    const ls_adamw_config *c = &opt->cfg;
    float lr_base = ls_lr_at(c, opt->step);
    opt->step++;
    double bc1 = 1.0 - pow(c->beta1, (double)opt->step);
    double bc2_sqrt = sqrt(1.0 - pow(c->beta2, (double)opt->step));
    for (int i = 0; i < model->nparams; i++) {
        const ls_param *p = &model->params[i];
        /* Groups as mmcv resolves them: 'head' (lr x mult, decay kept) wins over 'norm'. */
        float lr = p->is_head ? lr_base * c->head_lr_mult : lr_base;
        float wd = p->no_decay ? 0.0f : c->weight_decay;
        float step_size = (float)(lr / bc1);
        float *w = model->w + p->offset, *g = model->g + p->offset;
        float *m = opt->m + p->offset, *v = opt->v + p->offset;
        long n = (long)p->numel;
#pragma omp parallel for schedule(static)
        for (long k = 0; k < n; k++) {
            w[k] *= 1.0f - lr * wd;
            m[k] = c->beta1 * m[k] + (1.0f - c->beta1) * g[k];
            v[k] = c->beta2 * v[k] + (1.0f - c->beta2) * g[k] * g[k];
            float denom = sqrtf(v[k]) / (float)bc2_sqrt + c->eps;
            w[k] -= step_size * m[k] / denom;
        }
    }
}
