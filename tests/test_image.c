/* Image and mask I/O: every BMP variant built by hand, PNG depths and colour types, JPEG,
 * truncated and hostile files, level mapping, resizing against hand-computed Pillow values,
 * and the atomic PNG writers. */
#include "leukoseg.h"
#include "testutil.h"

#include <dirent.h>
#include <png.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
/* jpeglib.h needs stdio.h (from testutil.h) first. */
#include <jpeglib.h>

static char tmpdir[64];

/* Removes the files the tests wrote, then the folder. */
static void cleanup(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    char p[512];
    while (d && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        remove(p);
    }
    if (d) closedir(d);
    rmdir(tmpdir);
}

static const char *tpath(const char *name)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

static void write_bytes(const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fwrite(b, 1, n, f) == n);
    fclose(f);
}

/* ------------------------------------------------------------------------------------------ */
/* BMP builder                                                                                 */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    uint8_t d[8192];
    size_t n;
} buf;

static void p8(buf *b, unsigned v) { b->d[b->n++] = (uint8_t)v; }
static void p16(buf *b, unsigned v)
{
    p8(b, v & 255);
    p8(b, (v >> 8) & 255);
}
static void p32(buf *b, uint32_t v)
{
    p16(b, v & 0xFFFF);
    p16(b, v >> 16);
}
static void set32(buf *b, size_t at, uint32_t v)
{
    for (int i = 0; i < 4; i++) b->d[at + (size_t)i] = (uint8_t)(v >> (8 * i));
}
static void pad4(buf *b, size_t row_start)
{
    while ((b->n - row_start) % 4) p8(b, 0);
}

/* File header and info header of size hsz; masks (or NULL) go into V2+ headers. */
static void bmp_header(buf *b, int hsz, int32_t w, int32_t h, int bpp, uint32_t comp,
                       uint32_t clr_used, const uint32_t *masks)
{
    b->n = 0;
    p8(b, 'B');
    p8(b, 'M');
    p32(b, 0);
    p32(b, 0);
    p32(b, 0);
    p32(b, (uint32_t)hsz);
    if (hsz == 12) {
        p16(b, (unsigned)w);
        p16(b, (unsigned)h);
        p16(b, 1);
        p16(b, (unsigned)bpp);
        return;
    }
    p32(b, (uint32_t)w);
    p32(b, (uint32_t)h);
    p16(b, 1);
    p16(b, (unsigned)bpp);
    if (hsz == 16) return;
    p32(b, comp);
    p32(b, 0);
    p32(b, 2835);
    p32(b, 2835);
    p32(b, clr_used);
    p32(b, 0);
    for (int i = 40; i < hsz; i += 4) p32(b, masks && i < 52 ? masks[(i - 40) / 4] : 0);
}
static void bmp_pixels_here(buf *b) { set32(b, 10, (uint32_t)b->n); }
static void bmp_done(buf *b) { set32(b, 2, (uint32_t)b->n); }

/* The 3x2 test picture, top row first. */
static const uint8_t E[2][3][3] = {{{255, 0, 0}, {0, 255, 0}, {0, 0, 255}},
                                   {{255, 255, 255}, {128, 128, 128}, {0, 0, 0}}};

static void check_picture(const char *what, const buf *b, const uint8_t exp[2][3][3])
{
    ls_image img;
    ls_error err = {""};
    ls_status st = ls_image_decode(b->d, b->n, what, &img, &err);
    if (st != LS_OK) {
        fprintf(stderr, "%s: decode failed: %s\n", what, err.msg);
        tu_failures++;
        return;
    }
    CHECK(img.w == 3 && img.h == 2);
    int bad = 0;
    for (int y = 0; y < 2 && img.w == 3 && img.h == 2; y++) {
        for (int x = 0; x < 3; x++) bad += memcmp(img.data + (y * 3 + x) * 3, exp[y][x], 3) != 0;
    }
    if (bad) {
        fprintf(stderr, "%s: %d pixel(s) differ\n", what, bad);
        tu_failures++;
    }
    ls_image_free(&img);
}

static void put_bgr(buf *b, const uint8_t *c)
{
    p8(b, c[2]);
    p8(b, c[1]);
    p8(b, c[0]);
}

static void palette_of_E(buf *b, int entries, int four)
{
    for (int k = 0; k < entries; k++) {
        static const uint8_t zero[3] = {0, 0, 0};
        put_bgr(b, k < 6 ? E[k / 3][k % 3] : zero);
        if (four) p8(b, 0);
    }
}

/* 24-bit, bottom-up (h > 0) or top-down (h < 0). */
static void bmp24(buf *b, int hsz, int top_down)
{
    bmp_header(b, hsz, 3, top_down ? -2 : 2, 24, 0, 0, NULL);
    bmp_pixels_here(b);
    for (int r = 0; r < 2; r++) {
        size_t s = b->n;
        for (int x = 0; x < 3; x++) put_bgr(b, E[top_down ? r : 1 - r][x]);
        pad4(b, s);
    }
    bmp_done(b);
}

static uint32_t bits(unsigned v, int nbits) { return (v * ((1u << nbits) - 1) + 127) / 255; }

