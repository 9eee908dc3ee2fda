/* Training augmentation and evaluation preprocessing.
 *
 * A training view is: rescale (longer side = size * s), random crop or pad to size x size, flips
 * and a quarter turn, colour jitter (brightness, contrast, saturation, hue: the hue shift stands
 * in for stain variation between smears), then normalisation to CHW float. Every call draws the
 * same random numbers in the same order whatever the options, so a seed fixes the whole stream of
 * views even when options change which transforms are applied.
 */
#include "leukoseg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Guards against option values that would make the rescaled image absurdly large. */
#define AUG_MAX_SIZE 8192
#define AUG_MAX_SIDE 16384

ls_augment ls_augment_default(int size)
{
    ls_augment a = {
        .size = size,
        .scale_min = 0.75f,
        .scale_max = 1.25f,
        .hflip = 1,
        .vflip = 1,
        .rot90 = 1,
        .brightness = 16.0f,
        .contrast = 0.15f,
        .saturation = 0.15f,
        .hue = 6.0f,
    };
    return a;
}

/* The one normalisation formula, shared by training views and ls_preprocess so that both give
 * bit-identical inputs for the same pixels. */
static float normalize(uint8_t v, float mean, float std)
{
    return ((float)v / 255.0f - mean) / std;
}

static ls_status check_norm(const float mean[3], const float std[3], ls_error *err)
{
    for (int c = 0; c < 3; c++)
        if (!isfinite(mean[c]) || !isfinite(std[c]) || !(std[c] > 0))
            return ls_fail(err, LS_ERR_ARG, "normalisation channel %d has mean %g and std %g; "
                           "std must be positive and both finite", c, mean[c], std[c]);
    return LS_OK;
}

static ls_status check_image(const ls_image *img, ls_error *err)
{
    if (!img || !img->data || img->w < 1 || img->h < 1)
        return ls_fail(err, LS_ERR_ARG, "image is empty (%d x %d)", img ? img->w : 0,
                       img ? img->h : 0);
    return LS_OK;
}

/* Random parameters of one view, drawn together in a fixed order. */
typedef struct {
    float scale;
    int hflip, vflip, rot;
    float bright_add, contrast_mul, sat_mul, hue_deg;
} aug_params;

/* Offsets need the rescaled size, which needs the scale, so the two offsets are drawn as
 * uniforms here and turned into integers by offset_from(). */
static void draw_params(const ls_augment *aug, ls_rng *rng, aug_params *p, float *u_x, float *u_y)
{
    float u_scale = ls_rng_uniform(rng);
    *u_x = ls_rng_uniform(rng);
    *u_y = ls_rng_uniform(rng);
    float u_h = ls_rng_uniform(rng), u_v = ls_rng_uniform(rng);
    int rot = ls_rng_int(rng, 4);
    float u_b = ls_rng_uniform(rng), u_c = ls_rng_uniform(rng);
    float u_s = ls_rng_uniform(rng), u_hue = ls_rng_uniform(rng);

    p->scale = aug->scale_min + u_scale * (aug->scale_max - aug->scale_min);
    p->hflip = aug->hflip && u_h < 0.5f;
    p->vflip = aug->vflip && u_v < 0.5f;
    p->rot = aug->rot90 ? rot : 0;
    p->bright_add = (2 * u_b - 1) * aug->brightness;
    p->contrast_mul = 1 + (2 * u_c - 1) * aug->contrast;
    p->sat_mul = 1 + (2 * u_s - 1) * aug->saturation;
    p->hue_deg = (2 * u_hue - 1) * aug->hue;
}

/* Uniform integer in [0, range] from a uniform u in [0, 1). */
static int offset_from(float u, int range)
{
    int o = (int)(u * (float)(range + 1));
    return o > range ? range : o;
}

static ls_status check_aug(const ls_augment *aug, ls_error *err)
{
    if (aug->size < 1 || aug->size > AUG_MAX_SIZE)
        return ls_fail(err, LS_ERR_ARG, "augmentation size %d is outside 1..%d", aug->size,
                       AUG_MAX_SIZE);
    if (!isfinite(aug->scale_min) || !isfinite(aug->scale_max) || !(aug->scale_min > 0) ||
        aug->scale_max < aug->scale_min || (double)aug->size * aug->scale_max > AUG_MAX_SIDE)
        return ls_fail(err, LS_ERR_ARG, "augmentation scale range [%g, %g] is invalid: it must "
                       "be positive, ordered and keep size * scale_max <= %d",
                       aug->scale_min, aug->scale_max, AUG_MAX_SIDE);
    if (!(aug->brightness >= 0 && aug->brightness <= 255) ||
        !(aug->contrast >= 0 && aug->contrast <= 1) ||
        !(aug->saturation >= 0 && aug->saturation <= 1) || !(aug->hue >= 0 && aug->hue <= 180))
        return ls_fail(err, LS_ERR_ARG, "colour jitter out of range (brightness %g in 0..255, "
                       "contrast %g and saturation %g in 0..1, hue %g in 0..180 degrees)",
                       aug->brightness, aug->contrast, aug->saturation, aug->hue);
    return LS_OK;
}

