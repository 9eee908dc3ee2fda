/* Augmentation: determinism under a seed, padding, exact geometry and agreement with the
 * evaluation preprocessing when every random transform is switched off. */
#include "leukoseg.h"
#include "testutil.h"

#include <string.h>

static const float MEAN[3] = {0.485f, 0.456f, 0.406f}, STD[3] = {0.229f, 0.224f, 0.225f};

static ls_image make_image(int w, int h, uint64_t seed)
{
    ls_image img = {w, h, malloc((size_t)w * h * 3)};
    ls_rng r;
    ls_rng_seed(&r, seed);
    for (size_t i = 0; i < (size_t)w * h * 3; i++)
        img.data[i] = (uint8_t)(40 + ls_rng_int(&r, 170));
    return img;
}

static ls_augment no_aug(int size)
{
    ls_augment a = ls_augment_default(size);
    a.scale_min = a.scale_max = 1;
    a.hflip = a.vflip = a.rot90 = 0;
    a.brightness = a.contrast = a.saturation = a.hue = 0;
    return a;
}

static void test_defaults(void)
{
    ls_augment a = ls_augment_default(512);
    CHECK(a.size == 512 && a.scale_min == 0.75f && a.scale_max == 1.25f);
    CHECK(a.hflip && a.vflip && a.rot90);
    CHECK(a.brightness == 16 && a.contrast == 0.15f && a.saturation == 0.15f && a.hue == 6);
}

static void test_determinism(void)
{
    ls_error err = {{0}};
    enum { S = 32 };
    ls_image img = make_image(45, 37, 1);
    ls_mask m = {45, 37, malloc(45 * 37)};
    for (int i = 0; i < 45 * 37; i++) m.data[i] = (uint8_t)(i % 3);
    ls_augment a = ls_augment_default(S);
    static float x1[3 * S * S], x2[3 * S * S];
    static uint8_t l1[S * S], l2[S * S];
    ls_rng r1, r2;
    ls_rng_seed(&r1, 7);
    ls_rng_seed(&r2, 7);
    CHECK_OK(ls_augment_sample(&a, &r1, &img, &m, MEAN, STD, x1, l1, &err), err);
    CHECK_OK(ls_augment_sample(&a, &r2, &img, &m, MEAN, STD, x2, l2, &err), err);
    CHECK(memcmp(x1, x2, sizeof x1) == 0 && memcmp(l1, l2, sizeof l1) == 0);
    ls_rng_seed(&r2, 8);
    CHECK_OK(ls_augment_sample(&a, &r2, &img, &m, MEAN, STD, x2, l2, &err), err);
    CHECK(memcmp(x1, x2, sizeof x1) != 0);

    /* The same numbers are drawn whatever the options, so streams stay in step. */
    ls_augment off = no_aug(S);
    ls_rng_seed(&r1, 9);
    ls_rng_seed(&r2, 9);
    CHECK_OK(ls_augment_sample(&a, &r1, &img, &m, MEAN, STD, x1, l1, &err), err);
    CHECK_OK(ls_augment_sample(&off, &r2, &img, NULL, MEAN, STD, x2, l2, &err), err);
    CHECK(memcmp(&r1, &r2, sizeof r1) == 0);
    ls_image_free(&img);
    ls_mask_free(&m);
}

/* A 10 x 20 image at size 32 and scale 0.5 becomes 8 x 16 and is padded on both axes. */
static void test_padding(void)
{
    ls_error err = {{0}};
    enum { S = 32 };
    ls_image img = make_image(10, 20, 2);
    ls_mask m = {10, 20, malloc(200)};
    memset(m.data, 1, 200);
    ls_augment a = no_aug(S);
    a.scale_min = a.scale_max = 0.5f;
    static float x[3 * S * S];
    static uint8_t l[S * S];
    for (uint64_t seed = 0; seed < 5; seed++) {
        ls_rng r;
        ls_rng_seed(&r, seed);
        CHECK_OK(ls_augment_sample(&a, &r, &img, &m, MEAN, STD, x, l, &err), err);
        int x0 = S, y0 = S, x1 = -1, y1 = -1, n_in = 0;
        for (int y = 0; y < S; y++)
            for (int xx = 0; xx < S; xx++) {
                int o = y * S + xx;
                if (l[o] == LS_IGNORE) {
                    CHECK(x[o] == 0 && x[S * S + o] == 0 && x[2 * S * S + o] == 0);
                    continue;
                }
                CHECK(l[o] == 1);
                n_in++;
                x0 = xx < x0 ? xx : x0, y0 = y < y0 ? y : y0;
                x1 = xx > x1 ? xx : x1, y1 = y > y1 ? y : y1;
            }
        /* The image is one solid 8 x 16 block somewhere inside the view. */
        CHECK(n_in == 8 * 16 && x1 - x0 + 1 == 8 && y1 - y0 + 1 == 16);
    }
    /* Without a mask (or with an empty one) every label is ignore. */
    ls_mask empty = {0};
    ls_rng r;
    ls_rng_seed(&r, 3);
    CHECK_OK(ls_augment_sample(&a, &r, &img, &empty, MEAN, STD, x, l, &err), err);
    int all_ignore = 1;
    for (int i = 0; i < S * S; i++) all_ignore &= l[i] == LS_IGNORE;
    CHECK(all_ignore);
    ls_image_free(&img);
    ls_mask_free(&m);
}