static void test_bmp_variants(void)
{
    buf b;
    bmp24(&b, 40, 0);
    check_picture("24-bit bottom-up", &b, E);
    write_bytes(tpath("24 bit.bmp"), b.d, b.n);
    ls_image img;
    ls_error err = {""};
    CHECK_OK(ls_image_load(tpath("24 bit.bmp"), &img, &err), err);
    CHECK(img.w == 3 && img.h == 2 && img.data && memcmp(img.data, E, 18) == 0);
    ls_image_free(&img);
    bmp24(&b, 40, 1);
    check_picture("24-bit top-down", &b, E);
    bmp24(&b, 124, 1);
    check_picture("24-bit V5 top-down", &b, E);
    bmp24(&b, 12, 0);
    check_picture("24-bit OS/2 core", &b, E);
    bmp24(&b, 16, 0);
    check_picture("24-bit OS/2 2.x short header", &b, E);
    bmp24(&b, 64, 0);
    check_picture("24-bit OS/2 2.x", &b, E);

    /* 32-bit BI_RGB: B, G, R, unused. */
    bmp_header(&b, 40, 3, 2, 32, 0, 0, NULL);
    bmp_pixels_here(&b);
    for (int r = 0; r < 2; r++) {
        for (int x = 0; x < 3; x++) {
            put_bgr(&b, E[1 - r][x]);
            p8(&b, 0x77);
        }
    }
    bmp_done(&b);
    check_picture("32-bit BI_RGB", &b, E);

    /* 32-bit BI_BITFIELDS, masks after a 40-byte header, RGBA byte order from the top. */
    bmp_header(&b, 40, 3, 2, 32, 3, 0, NULL);
    p32(&b, 0xFF000000u);
    p32(&b, 0x00FF0000u);
    p32(&b, 0x0000FF00u);
    bmp_pixels_here(&b);
    for (int r = 0; r < 2; r++) {
        for (int x = 0; x < 3; x++) {
            const uint8_t *c = E[1 - r][x];
            p32(&b, (uint32_t)c[0] << 24 | (uint32_t)c[1] << 16 | (uint32_t)c[2] << 8 | 0x55);
        }
    }
    bmp_done(&b);
    check_picture("32-bit bitfields (40-byte header)", &b, E);

    /* V4 header carrying the masks itself: R in the low byte. */
    const uint32_t v4m[3] = {0x000000FFu, 0x0000FF00u, 0x00FF0000u};
    bmp_header(&b, 108, 3, 2, 32, 3, 0, v4m);
    bmp_pixels_here(&b);
    for (int r = 0; r < 2; r++) {
        for (int x = 0; x < 3; x++) {
            const uint8_t *c = E[1 - r][x];
            p32(&b, (uint32_t)c[2] << 16 | (uint32_t)c[1] << 8 | c[0]);
        }
    }
    bmp_done(&b);
    check_picture("32-bit bitfields (V4)", &b, E);

    /* 16-bit: 5-bit 128 is stored as 16 and reads back as (16*255+15)/31 = 132; 6-bit as 32 ->
     * (32*255+31)/63 = 130. */
    uint8_t e555[2][3][3], e565[2][3][3];
    memcpy(e555, E, sizeof e555);
    memcpy(e565, E, sizeof e565);
    memset(e555[1][1], 132, 3);
    e565[1][1][0] = e565[1][1][2] = 132;
    e565[1][1][1] = 130;
    bmp_header(&b, 40, 3, 2, 16, 0, 0, NULL);
    bmp_pixels_here(&b);
    for (int r = 0; r < 2; r++) {
        size_t s = b.n;
        for (int x = 0; x < 3; x++) {
            const uint8_t *c = E[1 - r][x];
            p16(&b, bits(c[0], 5) << 10 | bits(c[1], 5) << 5 | bits(c[2], 5));
        }
        pad4(&b, s);
    }
    bmp_done(&b);
    check_picture("16-bit 555", &b, (const uint8_t(*)[3][3])e555);

    const uint32_t m565[3] = {0xF800, 0x07E0, 0x001F};
    bmp_header(&b, 56, 3, 2, 16, 3, 0, m565);
    bmp_pixels_here(&b);
    for (int r = 0; r < 2; r++) {
        size_t s = b.n;
        for (int x = 0; x < 3; x++) {
            const uint8_t *c = E[1 - r][x];
            p16(&b, bits(c[0], 5) << 11 | bits(c[1], 6) << 5 | bits(c[2], 5));
        }
        pad4(&b, s);
    }
    bmp_done(&b);
    check_picture("16-bit 565 bitfields (V3)", &b, (const uint8_t(*)[3][3])e565);

    /* 8-bit indexed with a 6-entry palette; index = y*3 + x. */
    bmp_header(&b, 40, 3, 2, 8, 0, 6, NULL);
    palette_of_E(&b, 6, 1);
    bmp_pixels_here(&b);
    for (int r = 0; r < 2; r++) {
        size_t s = b.n;
        for (int x = 0; x < 3; x++) p8(&b, (unsigned)((1 - r) * 3 + x));
        pad4(&b, s);
    }
    bmp_done(&b);
    check_picture("8-bit indexed", &b, E);
    write_bytes(tpath("indexed8.bmp"), b.d, b.n);
    ls_raw_mask raw;
    CHECK_OK(ls_raw_mask_load(tpath("indexed8.bmp"), &raw, &err), err);
    CHECK(raw.is_palette == 1 && raw.bit_depth == 8 && raw.w == 3 && raw.h == 2);
    for (int i = 0; raw.data && i < 6; i++) CHECK(raw.data[i] == i);
    ls_raw_mask_free(&raw);

    /* OS/2 core 8-bit: 3-byte palette entries, always 256 of them. */
    bmp_header(&b, 12, 3, 2, 8, 0, 0, NULL);
    palette_of_E(&b, 256, 0);
    bmp_pixels_here(&b);
    for (int r = 0; r < 2; r++) {
        size_t s = b.n;
        for (int x = 0; x < 3; x++) p8(&b, (unsigned)((1 - r) * 3 + x));
        pad4(&b, s);
    }
    bmp_done(&b);
    check_picture("8-bit OS/2 core", &b, E);

    /* 4-bit indexed, full 16-entry palette, high nibble first. */
    bmp_header(&b, 40, 3, 2, 4, 0, 0, NULL);
    palette_of_E(&b, 16, 1);
    bmp_pixels_here(&b);
    for (int r = 0; r < 2; r++) {
        size_t s = b.n;
        unsigned i0 = (unsigned)(1 - r) * 3;
        p8(&b, i0 << 4 | (i0 + 1));
        p8(&b, (i0 + 2) << 4);
        pad4(&b, s);
    }
    bmp_done(&b);
    check_picture("4-bit indexed", &b, E);

    /* 1-bit, 10 wide: row 0 alternates, row 1 in runs of three; most significant bit first. */
    bmp_header(&b, 40, 10, 2, 1, 0, 2, NULL);
    p32(&b, 0x001E140A); /* B, G, R, 0 = 10, 20, 30: RGB (30, 20, 10) */
    p32(&b, 0x00326496); /* RGB (50, 100, 150) */
    bmp_pixels_here(&b);
    for (int r = 0; r < 2; r++) {
        size_t s = b.n;
        unsigned bitsrow = 0;
        for (int x = 0; x < 10; x++)
            bitsrow |= (unsigned)(r == 1 ? x % 2 : (x / 3) % 2) << (15 - x);
        p8(&b, bitsrow >> 8);
        p8(&b, bitsrow & 255);
        pad4(&b, s);
    }
    bmp_done(&b);
    CHECK_OK(ls_image_decode(b.d, b.n, "1-bit", &img, &err), err);
    CHECK(img.w == 10 && img.h == 2);
    for (int y = 0; img.data && y < 2; y++) {
        for (int x = 0; x < 10; x++) {
            int k = y == 0 ? x % 2 : (x / 3) % 2;
            const uint8_t *px = img.data + (y * 10 + x) * 3;
            CHECK(px[0] == (k ? 50 : 30) && px[1] == (k ? 100 : 20) && px[2] == (k ? 150 : 10));
        }
    }
    ls_image_free(&img);

    /* A gray palette stores gray values: the mask reads the values, not the indices. */
    bmp_header(&b, 40, 3, 1, 8, 0, 0, NULL);
    for (int k = 0; k < 256; k++) p32(&b, (uint32_t)(255 - k) * 0x010101u);
    bmp_pixels_here(&b);
    p8(&b, 255);
    p8(&b, 127);
    p8(&b, 0);
    p8(&b, 0);
    bmp_done(&b);
    write_bytes(tpath("graypal.bmp"), b.d, b.n);
    CHECK_OK(ls_raw_mask_load(tpath("graypal.bmp"), &raw, &err), err);
    CHECK(raw.is_palette == 0 && raw.bit_depth == 8 && raw.w == 3 && raw.h == 1);
    CHECK(raw.data && raw.data[0] == 0 && raw.data[1] == 128 && raw.data[2] == 255);
    ls_raw_mask_free(&raw);

    /* A 24-bit mask in colour is refused with a message saying what to do. */
    bmp24(&b, 40, 0);
    write_bytes(tpath("colour mask.bmp"), b.d, b.n);
    CHECK(ls_raw_mask_load(tpath("colour mask.bmp"), &raw, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "colour mask.bmp") && strstr(err.msg, "grayscale"));
    CHECK(raw.data == NULL);
}

