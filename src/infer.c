/* Inference: preprocessing from the model's metadata, eval forward, one bilinear upsampling of the
 * logits to the image size, argmax. */
#include "model.h"
#include "ops.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void read_float3(const char *json, float *out)
{
    cJSON *a = json ? cJSON_Parse(json) : NULL;
    if (cJSON_IsArray(a) && cJSON_GetArraySize(a) == 3) {
        for (int i = 0; i < 3; i++) {
            const cJSON *e = cJSON_GetArrayItem(a, i);
            if (cJSON_IsNumber(e)) out[i] = (float)e->valuedouble;
        }
    }
    cJSON_Delete(a);
}

void ls_model_preproc(const ls_model *model, ls_preproc *pp)
{
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    pp->width = pp->height = 512;
    memcpy(pp->mean, mean, sizeof mean);
    memcpy(pp->std, std, sizeof std);
    const char *size = ls_model_get_meta(model, "input_size");
    int w = 0, h = 0;
    if (size && sscanf(size, "%dx%d", &w, &h) == 2 && w > 0 && h > 0 && w <= 8192 && h <= 8192) {
        pp->width = w;
        pp->height = h;
    }
    read_float3(ls_model_get_meta(model, "image_mean"), pp->mean);
    read_float3(ls_model_get_meta(model, "image_std"), pp->std);
}

void ls_argmax(const float *scores, size_t n, int k, uint8_t *labels)
{
    for (size_t p = 0; p < n; p++) {
        const float *s = scores + p * k;
        int best = 0;
        for (int c = 1; c < k; c++)
            if (s[c] > s[best]) best = c;
        labels[p] = (uint8_t)best;
    }
}

ls_status ls_encode_image(ls_model *model, const ls_image *img, ls_workspace **ws, ls_error *err)
{
    ls_preproc pp;
    ls_model_preproc(model, &pp);
    *ws = NULL;
    float *x = malloc(sizeof(float) * 3 * pp.width * pp.height);
    ls_status st = x ? LS_OK : ls_fail(err, LS_ERR_NOMEM, "out of memory preprocessing a %dx%d "
                                       "image", img->w, img->h);
    if (st == LS_OK) st = ls_preprocess(img, pp.width, pp.height, pp.mean, pp.std, x, err);
    if (st == LS_OK) st = ls_workspace_create(model, 1, pp.height, pp.width, 0, ws, err);
    if (st == LS_OK) st = ls_model_forward(model, *ws, x, 0, NULL, NULL, err);
    free(x);
    if (st != LS_OK) {
        ls_workspace_free(*ws);
        *ws = NULL;
    }
    return st;
}

ls_status ls_mask_from_logits(const ls_model *model, const ls_workspace *ws, int w, int h,
                              ls_mask *mask, float **probs, ls_error *err)
{
    int nl = model->cfg.num_labels;
    size_t npix = (size_t)w * h;
    mask->data = NULL;
    if (probs) *probs = NULL;
    float *up = malloc(sizeof(float) * npix * nl);
    uint8_t *labels = malloc(npix);
    if (!up || !labels) {
        free(up);
        free(labels);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory for a %dx%d mask", w, h);
    }
    /* One upsampling of the logits to the image size, then argmax (input-cases 8). */
    bilinear_forward(up, nl, ws->logits, 1, ws->h4, ws->w4, h, w, nl);
    ls_argmax(up, npix, nl, labels);
    mask->w = w;
    mask->h = h;
    mask->data = labels;
    if (probs) {
        softmax_rows(up, (long)npix, nl);
        *probs = up;
    } else {
        free(up);
    }
    return LS_OK;
}

ls_status ls_segment_image(ls_model *model, const ls_image *img, ls_mask *mask, float **probs,
                           ls_error *err)
{
    mask->data = NULL;
    if (probs) *probs = NULL;
    ls_workspace *ws = NULL;
    ls_status st = ls_encode_image(model, img, &ws, err);
    if (st == LS_OK) st = ls_mask_from_logits(model, ws, img->w, img->h, mask, probs, err);
    ls_workspace_free(ws);
    return st;
}