/* np.rot90(m, k) for an n x n map: out[i][j] = m[j][n-1-i], applied k times. */
static void rot90(const uint8_t *in, uint8_t *out, int n, int k)
{
    uint8_t tmp[64 * 64];
    memcpy(out, in, (size_t)n * n);
    for (int r = 0; r < k; r++) {
        memcpy(tmp, out, (size_t)n * n);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) out[i * n + j] = tmp[j * n + (n - 1 - i)];
    }
}

/* With only rot90 on, each view is exactly one of the four quarter turns of the input, and all
 * four occur; image and label move together. */
static void test_rot90_exact(void)
{
    ls_error err = {{0}};
    enum { S = 8 };
    ls_image img = make_image(S, S, 4);
    ls_mask m = {S, S, malloc(S * S)};
    for (int i = 0; i < S * S; i++) {
        m.data[i] = (uint8_t)i;
        img.data[i * 3] = (uint8_t)(i * 3);
    }
    ls_augment a = no_aug(S);
    a.rot90 = 1;
    float x[3 * S * S];
    uint8_t l[S * S], want[S * S];
    int seen[4] = {0};
    for (uint64_t seed = 0; seed < 40; seed++) {
        ls_rng r;
        ls_rng_seed(&r, seed);
        CHECK_OK(ls_augment_sample(&a, &r, &img, &m, MEAN, STD, x, l, &err), err);
        int match = -1;
        for (int k = 0; k < 4 && match < 0; k++) {
            rot90(m.data, want, S, k);
            if (memcmp(l, want, sizeof l) == 0) match = k;
        }
        CHECK(match >= 0);
        if (match < 0) continue;
        seen[match] = 1;
        for (int o = 0; o < S * S; o++) {
            float v = ((float)(l[o] * 3) / 255.0f - MEAN[0]) / STD[0];
            CHECK(x[o] == v);
        }
    }
    CHECK(seen[0] && seen[1] && seen[2] && seen[3]);

    /* A fixed known case: k = 1 of [[0,1],[2,3]] is [[1,3],[0,2]]. */
    uint8_t two[4] = {0, 1, 2, 3}, out[4];
    rot90(two, out, 2, 1);
    CHECK(out[0] == 1 && out[1] == 3 && out[2] == 0 && out[3] == 2);

    /* With flips on too, each view is one of the 8 symmetries of the square. */
    a.hflip = a.vflip = 1;
    for (uint64_t seed = 0; seed < 20; seed++) {
        ls_rng r;
        ls_rng_seed(&r, seed);
        CHECK_OK(ls_augment_sample(&a, &r, &img, &m, MEAN, STD, x, l, &err), err);
        uint8_t flipped[S * S];
        for (int i = 0; i < S; i++)
            for (int j = 0; j < S; j++) flipped[i * S + j] = m.data[i * S + (S - 1 - j)];
        int ok = 0;
        for (int k = 0; k < 4; k++) {
            rot90(m.data, want, S, k);
            ok |= memcmp(l, want, sizeof l) == 0;
            rot90(flipped, want, S, k);
            ok |= memcmp(l, want, sizeof l) == 0;
        }
        CHECK(ok);
    }
    ls_image_free(&img);
    ls_mask_free(&m);
}