/* RLE8 5x3 and RLE4 5x2 exercising runs, absolute runs with padding, delta, end of line and end
 * of bitmap; skipped pixels are index 0. */
static void test_bmp_rle(void)
{
    buf b;
    ls_raw_mask raw;
    ls_image img;
    ls_error err = {""};
    static const uint8_t rle8[] = {2, 1, 0, 3, 2, 3, 4, 0, 0, 0,  /* row 0: 1 1 2 3 4, EOL */
                                   1, 5, 0, 2, 2, 1,              /* row 1: 5, delta (+2, +1) */
                                   2, 2, 0, 1};                   /* row 2 from x=3: 2 2, EOB */
    static const uint16_t want8[15] = {0, 0, 0, 2, 2, 5, 0, 0, 0, 0, 1, 1, 2, 3, 4};
    bmp_header(&b, 40, 5, 3, 8, 1, 6, NULL);
    palette_of_E(&b, 6, 1);
    bmp_pixels_here(&b);
    for (size_t i = 0; i < sizeof rle8; i++) p8(&b, rle8[i]);
    bmp_done(&b);
    write_bytes(tpath("rle8.bmp"), b.d, b.n);
    CHECK_OK(ls_raw_mask_load(tpath("rle8.bmp"), &raw, &err), err);
    CHECK(raw.w == 5 && raw.h == 3 && raw.is_palette);
    for (int i = 0; raw.data && i < 15; i++) CHECK(raw.data[i] == want8[i]);
    ls_raw_mask_free(&raw);
    CHECK_OK(ls_image_decode(b.d, b.n, "rle8", &img, &err), err);
    for (int i = 0; img.data && i < 15; i++)
        CHECK(memcmp(img.data + i * 3, E[want8[i] / 3][want8[i] % 3], 3) == 0);
    ls_image_free(&img);
    /* Every prefix is truncated somewhere: header, palette or RLE stream. */
    int crashes_or_passes = 0;
    for (size_t n = 0; n < b.n; n++) {
        if (ls_image_decode(b.d, n, "cut rle8", &img, &err) == LS_OK) crashes_or_passes++;
        ls_image_free(&img);
    }
    CHECK(crashes_or_passes == 0);

    /* Row 0: run 1 2, absolute 1 3 4, EOL; row 1: absolute of 5 (3 bytes + 1 pad), EOB. */
    static const uint8_t rle4[] = {2, 0x12, 0, 3, 0x13, 0x40, 0, 0,
                                   0, 5, 0x51, 0x20, 0x30, 0, 0, 1};
    static const uint16_t want4[10] = {5, 1, 2, 0, 3, 1, 2, 1, 3, 4};
    bmp_header(&b, 40, 5, 2, 4, 2, 6, NULL);
    palette_of_E(&b, 6, 1);
    bmp_pixels_here(&b);
    for (size_t i = 0; i < sizeof rle4; i++) p8(&b, rle4[i]);
    bmp_done(&b);
    write_bytes(tpath("rle4.bmp"), b.d, b.n);
    CHECK_OK(ls_raw_mask_load(tpath("rle4.bmp"), &raw, &err), err);
    CHECK(raw.w == 5 && raw.h == 2 && raw.is_palette && raw.bit_depth == 4);
    for (int i = 0; raw.data && i < 10; i++) CHECK(raw.data[i] == want4[i]);
    ls_raw_mask_free(&raw);

    /* Runs longer than the row are clipped, never written past the buffer. */
    static const uint8_t wild[] = {255, 1, 0, 200, 0, 2, 255, 255, 0, 1};
    bmp_header(&b, 40, 5, 2, 8, 1, 6, NULL);
    palette_of_E(&b, 6, 1);
    bmp_pixels_here(&b);
    for (size_t i = 0; i < sizeof wild; i++) p8(&b, wild[i]);
    bmp_done(&b);
    ls_status st = ls_image_decode(b.d, b.n, "wild rle", &img, &err);
    /* The absolute run of 200 is cut short by the file, so this one is an error. */
    CHECK(st == LS_ERR_FORMAT);
    ls_image_free(&img);
    static const uint8_t wide[] = {255, 1, 0, 2, 255, 255, 0, 1};
    b.n = 0;
    bmp_header(&b, 40, 5, 2, 8, 1, 6, NULL);
    palette_of_E(&b, 6, 1);
    bmp_pixels_here(&b);
    for (size_t i = 0; i < sizeof wide; i++) p8(&b, wide[i]);
    bmp_done(&b);
    CHECK_OK(ls_image_decode(b.d, b.n, "wide rle", &img, &err), err);
    CHECK(img.data && memcmp(img.data + 5 * 3, E[0][1], 3) == 0); /* bottom row is index 1 */
    ls_image_free(&img);
}

static void expect_format_error(const char *what, const buf *b)
{
    ls_image img;
    ls_error err = {""};
    ls_status st = ls_image_decode(b->d, b->n, what, &img, &err);
    if (st != LS_ERR_FORMAT) {
        fprintf(stderr, "%s: expected a format error, got %d\n", what, (int)st);
        tu_failures++;
    }
    CHECK(img.data == NULL);
    CHECK(strstr(err.msg, what) != NULL);
}