/* RGB <-> HSV on 0..255 floats, hue in degrees [0, 360). */
static void rgb_to_hsv(float r, float g, float b, float *h, float *s, float *v)
{
    float mx = fmaxf(r, fmaxf(g, b)), mn = fminf(r, fminf(g, b)), d = mx - mn;
    *v = mx;
    *s = mx > 0 ? d / mx : 0;
    if (d <= 0) {
        *h = 0;
        return;
    }
    float hh;
    if (mx == r) hh = (g - b) / d;
    else if (mx == g) hh = 2 + (b - r) / d;
    else hh = 4 + (r - g) / d;
    hh *= 60;
    *h = hh < 0 ? hh + 360 : hh;
}

static void hsv_to_rgb(float h, float s, float v, float *r, float *g, float *b)
{
    float hh = h / 60;
    int i = (int)floorf(hh);
    float f = hh - (float)i;
    float p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
    switch (((i % 6) + 6) % 6) {
    case 0: *r = v, *g = t, *b = p; break;
    case 1: *r = q, *g = v, *b = p; break;
    case 2: *r = p, *g = v, *b = t; break;
    case 3: *r = p, *g = q, *b = v; break;
    case 4: *r = t, *g = p, *b = v; break;
    default: *r = v, *g = p, *b = q; break;
    }
}

static uint8_t clip_u8(float v)
{
    if (!(v > 0)) return 0;
    if (v >= 255) return 255;
    return (uint8_t)lrintf(v);
}

/* Colour jitter of the w x h window at (x0, y0) of img, in place. The contrast pivot is the mean
 * luma of that window (the part the network will see), as torchvision's adjust_contrast uses the
 * mean of the grayscale image. */
static void jitter(ls_image *img, int x0, int y0, int w, int h, const aug_params *p)
{
    int do_hsv = p->sat_mul != 1 || p->hue_deg != 0;
    if (p->bright_add == 0 && p->contrast_mul == 1 && !do_hsv) return;
    double luma = 0;
    for (int y = y0; y < y0 + h; y++)
        for (int x = x0; x < x0 + w; x++) {
            const uint8_t *px = img->data + ((size_t)y * img->w + x) * 3;
            luma += 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2];
        }
    /* Brightness moves the mean by the same amount, since the luma weights sum to 1. */
    float mean = (float)(luma / ((double)w * h)) + p->bright_add;
    for (int y = y0; y < y0 + h; y++)
        for (int x = x0; x < x0 + w; x++) {
            uint8_t *px = img->data + ((size_t)y * img->w + x) * 3;
            float c[3];
            for (int k = 0; k < 3; k++)
                c[k] = ((float)px[k] + p->bright_add - mean) * p->contrast_mul + mean;
            if (do_hsv) {
                float hh, s, v;
                rgb_to_hsv(fmaxf(c[0], 0), fmaxf(c[1], 0), fmaxf(c[2], 0), &hh, &s, &v);
                s = fminf(s * p->sat_mul, 1);
                hh = fmodf(hh + p->hue_deg + 360, 360);
                hsv_to_rgb(hh, s, v, &c[0], &c[1], &c[2]);
            }
            for (int k = 0; k < 3; k++) px[k] = clip_u8(c[k]);
        }
}

/* Output pixel (x, y) of an n x n view comes from canvas pixel (*sx, *sy): the view is the canvas
 * flipped horizontally, then vertically, then turned a quarter counter-clockwise rot times
 * (np.rot90 semantics), so we undo those steps in reverse order. */
static void view_to_canvas(int x, int y, int n, const aug_params *p, int *sx, int *sy)
{
    for (int r = 0; r < p->rot; r++) {
        int t = x;
        x = n - 1 - y;
        y = t;
    }
    if (p->vflip) y = n - 1 - y;
    if (p->hflip) x = n - 1 - x;
    *sx = x;
    *sy = y;
}