/* Scale 1, no flips and no jitter on a size x size image reproduces ls_preprocess bit for bit. */
static void test_matches_preprocess(void)
{
    ls_error err = {{0}};
    enum { S = 24 };
    ls_image img = make_image(S, S, 5);
    ls_mask m = {S, S, malloc(S * S)};
    for (int i = 0; i < S * S; i++) m.data[i] = (uint8_t)(i % 7 == 0 ? LS_IGNORE : i % 3);
    ls_augment a = no_aug(S);
    static float x[3 * S * S], xp[3 * S * S];
    uint8_t l[S * S];
    ls_rng r;
    ls_rng_seed(&r, 11);
    CHECK_OK(ls_augment_sample(&a, &r, &img, &m, MEAN, STD, x, l, &err), err);
    CHECK_OK(ls_preprocess(&img, S, S, MEAN, STD, xp, &err), err);
    CHECK(memcmp(x, xp, sizeof x) == 0);
    CHECK(memcmp(l, m.data, sizeof l) == 0);
    CHECK_NEAR(xp[S * S + 5], (img.data[5 * 3 + 1] / 255.0 - MEAN[1]) / STD[1], 1e-6);

    /* Preprocess at another size has that size and stays finite. */
    static float small[3 * 10 * 7];
    CHECK_OK(ls_preprocess(&img, 10, 7, MEAN, STD, small, &err), err);
    for (int i = 0; i < 3 * 70; i++) CHECK(isfinite(small[i]));
    ls_image_free(&img);
    ls_mask_free(&m);
}

/* Undo the normalisation of channel c at pixel o back to 0..255 units. */
static float pixel_value(const float *x, int plane, int c, int o)
{
    return (x[c * plane + o] * STD[c] + MEAN[c]) * 255.0f;
}

static void test_colour_jitter(void)
{
    ls_error err = {{0}};
    enum { S = 16 };
    ls_image img = make_image(S, S, 6);
    static float x[3 * S * S], base[3 * S * S];
    uint8_t l[S * S];
    CHECK_OK(ls_preprocess(&img, S, S, MEAN, STD, base, &err), err);

    /* Brightness alone shifts every channel of every pixel by one whole amount (no clipping:
     * pixels are 40..209 and the shift at most 16). */
    ls_augment a = no_aug(S);
    a.brightness = 16;
    ls_rng r;
    ls_rng_seed(&r, 12);
    CHECK_OK(ls_augment_sample(&a, &r, &img, NULL, MEAN, STD, x, l, &err), err);
    float d0 = pixel_value(x, S * S, 0, 0) - pixel_value(base, S * S, 0, 0);
    CHECK(fabsf(d0) <= 16.5f);
    for (int c = 0; c < 3; c++)
        for (int o = 0; o < S * S; o++)
            CHECK_NEAR(pixel_value(x, S * S, c, o) - pixel_value(base, S * S, c, o), d0, 1e-3);

    /* Saturation and hue leave gray pixels untouched. */
    ls_image gray = {S, S, malloc(S * S * 3)};
    for (int i = 0; i < S * S; i++) memset(gray.data + i * 3, 30 + i % 200, 3);
    CHECK_OK(ls_preprocess(&gray, S, S, MEAN, STD, base, &err), err);
    a = no_aug(S);
    a.saturation = 0.5f;
    a.hue = 30;
    ls_rng_seed(&r, 13);
    CHECK_OK(ls_augment_sample(&a, &r, &gray, NULL, MEAN, STD, x, l, &err), err);
    CHECK(memcmp(x, base, sizeof x) == 0);

    /* Hue moves a coloured image, and values stay within 0..255. */
    ls_rng_seed(&r, 14);
    CHECK_OK(ls_augment_sample(&a, &r, &img, NULL, MEAN, STD, x, l, &err), err);
    CHECK_OK(ls_preprocess(&img, S, S, MEAN, STD, base, &err), err);
    CHECK(memcmp(x, base, sizeof x) != 0);
    for (int c = 0; c < 3; c++)
        for (int o = 0; o < S * S; o++) {
            float v = pixel_value(x, S * S, c, o);
            CHECK(v > -0.01f && v < 255.01f);
        }
    ls_image_free(&img);
    ls_image_free(&gray);
}