static void test_bmp_hostile(void)
{
    buf b;
    bmp24(&b, 40, 0);
    int passes = 0;
    for (size_t n = 0; n < b.n; n++) {
        ls_image img;
        ls_error err;
        if (ls_image_decode(b.d, n, "cut", &img, &err) == LS_OK) passes++;
        ls_image_free(&img);
    }
    CHECK(passes == 0);

    bmp_header(&b, 40, 20000, 2, 24, 0, 0, NULL);
    bmp_pixels_here(&b);
    bmp_done(&b);
    expect_format_error("huge width", &b);
    bmp_header(&b, 40, 3, 0, 24, 0, 0, NULL);
    bmp_pixels_here(&b);
    bmp_done(&b);
    expect_format_error("zero height", &b);
    bmp_header(&b, 40, 3, (int32_t)0x80000000u, 24, 0, 0, NULL);
    bmp_pixels_here(&b);
    bmp_done(&b);
    expect_format_error("INT32_MIN height", &b);
    bmp_header(&b, 40, 3, 2, 2, 0, 0, NULL);
    bmp_pixels_here(&b);
    bmp_done(&b);
    expect_format_error("2 bits per pixel", &b);
    bmp_header(&b, 41, 3, 2, 24, 0, 0, NULL);
    bmp_done(&b);
    expect_format_error("odd header size", &b);
    const uint32_t holes[3] = {0x0F0F, 0x00F0, 0xF000};
    bmp_header(&b, 56, 3, 2, 16, 3, 0, holes);
    bmp_pixels_here(&b);
    for (int i = 0; i < 16; i++) p8(&b, 0);
    bmp_done(&b);
    expect_format_error("gappy mask", &b);
    bmp_header(&b, 40, 3, -2, 8, 1, 6, NULL);
    palette_of_E(&b, 6, 1);
    bmp_pixels_here(&b);
    p16(&b, 1);
    bmp_done(&b);
    expect_format_error("top-down RLE", &b);
    /* Index 5 with a 2-entry palette. */
    bmp_header(&b, 40, 3, 1, 8, 0, 2, NULL);
    palette_of_E(&b, 2, 1);
    bmp_pixels_here(&b);
    p32(&b, 0x00050100);
    bmp_done(&b);
    expect_format_error("index beyond palette", &b);
    /* Pixel offset pointing into the header. */
    bmp24(&b, 40, 0);
    set32(&b, 10, 20);
    expect_format_error("offset in header", &b);
    /* JPEG inside BMP is not supported. */
    bmp_header(&b, 40, 3, 2, 24, 4, 0, NULL);
    bmp_pixels_here(&b);
    p32(&b, 0);
    bmp_done(&b);
    expect_format_error("BI_JPEG", &b);
    uint8_t junk[6] = {'G', 'I', 'F', '8', '9', 'a'};
    ls_image img;
    ls_error err;
    CHECK(ls_image_decode(junk, sizeof junk, "x.gif", &img, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "x.gif") && strstr(err.msg, "not a BMP, PNG or JPEG"));
    CHECK(ls_image_decode(junk, 0, "empty", &img, &err) == LS_ERR_FORMAT);
    CHECK(ls_image_load(tpath("does not exist.png"), &img, &err) == LS_ERR_IO);
    CHECK(strstr(err.msg, "does not exist.png") != NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* PNG                                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* Writes a PNG with libpng directly (rows already packed as PNG stores them). */
static void write_png(const char *path, int w, int h, int depth, int color, const uint8_t *rows,
                      size_t rowbytes, const png_color *pal, int npal, const uint8_t *trns,
                      int ntrns, int interlace)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(png, info, pal, npal);
    if (trns) png_set_tRNS(png, info, trns, ntrns, NULL);
    png_write_info(png, info);
    png_bytep rp[64];
    for (int y = 0; y < h; y++) rp[y] = (png_bytep)(rows + (size_t)y * rowbytes);
    png_write_image(png, rp);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(f);
}

/* Packs one index per byte into PNG rows of the given bit depth. */
static size_t pack(const uint8_t *idx, int w, int h, int depth, uint8_t *out)
{
    size_t rb = ((size_t)w * (size_t)depth + 7) / 8;
    memset(out, 0, rb * (size_t)h);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            int bit = x * depth;
            out[(size_t)y * rb + (size_t)(bit / 8)] |=
                (uint8_t)(idx[y * w + x] << (8 - depth - bit % 8));
        }
    }
    return rb;
}

static size_t read_all(const char *path, uint8_t *b, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(b, 1, cap, f);
    fclose(f);
    return n;
}