ls_status ls_augment_sample(const ls_augment *aug, ls_rng *rng, const ls_image *img,
                            const ls_mask *mask, const float mean[3], const float std[3],
                            float *x, uint8_t *labels, ls_error *err)
{
    ls_status st;
    if ((st = check_aug(aug, err)) != LS_OK || (st = check_image(img, err)) != LS_OK ||
        (st = check_norm(mean, std, err)) != LS_OK)
        return st;
    if (!x || !labels) return ls_fail(err, LS_ERR_ARG, "augmentation output buffers are NULL");
    int has_mask = mask && mask->data;
    if (has_mask && (mask->w != img->w || mask->h != img->h))
        return ls_fail(err, LS_ERR_SHAPE, "mask is %d x %d but its image is %d x %d", mask->w,
                       mask->h, img->w, img->h);

    aug_params p;
    float u_x, u_y;
    draw_params(aug, rng, &p, &u_x, &u_y);

    /* Longer side becomes size * scale, aspect kept; both sides at least 1 pixel. */
    int size = aug->size, longer = img->w > img->h ? img->w : img->h;
    double target = fmax(1.0, round((double)size * p.scale));
    int nw = (int)fmax(1.0, round((double)img->w * target / longer));
    int nh = (int)fmax(1.0, round((double)img->h * target / longer));

    /* ls_image_resize copies even at the same size, so jitter can work in place on rs. */
    ls_image rs = {0};
    ls_mask ms = {0};
    st = ls_image_resize(img, nw, nh, &rs, err);
    if (st == LS_OK && has_mask) st = ls_mask_resize_nearest(mask, nw, nh, &ms, err);
    if (st != LS_OK) goto done;

    /* Crop when the rescaled image is larger than the view, otherwise pad around it: the
     * visible window of the rescaled image starts at (cx, cy) and lands at (px, py). */
    int cx = 0, cy = 0, px = 0, py = 0;
    if (nw > size) cx = offset_from(u_x, nw - size);
    else px = offset_from(u_x, size - nw);
    if (nh > size) cy = offset_from(u_y, nh - size);
    else py = offset_from(u_y, size - nh);
    int vw = nw < size ? nw : size, vh = nh < size ? nh : size;
    jitter(&rs, cx, cy, vw, vh, &p);

    size_t plane = (size_t)size * size;
    for (int y = 0; y < size; y++)
        for (int xo = 0; xo < size; xo++) {
            int sx, sy;
            view_to_canvas(xo, y, size, &p, &sx, &sy);
            size_t o = (size_t)y * size + xo;
            int rx = sx - px + cx, ry = sy - py + cy;
            if (sx < px || sy < py || sx >= px + vw || sy >= py + vh) {
                for (int c = 0; c < 3; c++) x[c * plane + o] = 0;
                labels[o] = LS_IGNORE;
                continue;
            }
            const uint8_t *pix = rs.data + ((size_t)ry * nw + rx) * 3;
            for (int c = 0; c < 3; c++) x[c * plane + o] = normalize(pix[c], mean[c], std[c]);
            labels[o] = has_mask ? ms.data[(size_t)ry * nw + rx] : LS_IGNORE;
        }
done:
    ls_image_free(&rs);
    ls_mask_free(&ms);
    return st;
}

ls_status ls_preprocess(const ls_image *img, int w, int h, const float mean[3], const float std[3],
                        float *x, ls_error *err)
{
    ls_status st;
    if ((st = check_image(img, err)) != LS_OK || (st = check_norm(mean, std, err)) != LS_OK)
        return st;
    if (w < 1 || h < 1 || w > AUG_MAX_SIDE || h > AUG_MAX_SIDE || !x)
        return ls_fail(err, LS_ERR_ARG, "preprocess size %d x %d is outside 1..%d or the output "
                       "is NULL", w, h, AUG_MAX_SIDE);
    ls_image rs;
    if ((st = ls_image_resize(img, w, h, &rs, err)) != LS_OK) return st;
    size_t plane = (size_t)w * h;
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++)
            x[c * plane + i] = normalize(rs.data[i * 3 + c], mean[c], std[c]);
    ls_image_free(&rs);
    return LS_OK;
}

ls_status ls_dihedral(const ls_image *img, const ls_mask *mask, int view, ls_image *out_img,
                      ls_mask *out_mask, ls_error *err)
{
    memset(out_img, 0, sizeof *out_img);
    if (out_mask) memset(out_mask, 0, sizeof *out_mask);
    if (view < 0 || view >= LS_DIHEDRAL_VIEWS)
        return ls_fail(err, LS_ERR_ARG, "dihedral view %d is not 0..%d", view,
                       LS_DIHEDRAL_VIEWS - 1);
    ls_status st = check_image(img, err);
    if (st != LS_OK) return st;
    int has_mask = mask && mask->data;
    if (has_mask && (mask->w != img->w || mask->h != img->h))
        return ls_fail(err, LS_ERR_SHAPE, "dihedral view: mask %dx%d differs from image %dx%d",
                       mask->w, mask->h, img->w, img->h);
    int w = img->w, h = img->h, transpose = view & 4;
    int ow = transpose ? h : w, oh = transpose ? w : h;
    size_t npix = (size_t)w * h;
    out_img->data = malloc(npix * 3);
    uint8_t *labels = has_mask && out_mask ? malloc(npix) : NULL;
    if (!out_img->data || (has_mask && out_mask && !labels)) {
        free(out_img->data);
        out_img->data = NULL;
        free(labels);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory for a %dx%d dihedral view", w, h);
    }
    out_img->w = ow, out_img->h = oh;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int mx = view & 1 ? w - 1 - x : x, my = view & 2 ? h - 1 - y : y;
            size_t dst = transpose ? (size_t)mx * ow + my : (size_t)my * ow + mx;
            size_t src = (size_t)y * w + x;
            memcpy(out_img->data + dst * 3, img->data + src * 3, 3);
            if (labels) labels[dst] = mask->data[src];
        }
    if (labels) out_mask->w = ow, out_mask->h = oh, out_mask->data = labels;
    return LS_OK;
}
