/* Inference: preprocessing from the model's metadata, eval forward, one bilinear upsampling of the
 * logits to the image size, argmax; and the same over overlapping windows of a large field. */
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

/* ---- windows of a large field ----------------------------------------------------------- */

ls_rect ls_window_around(const ls_image *img, int window, double cx, double cy)
{
    ls_rect r = {0, 0, img->w, img->h};
    if (window <= 0) return r;
    if (window < img->w) {
        int x0 = (int)lround(cx - window / 2.0);
        r.x = x0 < 0 ? 0 : (x0 > img->w - window ? img->w - window : x0);
        r.w = window;
    }
    if (window < img->h) {
        int y0 = (int)lround(cy - window / 2.0);
        r.y = y0 < 0 ? 0 : (y0 > img->h - window ? img->h - window : y0);
        r.h = window;
    }
    return r;
}

ls_status ls_image_crop(const ls_image *img, ls_rect r, ls_image *out, ls_error *err)
{
    out->data = NULL;
    if (r.x < 0 || r.y < 0 || r.w < 1 || r.h < 1 || r.x + r.w > img->w || r.y + r.h > img->h)
        return ls_fail(err, LS_ERR_ARG, "crop %dx%d at (%d, %d) is outside the %dx%d image", r.w,
                       r.h, r.x, r.y, img->w, img->h);
    out->data = malloc((size_t)r.w * r.h * 3);
    if (!out->data)
        return ls_fail(err, LS_ERR_NOMEM, "out of memory cropping %dx%d pixels", r.w, r.h);
    out->w = r.w;
    out->h = r.h;
    for (int y = 0; y < r.h; y++)
        memcpy(out->data + (size_t)y * r.w * 3, img->data + ((size_t)(r.y + y) * img->w + r.x) * 3,
               (size_t)r.w * 3);
    return LS_OK;
}

/* Starts of the windows along an axis of len pixels: half-overlapping windows of win pixels
 * spread evenly from 0 to len - win, so every pixel away from the ends lies in two. One window
 * (start 0, covering the axis) when len <= win. Returns the count; starts holds up to cap. */
static int window_starts(int len, int win, int *starts, int cap)
{
    if (len <= win) {
        if (cap > 0) starts[0] = 0;
        return 1;
    }
    int stride = win / 2 > 0 ? win / 2 : 1;
    int n = (len - win + stride - 1) / stride + 1;
    for (int k = 0; k < n && k < cap; k++)
        starts[k] = (int)((long long)k * (len - win) / (n - 1));
    return n;
}

/* Weight of position i of a window of len pixels: a tent from 0.1 at the edges to 1 at the
 * centre, so where windows overlap the one that sees a pixel in more context counts more. */
static float tent(int i, int len)
{
    float t = ((float)i + 0.5f) / (float)len;
    return 1.0f - 0.9f * fabsf(2.0f * t - 1.0f);
}

/* Adds window r's probabilities [r.h * r.w, K] into acc [H * W, K] of the field, weighted. */
static void accumulate_window(float *acc, float *wsum, int field_w, ls_rect r, const float *probs,
                              int nl)
{
    for (int y = 0; y < r.h; y++) {
        float wy = tent(y, r.h);
        for (int x = 0; x < r.w; x++) {
            float wgt = wy * tent(x, r.w);
            size_t p = (size_t)(r.y + y) * field_w + r.x + x;
            const float *src = probs + ((size_t)y * r.w + x) * nl;
            for (int k = 0; k < nl; k++) acc[p * nl + k] += wgt * src[k];
            wsum[p] += wgt;
        }
    }
}

/* Segments window r of img and adds its class probabilities into acc and wsum. */
static ls_status segment_window(ls_model *model, const ls_image *img, ls_rect r, float *acc,
                                float *wsum, ls_error *err)
{
    ls_image crop = {0};
    ls_mask mask = {0};
    float *probs = NULL;
    ls_status st = ls_image_crop(img, r, &crop, err);
    if (st == LS_OK) st = ls_segment_image(model, &crop, &mask, &probs, err);
    if (st == LS_OK) accumulate_window(acc, wsum, img->w, r, probs, model->cfg.num_labels);
    free(probs);
    ls_mask_free(&mask);
    ls_image_free(&crop);
    return st;
}

ls_status ls_segment_windows(ls_model *model, const ls_image *img, int window, ls_mask *mask,
                             float **probs, ls_error *err)
{
    if (window <= 0 || (window >= img->w && window >= img->h))
        return ls_segment_image(model, img, mask, probs, err);
    mask->data = NULL;
    if (probs) *probs = NULL;
    int nl = model->cfg.num_labels, nx = window_starts(img->w, window, NULL, 0);
    int ny = window_starts(img->h, window, NULL, 0);
    size_t npix = (size_t)img->w * img->h;
    int *xs = malloc(sizeof(int) * nx), *ys = malloc(sizeof(int) * ny);
    float *acc = calloc(npix * nl, sizeof(float)), *wsum = calloc(npix, sizeof(float));
    uint8_t *labels = malloc(npix);
    ls_status st = xs && ys && acc && wsum && labels ? LS_OK
                   : ls_fail(err, LS_ERR_NOMEM, "out of memory for the class scores of a %dx%d "
                             "field", img->w, img->h);
    if (st == LS_OK) {
        window_starts(img->w, window, xs, nx);
        window_starts(img->h, window, ys, ny);
    }
    for (int j = 0; j < ny && st == LS_OK; j++)
        for (int i = 0; i < nx && st == LS_OK; i++) {
            ls_rect r = {xs[i], ys[j], window < img->w ? window : img->w,
                         window < img->h ? window : img->h};
            st = segment_window(model, img, r, acc, wsum, err);
        }
    if (st == LS_OK) {
        for (size_t p = 0; p < npix; p++)
            for (int k = 0; k < nl; k++) acc[p * nl + k] /= wsum[p];
        ls_argmax(acc, npix, nl, labels);
        mask->w = img->w;
        mask->h = img->h;
        mask->data = labels;
        labels = NULL;
        if (probs) {
            *probs = acc;
            acc = NULL;
        }
    }
    free(xs), free(ys), free(acc), free(wsum), free(labels);
    return st;
}