static void test_png_masks(void)
{
    ls_error err = {""};
    ls_raw_mask raw;
    ls_mask m;
    png_color pal[256];
    for (int k = 0; k < 256; k++) pal[k] = (png_color){(uint8_t)k, (uint8_t)(255 - k), 7};
    uint8_t trns[4] = {0, 128, 255, 255};
    uint8_t rows[256];

    /* Input case 3: 4x4 palette indices {0,1,2,255} decode exactly, and map to labels. */
    uint8_t idx[16];
    for (int i = 0; i < 16; i++) idx[i] = (uint8_t)(i % 4 == 3 ? 255 : i % 4);
    size_t rb = pack(idx, 4, 4, 8, rows);
    write_png(tpath("pal8.png"), 4, 4, 8, PNG_COLOR_TYPE_PALETTE, rows, rb, pal, 256, trns, 4, 0);
    CHECK_OK(ls_raw_mask_load(tpath("pal8.png"), &raw, &err), err);
    CHECK(raw.is_palette && raw.bit_depth == 8 && raw.w == 4 && raw.h == 4);
    for (int i = 0; raw.data && i < 16; i++) CHECK(raw.data[i] == idx[i]);
    ls_level_map map = {3, {0, 128, 255}, 0, 255};
    CHECK_OK(ls_mask_from_raw(&raw, &map, "pal8.png", &m, NULL, &err), err);
    for (int i = 0; m.data && i < 16; i++) CHECK(m.data[i] == idx[i]);
    ls_mask_free(&m);
    /* Without an ignore index, 255 is an error naming the file, index and pixel count. */
    map.ignore_value = -1;
    CHECK(ls_mask_from_raw(&raw, &map, "pal8.png", &m, NULL, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "pal8.png") && strstr(err.msg, "4 pixel(s) hold palette indices")
          && strstr(err.msg, ": 255 (4 px)"));
    CHECK(m.data == NULL);
    ls_raw_mask_free(&raw);

    /* Bit depths 1, 2, 4 with tRNS: indices exactly as stored. */
    for (int depth = 1; depth <= 4; depth *= 2) {
        int top = (1 << depth) - 1;
        for (int i = 0; i < 16; i++) idx[i] = (uint8_t)(i % 4 == 3 ? top : (i % 4) % (top + 1));
        rb = pack(idx, 4, 4, depth, rows);
        char name[32];
        snprintf(name, sizeof name, "pal%d.png", depth);
        write_png(tpath(name), 4, 4, depth, PNG_COLOR_TYPE_PALETTE, rows, rb, pal, top + 1, trns,
                  2, 0);
        CHECK_OK(ls_raw_mask_load(tpath(name), &raw, &err), err);
        CHECK(raw.is_palette && raw.bit_depth == depth);
        for (int i = 0; raw.data && i < 16; i++) CHECK(raw.data[i] == idx[i]);
        ls_raw_mask_free(&raw);
    }

    /* Input case 4: 16-bit gray labels 0..3 stay 0..3. */
    uint8_t g16[4 * 2 * 2];
    for (int i = 0; i < 8; i++) {
        g16[2 * i] = 0;
        g16[2 * i + 1] = (uint8_t)(i % 4);
    }
    write_png(tpath("gray16 mask.png"), 4, 2, 16, PNG_COLOR_TYPE_GRAY, g16, 8, NULL, 0, NULL, 0,
              0);
    CHECK_OK(ls_raw_mask_load(tpath("gray16 mask.png"), &raw, &err), err);
    CHECK(!raw.is_palette && raw.bit_depth == 16 && raw.w == 4 && raw.h == 2);
    for (int i = 0; raw.data && i < 8; i++) CHECK(raw.data[i] == i % 4);
    ls_level_map labels = {4, {0, 1, 2, 3}, 0, -1};
    long snapped = -1;
    CHECK_OK(ls_mask_from_raw(&raw, &labels, "g16", &m, &snapped, &err), err);
    CHECK(snapped == 0);
    for (int i = 0; m.data && i < 8; i++) CHECK(m.data[i] == i % 4);
    ls_mask_free(&m);
    ls_raw_mask_free(&raw);

    /* Low-depth gray keeps stored values (2-bit 0..3). */
    for (int i = 0; i < 16; i++) idx[i] = (uint8_t)(i % 4);
    rb = pack(idx, 4, 4, 2, rows);
    write_png(tpath("gray2.png"), 4, 4, 2, PNG_COLOR_TYPE_GRAY, rows, rb, NULL, 0, NULL, 0, 0);
    CHECK_OK(ls_raw_mask_load(tpath("gray2.png"), &raw, &err), err);
    CHECK(!raw.is_palette && raw.bit_depth == 2);
    for (int i = 0; raw.data && i < 16; i++) CHECK(raw.data[i] == i % 4);
    ls_raw_mask_free(&raw);

    /* RGB masks: gray pixels pass as values, a coloured pixel is an error naming it. */
    uint8_t rgb[2 * 3] = {128, 128, 128, 255, 255, 255};
    write_png(tpath("rgbgray.png"), 2, 1, 8, PNG_COLOR_TYPE_RGB, rgb, 6, NULL, 0, NULL, 0, 0);
    CHECK_OK(ls_raw_mask_load(tpath("rgbgray.png"), &raw, &err), err);
    CHECK(raw.data && raw.data[0] == 128 && raw.data[1] == 255 && raw.bit_depth == 8);
    ls_raw_mask_free(&raw);
    rgb[4] = 0;
    write_png(tpath("rgbcolour.png"), 2, 1, 8, PNG_COLOR_TYPE_RGB, rgb, 6, NULL, 0, NULL, 0, 0);
    CHECK(ls_raw_mask_load(tpath("rgbcolour.png"), &raw, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "rgbcolour.png") && strstr(err.msg, "(1, 0)")
          && strstr(err.msg, "(255, 0, 255)"));
}

static void test_png_images(void)
{
    ls_error err = {""};
    ls_image a, b;
    uint8_t rgb[4 * 3 * 3], rgba[4 * 3 * 4], gray[12], ga[24];
    for (int i = 0; i < 12; i++) {
        for (int c = 0; c < 3; c++) rgb[i * 3 + c] = rgba[i * 4 + c] = (uint8_t)(i * 20 + c * 7);
        rgba[i * 4 + 3] = 255;
        gray[i] = ga[2 * i] = (uint8_t)(i * 21);
        ga[2 * i + 1] = (uint8_t)(i * 3); /* alpha is ignored, not composited */
    }
    /* Input case 5: RGBA with opaque alpha equals RGB; gray v equals (v, v, v). */
    write_png(tpath("rgb.png"), 4, 3, 8, PNG_COLOR_TYPE_RGB, rgb, 12, NULL, 0, NULL, 0, 0);
    write_png(tpath("rgba.png"), 4, 3, 8, PNG_COLOR_TYPE_RGBA, rgba, 16, NULL, 0, NULL, 0, 0);
    CHECK_OK(ls_image_load(tpath("rgb.png"), &a, &err), err);
    CHECK_OK(ls_image_load(tpath("rgba.png"), &b, &err), err);
    CHECK(a.data && b.data && a.w == 4 && a.h == 3 && b.w == 4 && b.h == 3);
    CHECK(a.data && memcmp(a.data, rgb, sizeof rgb) == 0);
    CHECK(a.data && b.data && memcmp(a.data, b.data, sizeof rgb) == 0);
    ls_image_free(&b);
    write_png(tpath("rgb adam7.png"), 4, 3, 8, PNG_COLOR_TYPE_RGB, rgb, 12, NULL, 0, NULL, 0, 1);
    CHECK_OK(ls_image_load(tpath("rgb adam7.png"), &b, &err), err);
    CHECK(a.data && b.data && memcmp(a.data, b.data, sizeof rgb) == 0);
    ls_image_free(&b);
    ls_image_free(&a);
    write_png(tpath("gray.png"), 4, 3, 8, PNG_COLOR_TYPE_GRAY, gray, 4, NULL, 0, NULL, 0, 0);
    write_png(tpath("ga.png"), 4, 3, 8, PNG_COLOR_TYPE_GRAY_ALPHA, ga, 8, NULL, 0, NULL, 0, 0);
    CHECK_OK(ls_image_load(tpath("gray.png"), &a, &err), err);
    CHECK_OK(ls_image_load(tpath("ga.png"), &b, &err), err);
    for (int i = 0; a.data && b.data && i < 12; i++) {
        for (int c = 0; c < 3; c++)
            CHECK(a.data[i * 3 + c] == gray[i] && b.data[i * 3 + c] == gray[i]);
    }
    ls_image_free(&a);
    ls_image_free(&b);

    /* 16-bit image: (v * 255 + 32767) / 65535. */
    static const unsigned v16[4] = {0, 65535, 33024, 1000};
    static const uint8_t want16[4] = {0, 255, 128, 4};
    uint8_t g16[8];
    for (int i = 0; i < 4; i++) {
        g16[2 * i] = (uint8_t)(v16[i] >> 8);
        g16[2 * i + 1] = (uint8_t)(v16[i] & 255);
    }
    write_png(tpath("gray16.png"), 4, 1, 16, PNG_COLOR_TYPE_GRAY, g16, 8, NULL, 0, NULL, 0, 0);
    CHECK_OK(ls_image_load(tpath("gray16.png"), &a, &err), err);
    for (int i = 0; a.data && i < 4; i++)
        CHECK(a.data[i * 3] == want16[i] && a.data[i * 3 + 2] == want16[i]);
    ls_image_free(&a);

    /* Palette image with tRNS gives the palette colours, alpha ignored. */
    png_color pal[3] = {{10, 20, 30}, {40, 50, 60}, {70, 80, 90}};
    uint8_t trns[3] = {0, 10, 255}, idx[3] = {2, 0, 1};
    write_png(tpath("palimg.png"), 3, 1, 8, PNG_COLOR_TYPE_PALETTE, idx, 3, pal, 3, trns, 3, 0);
    CHECK_OK(ls_image_load(tpath("palimg.png"), &a, &err), err);
    static const uint8_t wantpal[9] = {70, 80, 90, 10, 20, 30, 40, 50, 60};
    CHECK(a.data && memcmp(a.data, wantpal, 9) == 0);
    ls_image_free(&a);

    /* Every truncation of a PNG is an error, never a crash or a half image. */
    uint8_t file[4096];
    size_t n = read_all(tpath("rgb.png"), file, sizeof file);
    CHECK(n > 50);
    int passes = 0;
    for (size_t k = 0; k < n; k++) {
        if (ls_image_decode(file, k, "cut.png", &a, &err) == LS_OK) passes++;
        ls_image_free(&a);
    }
    CHECK(passes == 0);
    CHECK(ls_image_decode(file, n - 1, "cut.png", &a, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "cut.png") != NULL);
    /* A flipped bit in the pixel data fails the CRC. */
    file[n - 20] ^= 0x40;
    CHECK(ls_image_decode(file, n, "crc.png", &a, &err) == LS_ERR_FORMAT);
    ls_raw_mask raw;
    CHECK(ls_raw_mask_load(tpath("does not exist.png"), &raw, &err) == LS_ERR_IO);
}