static void test_errors(void)
{
    ls_error err = {{0}};
    ls_image img = make_image(8, 8, 7);
    ls_mask m = {8, 9, calloc(72, 1)};
    float x[3 * 8 * 8];
    uint8_t l[64];
    ls_rng r;
    ls_rng_seed(&r, 1);
    ls_augment a = ls_augment_default(8);
    CHECK(ls_augment_sample(&a, &r, &img, &m, MEAN, STD, x, l, &err) == LS_ERR_SHAPE);
    CHECK(strstr(err.msg, "8 x 9") != NULL);
    a.scale_min = 0;
    CHECK(ls_augment_sample(&a, &r, &img, NULL, MEAN, STD, x, l, &err) == LS_ERR_ARG);
    a = ls_augment_default(0);
    CHECK(ls_augment_sample(&a, &r, &img, NULL, MEAN, STD, x, l, &err) == LS_ERR_ARG);
    a = ls_augment_default(8);
    float bad_std[3] = {1, 0, 1};
    CHECK(ls_augment_sample(&a, &r, &img, NULL, MEAN, bad_std, x, l, &err) == LS_ERR_ARG);
    CHECK(ls_preprocess(&img, 0, 8, MEAN, STD, x, &err) == LS_ERR_ARG);
    ls_image none = {0};
    CHECK(ls_preprocess(&none, 8, 8, MEAN, STD, x, &err) == LS_ERR_ARG);
    ls_image_free(&img);
    ls_mask_free(&m);
}

/* A 3x2 image whose pixel (x, y) holds 10 * y + x in every channel, and a mask of the same
 * values: each of the 8 views must put pixel (x, y) where its mirrors and transpose say. */
static void test_dihedral(void)
{
    ls_error err = {{0}};
    enum { W = 3, H = 2 };
    uint8_t pix[W * H * 3], lab[W * H];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            lab[y * W + x] = (uint8_t)(10 * y + x);
            memset(pix + (y * W + x) * 3, 10 * y + x, 3);
        }
    ls_image img = {W, H, pix};
    ls_mask mask = {W, H, lab};
    /* view 6 = mirror top-bottom, then transpose: row 0 of the output is column 0 read upwards */
    static const uint8_t view6[W * H] = {10, 0, 11, 1, 12, 2};
    for (int v = 0; v < LS_DIHEDRAL_VIEWS; v++) {
        ls_image out = {0};
        ls_mask out_mask = {0};
        CHECK_OK(ls_dihedral(&img, &mask, v, &out, &out_mask, &err), err);
        int tr = v & 4;
        CHECK(out.w == (tr ? H : W) && out.h == (tr ? W : H));
        CHECK(out_mask.w == out.w && out_mask.h == out.h && out_mask.data);
        for (int y = 0; y < H && out.data && out_mask.data; y++)
            for (int x = 0; x < W; x++) {
                int mx = v & 1 ? W - 1 - x : x, my = v & 2 ? H - 1 - y : y;
                int ox = tr ? my : mx, oy = tr ? mx : my;
                CHECK(out_mask.data[oy * out.w + ox] == 10 * y + x);
                CHECK(out.data[(oy * out.w + ox) * 3 + 2] == 10 * y + x);
            }
        if (v == 6 && out_mask.data) CHECK(memcmp(out_mask.data, view6, sizeof view6) == 0);
        if (v == 0 && out.data) CHECK(memcmp(out.data, pix, sizeof pix) == 0);
        ls_image_free(&out);
        ls_mask_free(&out_mask);
    }
    ls_image out = {0};
    ls_mask out_mask = {0};
    CHECK_OK(ls_dihedral(&img, NULL, 5, &out, &out_mask, &err), err);
    CHECK(out_mask.data == NULL && out.w == H && out.data[0] == 2);
    ls_image_free(&out);
    CHECK(ls_dihedral(&img, &mask, 8, &out, &out_mask, &err) == LS_ERR_ARG);
    CHECK(strstr(err.msg, "view 8") != NULL && out.data == NULL);
    ls_mask small = {2, 2, lab};
    CHECK(ls_dihedral(&img, &small, 1, &out, &out_mask, &err) == LS_ERR_SHAPE);
    CHECK(strstr(err.msg, "2x2") != NULL && out.data == NULL && out_mask.data == NULL);
}

int main(void)
{
    test_defaults();
    test_determinism();
    test_padding();
    test_rot90_exact();
    test_matches_preprocess();
    test_colour_jitter();
    test_errors();
    test_dihedral();
    TEST_DONE();
}