/* ------------------------------------------------------------------------------------------ */
/* JPEG                                                                                        */
/* ------------------------------------------------------------------------------------------ */

static unsigned char *jpeg_encode(const uint8_t *px, int w, int h, int comps, J_COLOR_SPACE cs,
                                  unsigned long *len)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    unsigned char *out = NULL;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &out, len);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = comps;
    c.in_color_space = cs;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 95, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)c.next_scanline * (size_t)w * (size_t)comps);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return out;
}

static void test_jpeg(void)
{
    ls_error err = {""};
    ls_image img;
    uint8_t px[16 * 16 * 4];
    for (int i = 0; i < 16 * 16; i++) {
        px[i * 3] = 100;
        px[i * 3 + 1] = 150;
        px[i * 3 + 2] = 200;
    }
    unsigned long len = 0;
    unsigned char *j = jpeg_encode(px, 16, 16, 3, JCS_RGB, &len);
    CHECK_OK(ls_image_decode(j, len, "flat.jpg", &img, &err), err);
    CHECK(img.w == 16 && img.h == 16);
    int worst = 0;
    for (int i = 0; img.data && i < 16 * 16 * 3; i++) {
        int d = abs((int)img.data[i] - (int)px[i]);
        if (d > worst) worst = d;
    }
    CHECK(img.data && worst <= 3);
    ls_image_free(&img);
    int passes = 0;
    for (unsigned long k = 0; k < len; k++) {
        if (ls_image_decode(j, k, "cut.jpg", &img, &err) == LS_OK) passes++;
        ls_image_free(&img);
    }
    CHECK(passes == 0);
    CHECK(ls_image_decode(j, len / 2, "cut.jpg", &img, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "cut.jpg") != NULL);
    free(j);

    /* Gray JPEG gives (v, v, v); as a mask it gives the gray values. */
    memset(px, 128, 16 * 16);
    j = jpeg_encode(px, 16, 16, 1, JCS_GRAYSCALE, &len);
    CHECK_OK(ls_image_decode(j, len, "gray.jpg", &img, &err), err);
    for (int i = 0; img.data && i < 16 * 16; i++) {
        CHECK(img.data[i * 3] == img.data[i * 3 + 1] && img.data[i * 3] == img.data[i * 3 + 2]);
        CHECK(abs(img.data[i * 3] - 128) <= 1);
    }
    ls_image_free(&img);
    write_bytes(tpath("mask.jpg"), j, len);
    free(j);
    ls_raw_mask raw;
    CHECK_OK(ls_raw_mask_load(tpath("mask.jpg"), &raw, &err), err);
    CHECK(raw.w == 16 && raw.bit_depth == 8 && !raw.is_palette && raw.data
          && abs(raw.data[0] - 128) <= 1);
    ls_raw_mask_free(&raw);

    /* CMYK is refused with advice. */
    memset(px, 60, sizeof px);
    j = jpeg_encode(px, 16, 16, 4, JCS_CMYK, &len);
    CHECK(ls_image_decode(j, len, "cmyk.jpg", &img, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "CMYK") && strstr(err.msg, "cmyk.jpg"));
    free(j);
}

/* ------------------------------------------------------------------------------------------ */
/* Levels, resizing, writers                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Maps one row of raw 8-bit values; returns the status and leaves the classes in out. */
static ls_status map_row(const uint16_t *v, int n, const ls_level_map *map, uint8_t *out,
                         long *snapped, ls_error *err)
{
    uint16_t copy[16];
    memcpy(copy, v, sizeof *v * (size_t)n);
    ls_raw_mask raw = {n, 1, 8, 0, copy};
    ls_mask m;
    ls_status st = ls_mask_from_raw(&raw, map, "m.png", &m, snapped, err);
    if (st == LS_OK) memcpy(out, m.data, (size_t)n);
    ls_mask_free(&m);
    return st;
}

static void test_levels(void)
{
    ls_error err = {""};
    ls_mask m;
    long snapped = -1;
    uint8_t got[16];
    /* Near-level strays snap: 3 and 50 (Dataset 2's strays reach 50) to 0, 130 to 128, 200 to
     * 255 (55 of the 127 gap, 43%). 57 is 44.5% of the 0-128 gap: still snaps. */
    uint16_t v[8] = {0, 128, 255, 3, 130, 50, 200, 57};
    ls_level_map wbc = {3, {0, 128, 255}, 1, -1};
    CHECK_OK(map_row(v, 8, &wbc, got, &snapped, &err), err);
    static const uint8_t want[8] = {0, 1, 2, 0, 1, 0, 2, 0};
    CHECK(memcmp(got, want, 8) == 0);
    CHECK(snapped == 5);
    /* 58 (45.3%) and 64 (midway) are no near-level strays even with snapping on: an error that
     * lists each value with its pixel count and says why it did not snap. */
    uint16_t mid[4] = {64, 0, 58, 64};
    CHECK(map_row(mid, 4, &wbc, got, &snapped, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "m.png") && strstr(err.msg, "3 pixel(s) hold 2 value(s)")
          && strstr(err.msg, "58 (1 px), 64 (2 px)") && strstr(err.msg, "45%"));
    CHECK(snapped == 0);
    /* A whole cytoplasm at 128 in masks declared 0/255 with snapping must not become nucleus. */
    ls_level_map bin_snap = {2, {0, 255}, 1, -1};
    uint16_t three[3] = {0, 128, 255};
    CHECK(map_row(three, 3, &bin_snap, got, &snapped, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "128 (1 px)") != NULL);
    /* Snapping off: the message names the levels, says there is no ignore value (not "-1") and
     * how to turn snapping on. */
    wbc.snap = 0;
    CHECK(map_row(v, 8, &wbc, got, &snapped, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "5 pixel(s) hold 5 value(s)")
          && strstr(err.msg, "3 (1 px), 50 (1 px), 57 (1 px), 130 (1 px), 200 (1 px)"));
    CHECK(strstr(err.msg, "levels are 0, 128, 255 (no ignore value)")
          && strstr(err.msg, "a line 'snap'") && strstr(err.msg, "classes.txt"));
    CHECK(strstr(err.msg, "-1") == NULL);
    /* Beyond the outermost level: 300 is 45/127 past 255 and snaps; 400 does not. */
    wbc.snap = 1;
    uint16_t beyond[2] = {300, 0};
    CHECK_OK(map_row(beyond, 2, &wbc, got, &snapped, &err), err);
    CHECK(got[0] == 2 && snapped == 1);
    beyond[0] = 400;
    CHECK(map_row(beyond, 2, &wbc, got, &snapped, &err) == LS_ERR_FORMAT);
    /* One level alone has no gap to measure a stray against: nothing snaps. */
    ls_level_map one = {1, {0}, 1, -1};
    CHECK(map_row(v + 3, 1, &one, got, &snapped, &err) == LS_ERR_FORMAT);

    /* Input case 1: a 0/255 mask with two classes 0/1 is an error, not silently ignored. */
    uint16_t bin[4] = {0, 255, 255, 0};
    ls_raw_mask rb = {2, 2, 8, 0, bin};
    ls_level_map two = {2, {0, 1}, 0, -1};
    CHECK(ls_mask_from_raw(&rb, &two, "bin.png", &m, NULL, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "bin.png") && strstr(err.msg, "2 pixel(s) hold 1 value(s)")
          && strstr(err.msg, "255 (2 px)"));
    /* Explicit ignore: 255 becomes LS_IGNORE. */
    two.ignore_value = 255;
    CHECK_OK(ls_mask_from_raw(&rb, &two, "bin.png", &m, NULL, &err), err);
    CHECK(m.data && m.data[0] == 0 && m.data[1] == LS_IGNORE && m.data[3] == 0);
    ls_mask_free(&m);
    /* Or declare 255 a level. */
    ls_level_map bl = {2, {0, 255}, 0, -1};
    CHECK_OK(ls_mask_from_raw(&rb, &bl, "bin.png", &m, NULL, &err), err);
    CHECK(m.data && m.data[1] == 1 && m.data[2] == 1);
    ls_mask_free(&m);
    ls_level_map none = {0, {0}, 0, -1};
    CHECK(ls_mask_from_raw(&rb, &none, "bin.png", &m, NULL, &err) == LS_ERR_ARG);
}

/* Writes a 4x2 16-bit gray PNG mask of the given values. */
static void write_mask16(const char *path, const uint16_t *v)
{
    uint8_t rows[4 * 2 * 2];
    for (int i = 0; i < 8; i++) {
        rows[2 * i] = (uint8_t)(v[i] >> 8);
        rows[2 * i + 1] = (uint8_t)(v[i] & 255);
    }
    write_png(path, 4, 2, 16, PNG_COLOR_TYPE_GRAY, rows, 8, NULL, 0, NULL, 0, 0);
}

/* 16-bit masks saved from 8-bit ones as v * 257 (0, 32896, 65535) read as 0, 128, 255; they must
 * not snap 32896 to nucleus. */
static void test_mask16(void)
{
    ls_error err = {""};
    ls_raw_mask raw;
    ls_mask m;
    long snapped = -1;
    ls_level_map wbc = {3, {0, 128, 255}, 1, -1};
    uint16_t v[8] = {0, 32896, 65535, 32896, 0, 0, 65535, 32896};
    write_mask16(tpath("wide16.png"), v);
    CHECK_OK(ls_raw_mask_load(tpath("wide16.png"), &raw, &err), err);
    CHECK(raw.bit_depth == 16 && raw.data && raw.data[1] == 32896);
    CHECK_OK(ls_mask_from_raw(&raw, &wbc, "wide16.png", &m, &snapped, &err), err);
    static const uint8_t want[8] = {0, 1, 2, 1, 0, 0, 2, 1};
    CHECK(m.data && memcmp(m.data, want, 8) == 0 && snapped == 0);
    ls_mask_free(&m);
    /* Snapping off too: the values are exact levels once divided. */
    wbc.snap = 0;
    CHECK_OK(ls_mask_from_raw(&raw, &wbc, "wide16.png", &m, &snapped, &err), err);
    CHECK(m.data && memcmp(m.data, want, 8) == 0);
    ls_mask_free(&m);
    /* 16-bit levels declared on purpose keep their meaning: 0 and 65535 are levels as stored. */
    ls_level_map wide = {3, {0, 32896, 65535}, 0, -1};
    CHECK_OK(ls_mask_from_raw(&raw, &wide, "wide16.png", &m, &snapped, &err), err);
    CHECK(m.data && memcmp(m.data, want, 8) == 0);
    ls_mask_free(&m);
    ls_raw_mask_free(&raw);

    /* One value that is no multiple of 257: the mask is not a widened 8-bit one, and its values
     * are far beyond the 8-bit levels, so snapping must not guess; the error lists them. */
    wbc.snap = 1;
    v[5] = 32900;
    write_mask16(tpath("odd16.png"), v);
    CHECK_OK(ls_raw_mask_load(tpath("odd16.png"), &raw, &err), err);
    CHECK(ls_mask_from_raw(&raw, &wbc, "odd16.png", &m, &snapped, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "odd16.png") && strstr(err.msg, "multiple of 257")
          && strstr(err.msg, "32896 (3 px), 32900 (1 px), 65535 (2 px)"));
    CHECK(m.data == NULL);
    ls_raw_mask_free(&raw);
}

static void test_resize(void)
{
    ls_error err = {""};
    ls_image src, dst;
    /* Downscale 4 -> 2 (support 2): weights 3/7, 3/7, 1/7 -> 500/7 = 71.4 and 1465/7 = 209.3. */
    uint8_t row4[12] = {0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255};
    src = (ls_image){4, 1, row4};
    CHECK_OK(ls_image_resize(&src, 2, 1, &dst, &err), err);
    CHECK(dst.data && dst.data[0] == 71 && dst.data[3] == 209 && dst.data[5] == 209);
    ls_image_free(&dst);
    /* The same along y. */
    src = (ls_image){1, 4, row4};
    CHECK_OK(ls_image_resize(&src, 1, 2, &dst, &err), err);
    CHECK(dst.data && dst.data[0] == 71 && dst.data[3] == 209);
    ls_image_free(&dst);
    /* Upscale 2 -> 4: [0, 100] -> [0, 25, 75, 100] (edge taps clipped and renormalised). */
    uint8_t row2[6] = {0, 0, 0, 100, 100, 100};
    src = (ls_image){2, 1, row2};
    CHECK_OK(ls_image_resize(&src, 4, 1, &dst, &err), err);
    CHECK(dst.data && dst.data[0] == 0 && dst.data[3] == 25 && dst.data[6] == 75
          && dst.data[9] == 100);
    ls_image_free(&dst);
    /* 2x2 -> 1x1: horizontal pass rounds to 8 bits first (50, 228), then (50 + 228) / 2 = 139. */
    uint8_t sq[12] = {0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255};
    src = (ls_image){2, 2, sq};
    CHECK_OK(ls_image_resize(&src, 1, 1, &dst, &err), err);
    CHECK(dst.data && dst.data[0] == 139);
    ls_image_free(&dst);
    /* Identity is exact. */
    uint8_t big[7 * 5 * 3];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 37 + 11);
    src = (ls_image){7, 5, big};
    CHECK_OK(ls_image_resize(&src, 7, 5, &dst, &err), err);
    CHECK(dst.data && memcmp(dst.data, big, sizeof big) == 0);
    ls_image_free(&dst);
    /* Odd sizes resize without trouble both ways. */
    CHECK_OK(ls_image_resize(&src, 121, 97, &dst, &err), err);
    CHECK(dst.w == 121 && dst.h == 97);
    ls_image big2 = dst;
    CHECK_OK(ls_image_resize(&big2, 1, 1, &dst, &err), err);
    ls_image_free(&dst);
    ls_image_free(&big2);
    CHECK(ls_image_resize(&src, 0, 5, &dst, &err) == LS_ERR_ARG);

    /* Input case 9: [0, 1, 2] upscaled to 7 gives [0,0,1,1,1,2,2]; 255 stays 255. */
    uint8_t lab[3] = {0, 1, 2};
    ls_mask ms = {3, 1, lab}, md;
    CHECK_OK(ls_mask_resize_nearest(&ms, 7, 1, &md, &err), err);
    static const uint8_t up7[7] = {0, 0, 1, 1, 1, 2, 2};
    CHECK(md.data && memcmp(md.data, up7, 7) == 0);
    ls_mask_free(&md);
    uint8_t lab6[6] = {0, 1, 2, 3, 4, LS_IGNORE};
    ms = (ls_mask){1, 6, lab6};
    CHECK_OK(ls_mask_resize_nearest(&ms, 1, 3, &md, &err), err);
    CHECK(md.data && md.data[0] == 1 && md.data[1] == 3 && md.data[2] == LS_IGNORE);
    ls_mask_free(&md);
    CHECK(ls_mask_resize_nearest(&ms, 3, -1, &md, &err) == LS_ERR_ARG);
}

static int files_in_tmp(void)
{
    DIR *d = opendir(tmpdir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) n += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

static void test_writers(void)
{
    ls_error err = {""};
    uint8_t g[5 * 3], rgb[5 * 3 * 3];
    for (int i = 0; i < 15; i++) g[i] = (uint8_t)(i * 17);
    for (int i = 0; i < 45; i++) rgb[i] = (uint8_t)(i * 5 + 1);
    CHECK_OK(ls_png_write_gray(tpath("out gray.png"), g, 5, 3, &err), err);
    ls_raw_mask raw;
    CHECK_OK(ls_raw_mask_load(tpath("out gray.png"), &raw, &err), err);
    CHECK(raw.w == 5 && raw.h == 3);
    for (int i = 0; raw.data && i < 15; i++) CHECK(raw.data[i] == g[i]);
    ls_raw_mask_free(&raw);
    CHECK_OK(ls_png_write_rgb(tpath("out rgb.png"), rgb, 5, 3, &err), err);
    ls_image img;
    CHECK_OK(ls_image_load(tpath("out rgb.png"), &img, &err), err);
    CHECK(img.data && memcmp(img.data, rgb, 45) == 0);
    ls_image_free(&img);
    /* Overwriting replaces the file whole. */
    CHECK_OK(ls_png_write_rgb(tpath("out rgb.png"), rgb + 3, 2, 2, &err), err);
    CHECK_OK(ls_image_load(tpath("out rgb.png"), &img, &err), err);
    CHECK(img.w == 2 && img.h == 2);
    ls_image_free(&img);
    CHECK(files_in_tmp() == 0);
    CHECK(ls_png_write_gray(tpath("no such folder/x.png"), g, 5, 3, &err) == LS_ERR_IO);
    CHECK(strstr(err.msg, "no such folder") != NULL);
    CHECK(ls_png_write_gray(tpath("bad.png"), g, 0, 3, &err) == LS_ERR_ARG);
    CHECK(files_in_tmp() == 0);
    struct stat st;
    CHECK(stat(tpath("bad.png"), &st) != 0);

    uint8_t *png = NULL;
    size_t len = 0;
    CHECK_OK(ls_png_encode_rgb(rgb, 5, 3, &png, &len, &err), err);
    CHECK(png && len > 8);
    CHECK_OK(ls_image_decode(png, len, "encoded", &img, &err), err);
    CHECK(img.data && img.w == 5 && memcmp(img.data, rgb, 45) == 0);
    ls_image_free(&img);
    free(png);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/leukoseg_image_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_bmp_variants();
    test_bmp_rle();
    test_bmp_hostile();
    test_png_masks();
    test_png_images();
    test_jpeg();
    test_levels();
    test_mask16();
    test_resize();
    test_writers();
    cleanup();
    TEST_DONE();
}
