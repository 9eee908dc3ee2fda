/* Images and masks: BMP/PNG/JPEG decoding, raw mask levels, resizing and atomic PNG writing.
 *
 * Every byte of a file is treated as hostile: sizes are checked before they are used, dimensions
 * are capped at LS_MAX_SIDE a side, and corrupt or truncated files give LS_ERR_FORMAT, never a
 * crash. The BMP decoder is written by hand because no packaged library reads every variant
 * (RLE, bitfields, OS/2 headers); PNG goes through libpng and JPEG through libjpeg(-turbo).
 *
 * Policies (documented here and in the header):
 *  - alpha is ignored: pixels are taken as stored, not composited over a background;
 *  - 16-bit samples become 8-bit by (v * 255 + 32767) / 65535 (rounding to nearest);
 *  - EXIF orientation is ignored for images and masks alike, so both stay aligned as stored;
 *  - a 16-bit gray mask whose values are all multiples of 257 is an 8-bit one saved as v * 257
 *    and is read as v / 257 (unless its values are all levels as stored);
 *  - snapping moves only values within 45% of the way from a level to the next one.
 */
#include "fileio.h"
#include "leukoseg.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
/* jpeglib.h uses FILE without including stdio.h, so it comes last. */
#include <jpeglib.h>
#include <jerror.h>

/* Larger sides are almost certainly hostile or corrupt headers; 16384^2 RGB is already 768 MiB. */
#define LS_MAX_SIDE 16384
/* Files are read whole; this bounds what a hostile path can make us allocate. */
#define LS_MAX_FILE ((size_t)1 << 31)

static const char *nm(const char *name) { return name ? name : "(image in memory)"; }

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
/* Two's complement without relying on implementation-defined conversion. */
static int64_t rds32(const uint8_t *p)
{
    uint32_t u = rd32(p);
    return u <= 0x7FFFFFFFu ? (int64_t)u : (int64_t)u - 4294967296LL;
}
static uint8_t scale16(unsigned v) { return (uint8_t)((v * 255u + 32767u) / 65535u); }

static ls_status read_file(const char *path, uint8_t **bytes, size_t *len, ls_error *err)
{
    *bytes = NULL;
    *len = 0;
    if (!path) return ls_fail(err, LS_ERR_ARG, "no file path given");
    FILE *f = fopen(path, "rb");
    if (!f) {
        return ls_fail(err, LS_ERR_IO, "cannot open %s: %s; check the path", path,
                       strerror(errno));
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return ls_fail(err, LS_ERR_IO, "%s is not a regular file; give the path of an image file",
                       path);
    }
    if ((uint64_t)st.st_size > LS_MAX_FILE) {
        fclose(f);
        return ls_fail(err, LS_ERR_NOMEM, "%s is %lld bytes; files over %zu bytes are refused",
                       path, (long long)st.st_size, LS_MAX_FILE);
    }
    size_t n = (size_t)st.st_size;
    uint8_t *b = malloc(n ? n : 1);
    if (!b) {
        fclose(f);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory reading %s (%zu bytes)", path, n);
    }
    size_t got = fread(b, 1, n, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got != n) {
        free(b);
        return ls_fail(err, LS_ERR_IO, "cannot read %s (got %zu of %zu bytes)", path, got, n);
    }
    *bytes = b;
    *len = n;
    return LS_OK;
}

typedef enum { FMT_UNKNOWN, FMT_BMP, FMT_PNG, FMT_JPEG } file_format;

static file_format sniff(const uint8_t *b, size_t len)
{
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (len >= 2 && b[0] == 'B' && b[1] == 'M') return FMT_BMP;
    if (len >= 8 && memcmp(b, png_sig, 8) == 0) return FMT_PNG;
    if (len >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return FMT_JPEG;
    return FMT_UNKNOWN;
}

static ls_status unknown_format(const uint8_t *b, size_t len, const char *name, ls_error *err)
{
    if (len == 0) return ls_fail(err, LS_ERR_FORMAT, "%s is empty (0 bytes)", nm(name));
    uint8_t h[4] = {0};
    memcpy(h, b, len < 4 ? len : 4);
    return ls_fail(err, LS_ERR_FORMAT,
                   "%s is not a BMP, PNG or JPEG file (starts with %02x %02x %02x %02x); "
                   "convert it to PNG", nm(name), h[0], h[1], h[2], h[3]);
}

static int side_ok(int64_t w, int64_t h)
{
    return w >= 1 && h >= 1 && w <= LS_MAX_SIDE && h <= LS_MAX_SIDE;
}

static ls_status bad_size(const char *name, const char *kind, int64_t w, int64_t h, ls_error *err)
{
    return ls_fail(err, LS_ERR_FORMAT,
                   "%s: %s header gives a size of %lld x %lld; sides must be 1..%d px",
                   nm(name), kind, (long long)w, (long long)h, LS_MAX_SIDE);
}

/* ------------------------------------------------------------------------------------------ */
/* BMP                                                                                         */
/* ------------------------------------------------------------------------------------------ */

enum { BI_RGB = 0, BI_RLE8 = 1, BI_RLE4 = 2, BI_BITFIELDS = 3, BI_ALPHABITFIELDS = 6 };

typedef struct {
    int w, h, bpp;
    uint8_t *idx;        /* w*h palette indices, top row first (bpp <= 8) */
    uint8_t *rgb;        /* w*h*3 RGB, top row first (bpp > 8) */
    uint8_t pal[256][3]; /* RGB */
    int pal_n;
} bmp_img;

static ls_status bmp_truncated(const char *name, const char *what, ls_error *err)
{
    return ls_fail(err, LS_ERR_FORMAT, "%s: BMP is truncated (%s); re-export the file",
                   nm(name), what);
}

/* One bitfield channel: the mask must be a non-empty run of at most 16 contiguous bits. */
typedef struct {
    uint32_t mask;
    int shift;
    uint32_t max;
} bmp_field;

static int bmp_field_init(bmp_field *f, uint32_t mask, int bpp)
{
    if (mask == 0 || (bpp == 16 && mask > 0xFFFFu)) return 0;
    int s = 0;
    while (!((mask >> s) & 1u)) s++;
    uint64_t m = mask >> s;
    if ((m & (m + 1)) != 0 || m > 0xFFFFu) return 0;
    f->mask = mask;
    f->shift = s;
    f->max = (uint32_t)m;
    return 1;
}

static uint8_t bmp_field_get(const bmp_field *f, uint32_t px)
{
    uint64_t v = (px & f->mask) >> f->shift;
    return (uint8_t)((v * 255u + f->max / 2) / f->max);
}

/* RLE8/RLE4 into bi->idx (zeroed, so skipped pixels are index 0). Runs past the row end are clipped
 * rather than wrapped, so hostile runs can never write outside the buffer. */
static ls_status bmp_rle(const uint8_t *p, size_t n, int rle4, const char *name, bmp_img *bi,
                         ls_error *err)
{
    size_t i = 0;
    long x = 0, y = 0; /* y counts rows from the bottom, as stored */
    const long w = bi->w, h = bi->h;
    while (y < h) {
        if (n - i < 2) return bmp_truncated(name, "RLE data ends early", err);
        unsigned c = p[i], v = p[i + 1];
        i += 2;
        uint8_t *row = bi->idx + (size_t)(h - 1 - y) * (size_t)w;
        if (c > 0) {
            for (unsigned k = 0; k < c && x < w; k++, x++)
                row[x] = (uint8_t)(rle4 ? ((k & 1) ? v & 15 : v >> 4) : v);
        } else if (v == 0) {
            x = 0;
            y++;
        } else if (v == 1) {
            break;
        } else if (v == 2) {
            if (n - i < 2) return bmp_truncated(name, "RLE delta escape cut short", err);
            x += p[i];
            y += p[i + 1];
            i += 2;
            if (x > w) x = w;
        } else {
            size_t bytes = rle4 ? (v + 1) / 2 : v;
            if (n - i < bytes) return bmp_truncated(name, "RLE absolute run cut short", err);
            for (unsigned k = 0; k < v && x < w; k++, x++)
                row[x] = (uint8_t)(rle4 ? ((k & 1) ? p[i + k / 2] & 15 : p[i + k / 2] >> 4)
                                        : p[i + k]);
            /* Absolute runs are padded to a 16-bit boundary. */
            i += bytes + (bytes & 1);
            if (i > n) i = n;
        }
    }
    return LS_OK;
}

static ls_status bmp_decode(const uint8_t *b, size_t len, const char *name, bmp_img *bi,
                            ls_error *err)
{
    memset(bi, 0, sizeof *bi);
    if (len < 26) return bmp_truncated(name, "file header incomplete", err);
    uint32_t off = rd32(b + 10), hsz = rd32(b + 14);
    int core = hsz == 12, os2v2 = hsz == 16 || hsz == 64;
    if (!(core || os2v2 || hsz == 40 || hsz == 52 || hsz == 56 || hsz == 108 || hsz == 124)) {
        return ls_fail(err, LS_ERR_FORMAT,
                       "%s: BMP header size %u is not a known kind (12, 16, 40, 52, 56, 64, 108, "
                       "124); re-save the image as PNG", nm(name), hsz);
    }
    if (len < 14 + (size_t)hsz) return bmp_truncated(name, "info header incomplete", err);
    int64_t w, h;
    uint32_t bpp, comp = BI_RGB, clr_used = 0;
    if (core) {
        w = rd16(b + 18);
        h = rd16(b + 20);
        bpp = rd16(b + 24);
    } else {
        w = rds32(b + 18);
        h = rds32(b + 22);
        bpp = rd16(b + 28);
        if (hsz >= 20) comp = rd32(b + 30);
        if (hsz >= 36) clr_used = rd32(b + 46);
    }
    int top_down = h < 0;
    if (top_down) h = -h;
    if (!side_ok(w, h)) return bad_size(name, "BMP", w, h, err);
    if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32) {
        return ls_fail(err, LS_ERR_FORMAT, "%s: BMP with %u bits per pixel is not supported "
                       "(1, 4, 8, 16, 24, 32 are); re-save the image as PNG", nm(name), bpp);
    }
    /* OS/2 2.x reuses 3 and 4 for Huffman and RLE24, which nobody writes any more. */
    int ok_comp = comp == BI_RGB || (comp == BI_RLE8 && bpp == 8) || (comp == BI_RLE4 && bpp == 4)
                  || (!os2v2 && (comp == BI_BITFIELDS || comp == BI_ALPHABITFIELDS)
                      && (bpp == 16 || bpp == 32));
    if (!ok_comp) {
        return ls_fail(err, LS_ERR_FORMAT, "%s: BMP compression %u with %u bits per pixel is not "
                       "supported; re-save the image as an uncompressed BMP or PNG",
                       nm(name), comp, bpp);
    }
    int rle = comp == BI_RLE8 || comp == BI_RLE4;
    if (rle && top_down) {
        return ls_fail(err, LS_ERR_FORMAT, "%s: top-down BMP (negative height) cannot be RLE "
                       "compressed; the file is invalid", nm(name));
    }
    size_t pos = 14 + (size_t)hsz; /* palette or masks follow the info header */
    bmp_field fr = {0, 0, 1}, fg = fr, fb = fr; /* set below whenever bpp is 16 or 32 */
    if (bpp == 16 || bpp == 32) {
        uint32_t mr = bpp == 16 ? 0x7C00u : 0xFF0000u, mg = bpp == 16 ? 0x03E0u : 0xFF00u;
        uint32_t mb = bpp == 16 ? 0x001Fu : 0xFFu;
        if (comp == BI_BITFIELDS || comp == BI_ALPHABITFIELDS) {
            /* V2+ headers carry the masks; a 40-byte header is followed by them. */
            const uint8_t *m = b + 54;
            if (hsz == 40) {
                size_t nmask = comp == BI_ALPHABITFIELDS ? 16 : 12;
                if (len - pos < nmask) return bmp_truncated(name, "bitfield masks missing", err);
                pos += nmask;
            }
            mr = rd32(m);
            mg = rd32(m + 4);
            mb = rd32(m + 8);
        }
        if (!bmp_field_init(&fr, mr, (int)bpp) || !bmp_field_init(&fg, mg, (int)bpp)
            || !bmp_field_init(&fb, mb, (int)bpp)) {
            return ls_fail(err, LS_ERR_FORMAT, "%s: BMP bitfield masks %08x %08x %08x are not "
                           "contiguous runs within %u bits; re-save the image as PNG",
                           nm(name), mr, mg, mb, bpp);
        }
    }
    if (bpp <= 8) {
        unsigned full = 1u << bpp;
        bi->pal_n = (int)(clr_used == 0 || clr_used > full ? full : clr_used);
        size_t ent = core ? 3 : 4;
        if ((len - pos) / ent < (size_t)bi->pal_n) return bmp_truncated(name, "palette", err);
        for (int k = 0; k < bi->pal_n; k++) {
            const uint8_t *q = b + pos + (size_t)k * ent;
            bi->pal[k][0] = q[2];
            bi->pal[k][1] = q[1];
            bi->pal[k][2] = q[0];
        }
    }
    if (off < 14 + hsz) {
        return ls_fail(err, LS_ERR_FORMAT, "%s: BMP pixel data offset %u lies inside the header; "
                       "the file is corrupt", nm(name), off);
    }
    if (off >= len) return bmp_truncated(name, "no pixel data", err);
    bi->w = (int)w;
    bi->h = (int)h;
    bi->bpp = (int)bpp;
    size_t npx = (size_t)w * (size_t)h;
    if (bpp <= 8) bi->idx = calloc(npx, 1);
    else bi->rgb = malloc(npx * 3);
    if (!bi->idx && !bi->rgb) {
        return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory for a %lld x %lld BMP", nm(name),
                       (long long)w, (long long)h);
    }
    ls_status st = LS_OK;
    if (rle) {
        st = bmp_rle(b + off, len - off, comp == BI_RLE4, name, bi, err);
    } else {
        uint64_t stride = ((uint64_t)w * bpp + 31) / 32 * 4;
        if ((len - off) / stride < (uint64_t)h) {
            st = bmp_truncated(name, "fewer pixel rows than the header declares", err);
        } else {
            for (int y = 0; y < bi->h; y++) {
                const uint8_t *row = b + off + stride * (uint64_t)(top_down ? y : bi->h - 1 - y);
                for (int x = 0; x < bi->w; x++) {
                    size_t o = (size_t)y * (size_t)bi->w + (size_t)x;
                    if (bpp == 1) bi->idx[o] = (row[x >> 3] >> (7 - (x & 7))) & 1;
                    else if (bpp == 4) bi->idx[o] = (x & 1) ? row[x >> 1] & 15 : row[x >> 1] >> 4;
                    else if (bpp == 8) bi->idx[o] = row[x];
                    else if (bpp == 24) {
                        bi->rgb[o * 3] = row[x * 3 + 2];
                        bi->rgb[o * 3 + 1] = row[x * 3 + 1];
                        bi->rgb[o * 3 + 2] = row[x * 3];
                    } else {
                        uint32_t px = bpp == 16 ? rd16(row + x * 2) : rd32(row + x * 4);
                        bi->rgb[o * 3] = bmp_field_get(&fr, px);
                        bi->rgb[o * 3 + 1] = bmp_field_get(&fg, px);
                        bi->rgb[o * 3 + 2] = bmp_field_get(&fb, px);
                    }
                }
            }
        }
    }
    if (st != LS_OK) {
        free(bi->idx);
        free(bi->rgb);
        bi->idx = bi->rgb = NULL;
    }
    return st;
}

/* Index beyond the palette: the file is inconsistent, and guessing a colour would hide it. */
static ls_status bmp_check_indices(const bmp_img *bi, const char *name, ls_error *err)
{
    size_t n = (size_t)bi->w * (size_t)bi->h;
    for (size_t i = 0; i < n; i++) {
        if (bi->idx[i] >= bi->pal_n) {
            return ls_fail(err, LS_ERR_FORMAT, "%s: pixel (%zu, %zu) uses palette entry %d but "
                           "the palette has %d entries; the file is corrupt", nm(name),
                           i % (size_t)bi->w, i / (size_t)bi->w, bi->idx[i], bi->pal_n);
        }
    }
    return LS_OK;
}

static ls_status bmp_to_image(bmp_img *bi, const char *name, ls_image *img, ls_error *err)
{
    if (bi->rgb) {
        img->w = bi->w;
        img->h = bi->h;
        img->data = bi->rgb;
        bi->rgb = NULL;
        return LS_OK;
    }
    ls_status st = bmp_check_indices(bi, name, err);
    if (st != LS_OK) return st;
    size_t n = (size_t)bi->w * (size_t)bi->h;
    uint8_t *d = malloc(n * 3);
    if (!d) return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory for the RGB image", nm(name));
    for (size_t i = 0; i < n; i++) memcpy(d + i * 3, bi->pal[bi->idx[i]], 3);
    img->w = bi->w;
    img->h = bi->h;
    img->data = d;
    return LS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* PNG (libpng)                                                                                */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *p;
    size_t len, pos;
} png_mem;

typedef struct {
    char msg[256];
} png_errbuf;

static void png_mem_read(png_structp png, png_bytep out, size_t n)
{
    png_mem *m = png_get_io_ptr(png);
    if (n > m->len - m->pos) png_error(png, "file is truncated");
    memcpy(out, m->p + m->pos, n);
    m->pos += n;
}

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_errbuf *e = png_get_error_ptr(png);
    snprintf(e->msg, sizeof e->msg, "%s", msg);
    png_longjmp(png, 1);
}

/* The library never prints; libpng's warnings concern recoverable, ancillary problems. */
static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

typedef struct {
    int w, h;
    int color_type, bit_depth; /* as stored in the file */
    int channels, depth;       /* of the decoded rows */
    size_t rowbytes;
    uint8_t *data;             /* h rows of rowbytes */
} png_pixels;

/* expand = 1 (images): palette -> RGB, low-depth gray -> 8 bits, tRNS -> alpha, 16 bits kept.
 * expand = 0 (masks): values as stored, one byte per value below 8 bits. */
static ls_status png_decode(const uint8_t *bytes, size_t len, const char *name, int expand,
                            png_pixels *pp, ls_error *err)
{
    memset(pp, 0, sizeof *pp);
    png_errbuf eb = {{0}};
    png_mem mem = {bytes, len, 0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &eb, png_on_error,
                                             png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory starting the PNG decoder", nm(name));
    }
    uint8_t *volatile data = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        free(data);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        return ls_fail(err, LS_ERR_FORMAT, "%s: corrupt or truncated PNG (%s); re-export the file",
                       nm(name), eb.msg);
    }
    png_set_read_fn(png, &mem, png_mem_read);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if (!side_ok(w, h)) {
        png_destroy_read_struct(&png, &info, NULL);
        return bad_size(name, "PNG", w, h, err);
    }
    pp->w = (int)w;
    pp->h = (int)h;
    pp->color_type = png_get_color_type(png, info);
    pp->bit_depth = png_get_bit_depth(png, info);
    if (expand) png_set_expand(png);
    else png_set_packing(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    pp->channels = png_get_channels(png, info);
    pp->depth = png_get_bit_depth(png, info);
    pp->rowbytes = png_get_rowbytes(png, info);
    if (pp->rowbytes != (size_t)w * (size_t)pp->channels * (size_t)(pp->depth / 8))
        png_error(png, "unexpected row layout after transformations");
    data = malloc(pp->rowbytes * h);
    rows = malloc(sizeof(png_bytep) * h);
    if (!data || !rows) png_error(png, "out of memory for the pixels");
    for (png_uint_32 y = 0; y < h; y++) rows[y] = data + (size_t)y * pp->rowbytes;
    png_read_image(png, rows);
    /* Reading to IEND makes a file cut short after its pixel data an error too. */
    png_read_end(png, NULL);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    pp->data = data;
    return LS_OK;
}

static unsigned png_sample(const png_pixels *pp, int x, int y, int c)
{
    const uint8_t *p = pp->data + (size_t)y * pp->rowbytes;
    size_t i = (size_t)x * (size_t)pp->channels + (size_t)c;
    return pp->depth == 16 ? (unsigned)(p[2 * i] << 8 | p[2 * i + 1]) : p[i];
}

static ls_status png_to_image(const png_pixels *pp, const char *name, ls_image *img, ls_error *err)
{
    uint8_t *d = malloc((size_t)pp->w * (size_t)pp->h * 3);
    if (!d) return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory for the RGB image", nm(name));
    int gray = pp->channels <= 2; /* gray or gray+alpha; alpha is the last channel and ignored */
    for (int y = 0; y < pp->h; y++) {
        for (int x = 0; x < pp->w; x++) {
            uint8_t *o = d + ((size_t)y * (size_t)pp->w + (size_t)x) * 3;
            for (int c = 0; c < 3; c++) {
                unsigned v = png_sample(pp, x, y, gray ? 0 : c);
                o[c] = pp->depth == 16 ? scale16(v) : (uint8_t)v;
            }
        }
    }
    img->w = pp->w;
    img->h = pp->h;
    img->data = d;
    return LS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* JPEG (libjpeg)                                                                              */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_on_error(j_common_ptr c)
{
    jpeg_err *e = (jpeg_err *)c->err;
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1);
}

/* Warnings are silent, except running out of data: libjpeg would pad a truncated file with gray
 * and call it a warning, but a half-gray image must not pass as a good one. */
static void jpeg_on_message(j_common_ptr c, int level)
{
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) jpeg_on_error(c);
}

/* Decodes to RGB (gray = 0) or to one gray channel (gray = 1). */
static ls_status jpeg_decode(const uint8_t *bytes, size_t len, const char *name, int gray,
                             int *w, int *h, uint8_t **out, ls_error *err)
{
    struct jpeg_decompress_struct ci;
    jpeg_err je;
    uint8_t *volatile data = NULL;
    *out = NULL;
    ci.err = jpeg_std_error(&je.pub);
    je.pub.error_exit = jpeg_on_error;
    je.pub.emit_message = jpeg_on_message;
    je.msg[0] = 0;
    if (setjmp(je.jb)) {
        jpeg_destroy_decompress(&ci);
        free(data);
        return ls_fail(err, LS_ERR_FORMAT, "%s: corrupt or truncated JPEG (%s); re-export the file",
                       nm(name), je.msg);
    }
    jpeg_create_decompress(&ci);
    jpeg_mem_src(&ci, bytes, (unsigned long)len);
    jpeg_read_header(&ci, TRUE);
    if (!side_ok(ci.image_width, ci.image_height)) {
        int64_t iw = ci.image_width, ih = ci.image_height;
        jpeg_destroy_decompress(&ci);
        return bad_size(name, "JPEG", iw, ih, err);
    }
    if (ci.jpeg_color_space == JCS_CMYK || ci.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&ci);
        return ls_fail(err, LS_ERR_FORMAT, "%s: CMYK JPEG is not supported (its colours depend on "
                       "a print profile); convert it to RGB, e.g. as PNG", nm(name));
    }
    ci.out_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&ci);
    size_t comps = (size_t)ci.output_components, rowlen = ci.output_width * comps;
    if (comps != (gray ? 1u : 3u)) {
        jpeg_destroy_decompress(&ci);
        return ls_fail(err, LS_ERR_FORMAT, "%s: JPEG decoded to %zu channels; re-export as RGB",
                       nm(name), comps);
    }
    data = malloc(rowlen * ci.output_height);
    if (!data) {
        jpeg_destroy_decompress(&ci);
        return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory for the pixels", nm(name));
    }
    while (ci.output_scanline < ci.output_height) {
        JSAMPROW row = data + (size_t)ci.output_scanline * rowlen;
        jpeg_read_scanlines(&ci, &row, 1);
    }
    *w = (int)ci.output_width;
    *h = (int)ci.output_height;
    jpeg_finish_decompress(&ci);
    jpeg_destroy_decompress(&ci);
    *out = data;
    return LS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Images                                                                                      */
/* ------------------------------------------------------------------------------------------ */

ls_status ls_image_decode(const uint8_t *bytes, size_t len, const char *name, ls_image *img,
                          ls_error *err)
{
    if (!img) return ls_fail(err, LS_ERR_ARG, "ls_image_decode: no output image given");
    img->w = img->h = 0;
    img->data = NULL;
    if (!bytes && len) return ls_fail(err, LS_ERR_ARG, "%s: no bytes given", nm(name));
    switch (sniff(bytes, len)) {
    case FMT_BMP: {
        bmp_img bi;
        ls_status st = bmp_decode(bytes, len, name, &bi, err);
        if (st == LS_OK) st = bmp_to_image(&bi, name, img, err);
        free(bi.idx);
        free(bi.rgb);
        return st;
    }
    case FMT_PNG: {
        png_pixels pp;
        ls_status st = png_decode(bytes, len, name, 1, &pp, err);
        if (st == LS_OK) st = png_to_image(&pp, name, img, err);
        free(pp.data);
        return st;
    }
    case FMT_JPEG:
        return jpeg_decode(bytes, len, name, 0, &img->w, &img->h, &img->data, err);
    default:
        return unknown_format(bytes, len, name, err);
    }
}

ls_status ls_image_load(const char *path, ls_image *img, ls_error *err)
{
    if (!img) return ls_fail(err, LS_ERR_ARG, "ls_image_load: no output image given");
    img->w = img->h = 0;
    img->data = NULL;
    uint8_t *bytes;
    size_t len;
    ls_status st = read_file(path, &bytes, &len, err);
    if (st != LS_OK) return st;
    st = ls_image_decode(bytes, len, path, img, err);
    free(bytes);
    return st;
}

void ls_image_free(ls_image *img)
{
    if (!img) return;
    free(img->data);
    img->data = NULL;
    img->w = img->h = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Raw masks                                                                                   */
/* ------------------------------------------------------------------------------------------ */

static ls_status raw_alloc(ls_raw_mask *m, int w, int h, const char *path, ls_error *err)
{
    m->data = malloc((size_t)w * (size_t)h * sizeof *m->data);
    if (!m->data) return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory for the mask", path);
    m->w = w;
    m->h = h;
    return LS_OK;
}

static ls_status not_gray(const char *path, int x, int y, unsigned r, unsigned g, unsigned b,
                          ls_error *err)
{
    return ls_fail(err, LS_ERR_FORMAT,
                   "%s: mask pixel (%d, %d) is the colour (%u, %u, %u), not a gray value; a mask "
                   "holds one value per pixel: convert it to a grayscale or palette PNG whose "
                   "values are the class levels", path, x, y, r, g, b);
}

static ls_status raw_from_png(const png_pixels *pp, const char *path, ls_raw_mask *m,
                              ls_error *err)
{
    ls_status st = raw_alloc(m, pp->w, pp->h, path, err);
    if (st != LS_OK) return st;
    /* Palette indices and gray values are both kept exactly as stored (after unpacking). */
    m->is_palette = pp->color_type == PNG_COLOR_TYPE_PALETTE;
    m->bit_depth = pp->bit_depth;
    int rgb = pp->channels >= 3;
    for (int y = 0; y < pp->h; y++) {
        for (int x = 0; x < pp->w; x++) {
            unsigned v = png_sample(pp, x, y, 0);
            if (rgb) {
                unsigned g = png_sample(pp, x, y, 1), b = png_sample(pp, x, y, 2);
                if (g != v || b != v) {
                    ls_raw_mask_free(m);
                    return not_gray(path, x, y, v, g, b, err);
                }
            }
            m->data[(size_t)y * (size_t)pp->w + (size_t)x] = (uint16_t)v;
        }
    }
    return LS_OK;
}

static ls_status raw_from_bmp(const bmp_img *bi, const char *path, ls_raw_mask *m, ls_error *err)
{
    ls_status st = LS_OK;
    int gray_pal = 1;
    if (bi->idx) {
        st = bmp_check_indices(bi, path, err);
        for (int k = 0; k < bi->pal_n; k++)
            gray_pal &= bi->pal[k][0] == bi->pal[k][1] && bi->pal[k][1] == bi->pal[k][2];
    }
    if (st == LS_OK) st = raw_alloc(m, bi->w, bi->h, path, err);
    if (st != LS_OK) return st;
    /* A gray palette is just a way to store gray values; a coloured one means class indices. */
    m->is_palette = bi->idx && !gray_pal;
    m->bit_depth = m->is_palette ? bi->bpp : 8;
    size_t n = (size_t)bi->w * (size_t)bi->h;
    for (size_t i = 0; i < n; i++) {
        if (m->is_palette) {
            m->data[i] = bi->idx[i];
        } else {
            const uint8_t *c = bi->idx ? bi->pal[bi->idx[i]] : bi->rgb + i * 3;
            if (c[0] != c[1] || c[1] != c[2]) {
                ls_raw_mask_free(m);
                return not_gray(path, (int)(i % (size_t)bi->w), (int)(i / (size_t)bi->w), c[0],
                                c[1], c[2], err);
            }
            m->data[i] = c[0];
        }
    }
    return LS_OK;
}

ls_status ls_raw_mask_load(const char *path, ls_raw_mask *mask, ls_error *err)
{
    if (!mask) return ls_fail(err, LS_ERR_ARG, "ls_raw_mask_load: no output mask given");
    memset(mask, 0, sizeof *mask);
    uint8_t *bytes;
    size_t len;
    ls_status st = read_file(path, &bytes, &len, err);
    if (st != LS_OK) return st;
    switch (sniff(bytes, len)) {
    case FMT_BMP: {
        bmp_img bi;
        st = bmp_decode(bytes, len, path, &bi, err);
        if (st == LS_OK) st = raw_from_bmp(&bi, path, mask, err);
        free(bi.idx);
        free(bi.rgb);
        break;
    }
    case FMT_PNG: {
        png_pixels pp;
        st = png_decode(bytes, len, path, 0, &pp, err);
        if (st == LS_OK) st = raw_from_png(&pp, path, mask, err);
        free(pp.data);
        break;
    }
    case FMT_JPEG: {
        /* Lossy masks are allowed as gray values; the CLI warns that levels will need snapping. */
        uint8_t *g = NULL;
        int w = 0, h = 0;
        st = jpeg_decode(bytes, len, path, 1, &w, &h, &g, err);
        if (st == LS_OK) st = raw_alloc(mask, w, h, path, err);
        if (st == LS_OK) {
            mask->bit_depth = 8;
            for (size_t i = 0; i < (size_t)w * (size_t)h; i++) mask->data[i] = g[i];
        }
        free(g);
        break;
    }
    default:
        st = unknown_format(bytes, len, path, err);
    }
    free(bytes);
    return st;
}

void ls_raw_mask_free(ls_raw_mask *mask)
{
    if (!mask) return;
    free(mask->data);
    memset(mask, 0, sizeof *mask);
}

/* ------------------------------------------------------------------------------------------ */
/* Level mapping                                                                               */
/* ------------------------------------------------------------------------------------------ */

/* Marks a raw value that is neither a level nor ignore, nor a near-level stray that may snap. */
#define LUT_BAD 254

/* A stray value snaps only when it lies within 9/20 (45%) of the way from its nearest level to
 * the neighbouring one. The middle tenth of a gap (a pixel as near one class as the other) and
 * values far beyond the outermost levels (a 16-bit 32896 against 8-bit levels) are errors, never a
 * guess. segmentation_WBC's Dataset 2 strays reach 50, 39% of the 0-128 gap. */
#define SNAP_NUM 9
#define SNAP_DEN 20

static int is_level(int v, const ls_level_map *map)
{
    for (int k = 0; k < map->num_levels; k++) {
        if (map->levels[k] == v) return 1;
    }
    return 0;
}

/* The class a value that is no level snaps to, or -1. The gap is measured from the nearest level
 * towards v, or inwards when v lies beyond the outermost level; one level alone has no gap. */
static int snap_class(int v, const ls_level_map *map)
{
    int best = 0;
    for (int k = 1; k < map->num_levels; k++) {
        if (abs(v - map->levels[k]) < abs(v - map->levels[best])) best = k;
    }
    int lv = map->levels[best], toward = 0, inward = 0;
    for (int k = 0; k < map->num_levels; k++) {
        int d = map->levels[k] - lv;
        if (d == 0) continue;
        int *gap = (d > 0) == (v > lv) ? &toward : &inward;
        if (*gap == 0 || abs(d) < *gap) *gap = abs(d);
    }
    int gap = toward ? toward : inward;
    return gap && (long)abs(v - lv) * SNAP_DEN <= (long)gap * SNAP_NUM ? best : -1;
}

/* Many converters widen an 8-bit mask to 16 bits as v * 257 (128 becomes 32896). Such a mask is
 * read as v / 257 unless its values are already levels as stored, so 16-bit levels declared on
 * purpose (labels 0..3, or 0 and 65535) keep their meaning. */
static int widened_from_8bit(const ls_raw_mask *raw, const ls_level_map *map)
{
    if (raw->is_palette || raw->bit_depth != 16) return 0;
    size_t n = (size_t)raw->w * (size_t)raw->h;
    int all_levels = 1;
    for (size_t i = 0; i < n; i++) {
        int v = raw->data[i];
        if (v % 257) return 0;
        if (all_levels && v != map->ignore_value && !is_level(v, map)) all_levels = 0;
    }
    return !all_levels;
}

/* Lookup from stored value to class, over every 16-bit value, so mapping a pixel is one load. */
static void build_lut(const ls_level_map *map, int palette, int divisor, uint8_t *lut)
{
    for (int stored = 0; stored < 65536; stored++) {
        int v = stored / divisor, cls = LUT_BAD;
        if (stored % divisor) {
            /* not a stored value of a widened mask: stays bad */
        } else if (v == map->ignore_value) {
            cls = LS_IGNORE;
        } else if (palette) {
            if (v < map->num_levels) cls = v;
        } else {
            for (int k = 0; k < map->num_levels && cls == LUT_BAD; k++) {
                if (map->levels[k] == v) cls = k;
            }
            int near = cls == LUT_BAD && map->snap ? snap_class(v, map) : -1;
            if (near >= 0) cls = near;
        }
        lut[stored] = (uint8_t)cls;
    }
}

static void describe_levels(const ls_level_map *map, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = 0;
    for (int k = 0; k < map->num_levels && n < len; k++)
        n += (size_t)snprintf(buf + n, len - n, "%s%d", k ? ", " : "", map->levels[k]);
}

/* Values that are no level, for the error message. */
typedef struct {
    char text[200]; /* "130 (12 px), 200 (4 px)": the lowest few, with their pixel counts */
    long total;     /* pixels */
    int distinct;   /* values */
    int highest;    /* the highest value */
} bad_values;

/* Lists the values the lookup marks bad, so the user can tell a few anti-aliased strays from a
 * whole undeclared class. */
static void list_bad_values(const ls_raw_mask *raw, const uint8_t *lut, int divisor,
                            bad_values *bad)
{
    memset(bad, 0, sizeof *bad);
    long *count = calloc(65536, sizeof *count);
    if (!count) {
        snprintf(bad->text, sizeof bad->text, "(out of memory counting them)");
        return;
    }
    size_t n = (size_t)raw->w * (size_t)raw->h, used = 0;
    for (size_t i = 0; i < n; i++) {
        int v = raw->data[i];
        if (lut[v] != LUT_BAD) continue;
        bad->distinct += count[v]++ == 0;
        bad->total++;
        if (v / divisor > bad->highest) bad->highest = v / divisor;
    }
    for (int v = 0, shown = 0; v < 65536 && shown < 5 && used < sizeof bad->text; v++) {
        if (!count[v]) continue;
        used += (size_t)snprintf(bad->text + used, sizeof bad->text - used, "%s%d (%ld px)",
                                 shown++ ? ", " : "", v / divisor, count[v]);
    }
    free(count);
}

/* Says what to do about values that are no level: for 16-bit values against 8-bit levels, store
 * the mask as 8 bits (or as v * 257); with snapping on, declare the class the values belong to;
 * with it off, declare the levels or turn snapping on. */
static const char *bad_value_advice(const ls_raw_mask *raw, const ls_level_map *map,
                                    int divisor, int highest)
{
    int top = 0;
    for (int k = 0; k < map->num_levels; k++) top = map->levels[k] > top ? map->levels[k] : top;
    if (raw->bit_depth == 16 && divisor == 1 && top <= 255 && highest > 255)
        return "this 16-bit mask is read as 8 bits only when every value is a multiple of 257 "
               "(v * 257): re-export it as an 8-bit PNG, or declare its 16-bit values as levels "
               "in the dataset folder's classes.txt";
    if (map->snap)
        return "snapping moves only values within 45% of the way from a level to the next, and "
               "these lie farther: declare each class's mask value in the dataset folder's "
               "classes.txt ('<value> <name>' per line) or fix the mask";
    return "declare each class's mask value in the dataset folder's classes.txt ('<value> <name>' "
           "per line, 'ignore <value>' for a value to leave out), or add a line 'snap' there to "
           "snap stray values near a level to it";
}

static ls_status report_bad(const ls_raw_mask *raw, const uint8_t *lut, const ls_level_map *map,
                            int divisor, const char *path, ls_error *err)
{
    char lv[160], ign[40];
    bad_values bad;
    list_bad_values(raw, lut, divisor, &bad);
    if (raw->is_palette) {
        return ls_fail(err, LS_ERR_FORMAT,
                       "%s: %ld pixel(s) hold palette indices that are no class: %s (the dataset "
                       "has %d classes, indices 0..%d%s); fix the mask or the class list", path,
                       bad.total, bad.text, map->num_levels, map->num_levels - 1,
                       map->ignore_value >= 0 ? ", and an ignore index" : "");
    }
    describe_levels(map, lv, sizeof lv);
    if (map->ignore_value >= 0) snprintf(ign, sizeof ign, "ignore value %d", map->ignore_value);
    else snprintf(ign, sizeof ign, "no ignore value");
    return ls_fail(err, LS_ERR_FORMAT,
                   "%s: %ld pixel(s) hold %d value(s) that are no class level: %s%s; the levels "
                   "are %s (%s); %s", path, bad.total, bad.distinct, bad.text,
                   bad.distinct > 5 ? ", ..." : "", lv, ign,
                   bad_value_advice(raw, map, divisor, bad.highest));
}

static ls_status check_level_map(const ls_level_map *map, const char *path, ls_error *err)
{
    if (!map || map->num_levels < 1 || map->num_levels > 16)
        return ls_fail(err, LS_ERR_ARG, "%s: level map needs 1..16 levels", path);
    for (int k = 0; k < map->num_levels; k++) {
        if (map->levels[k] < 0 || map->levels[k] > 65535)
            return ls_fail(err, LS_ERR_ARG, "level %d is %d; levels must be 0..65535", k,
                           map->levels[k]);
    }
    return LS_OK;
}

ls_status ls_mask_from_raw(const ls_raw_mask *raw, const ls_level_map *map, const char *path,
                           ls_mask *mask, long *n_snapped, ls_error *err)
{
    if (n_snapped) *n_snapped = 0;
    if (!mask) return ls_fail(err, LS_ERR_ARG, "ls_mask_from_raw: no output mask given");
    mask->w = mask->h = 0;
    mask->data = NULL;
    if (!path) path = "(mask)";
    if (!raw || !raw->data || !side_ok(raw->w, raw->h))
        return ls_fail(err, LS_ERR_ARG, "%s: the raw mask is empty", path);
    ls_status st = check_level_map(map, path, err);
    if (st != LS_OK) return st;
    int divisor = widened_from_8bit(raw, map) ? 257 : 1;
    uint8_t *lut = malloc(65536);
    size_t n = (size_t)raw->w * (size_t)raw->h;
    uint8_t *d = lut ? malloc(n) : NULL;
    if (!d) {
        free(lut);
        return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory mapping the mask", path);
    }
    build_lut(map, raw->is_palette, divisor, lut);
    long snapped = 0;
    for (size_t i = 0; i < n; i++) {
        int v = raw->data[i] / divisor;
        d[i] = lut[raw->data[i]];
        if (d[i] == LUT_BAD) {
            st = report_bad(raw, lut, map, divisor, path, err);
            free(lut);
            free(d);
            return st;
        }
        if (!raw->is_palette && d[i] != LS_IGNORE && map->levels[d[i]] != v) snapped++;
    }
    free(lut);
    mask->w = raw->w;
    mask->h = raw->h;
    mask->data = d;
    if (n_snapped) *n_snapped = snapped;
    return LS_OK;
}

void ls_mask_free(ls_mask *mask)
{
    if (!mask) return;
    free(mask->data);
    mask->data = NULL;
    mask->w = mask->h = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Resizing                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* Pillow's fixed-point precision for 8-bit resampling; matching it makes results bit-identical
 * to PIL.Image.resize(..., BILINEAR), which is what Python SegFormer pipelines use. */
#define PRECISION_BITS (32 - 8 - 2)

typedef struct {
    int ksize;
    int *bounds;  /* per output pixel: first input index, number of taps */
    int32_t *kk;  /* per output pixel: ksize fixed-point weights */
} resample_coeffs;

static double triangle(double x)
{
    if (x < 0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Pillow's precompute_coeffs with the bilinear filter (support 1), widened by the scale when
 * downscaling so every input pixel contributes. */
static int coeffs_init(resample_coeffs *rc, int in, int out)
{
    double scale = (double)in / out, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    rc->ksize = ksize;
    rc->bounds = malloc(sizeof(int) * 2 * (size_t)out);
    rc->kk = malloc(sizeof(int32_t) * (size_t)ksize * (size_t)out);
    double *k = malloc(sizeof(double) * (size_t)ksize);
    if (!rc->bounds || !rc->kk || !k) {
        free(k);
        return 0;
    }
    for (int xx = 0; xx < out; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        /* Truncation toward zero, exactly as Pillow's (int) casts. */
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in) xmax = in;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            k[x] = triangle((x + xmin - center + 0.5) * ss);
            ww += k[x];
        }
        int32_t *kk = rc->kk + (size_t)xx * (size_t)ksize;
        for (int x = 0; x < ksize; x++) {
            double v = x < xmax && ww != 0.0 ? k[x] / ww : 0.0;
            kk[x] = (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        rc->bounds[2 * xx] = xmin;
        rc->bounds[2 * xx + 1] = xmax;
    }
    free(k);
    return 1;
}

static void coeffs_free(resample_coeffs *rc)
{
    free(rc->bounds);
    free(rc->kk);
}

static uint8_t clip8(int64_t ss)
{
    if (ss < 0) return 0;
    ss >>= PRECISION_BITS;
    return (uint8_t)(ss > 255 ? 255 : ss);
}

/* The horizontal pass along one row and channel: n output pixels, input pixel i at in[i * step]. */
static void resample_line(const uint8_t *in, size_t step, const resample_coeffs *rc, int n,
                          uint8_t *out, size_t ostep)
{
    for (int xx = 0; xx < n; xx++) {
        int xmin = rc->bounds[2 * xx], cnt = rc->bounds[2 * xx + 1];
        const int32_t *kk = rc->kk + (size_t)xx * (size_t)rc->ksize;
        int64_t ss = 1 << (PRECISION_BITS - 1);
        for (int x = 0; x < cnt; x++) ss += (int64_t)in[(size_t)(xmin + x) * step] * kk[x];
        out[(size_t)xx * ostep] = clip8(ss);
    }
}

/* The vertical pass, output row by output row so that input rows are read in order (a
 * column-wise pass would stride through memory). rowlen: bytes per row. */
static void resample_rows(const uint8_t *in, size_t rowlen, const resample_coeffs *rc, int n,
                          uint8_t *out)
{
    for (int yy = 0; yy < n; yy++) {
        int ymin = rc->bounds[2 * yy], cnt = rc->bounds[2 * yy + 1];
        const int32_t *kk = rc->kk + (size_t)yy * (size_t)rc->ksize;
        for (size_t i = 0; i < rowlen; i++) {
            int64_t ss = 1 << (PRECISION_BITS - 1);
            for (int y = 0; y < cnt; y++)
                ss += (int64_t)in[(size_t)(ymin + y) * rowlen + i] * kk[y];
            out[(size_t)yy * rowlen + i] = clip8(ss);
        }
    }
}

ls_status ls_image_resize(const ls_image *src, int w, int h, ls_image *dst, ls_error *err)
{
    if (!dst) return ls_fail(err, LS_ERR_ARG, "ls_image_resize: no output image given");
    dst->w = dst->h = 0;
    dst->data = NULL;
    if (!src || !src->data || !side_ok(src->w, src->h))
        return ls_fail(err, LS_ERR_ARG, "ls_image_resize: the source image is empty");
    if (!side_ok(w, h)) {
        return ls_fail(err, LS_ERR_ARG, "cannot resize to %d x %d; sides must be 1..%d px", w, h,
                       LS_MAX_SIDE);
    }
    /* Like Pillow: horizontal pass into an 8-bit intermediate, then vertical; a pass whose size
     * does not change is skipped. */
    int need_h = w != src->w, need_v = h != src->h;
    resample_coeffs ch = {0, NULL, NULL}, cv = {0, NULL, NULL};
    uint8_t *tmp = NULL, *out = malloc((size_t)w * (size_t)h * 3);
    if (need_h && need_v) tmp = malloc((size_t)w * (size_t)src->h * 3);
    int ok = out && (!need_h || !need_v || tmp) && (!need_h || coeffs_init(&ch, src->w, w))
             && (!need_v || coeffs_init(&cv, src->h, h));
    if (ok) {
        const uint8_t *cur = src->data;
        if (need_h) {
            uint8_t *hout = need_v ? tmp : out;
            for (int y = 0; y < src->h; y++) {
                for (int c = 0; c < 3; c++)
                    resample_line(cur + (size_t)y * (size_t)src->w * 3 + c, 3, &ch, w,
                                  hout + (size_t)y * (size_t)w * 3 + c, 3);
            }
            cur = hout;
        }
        if (need_v) resample_rows(cur, (size_t)w * 3, &cv, h, out);
        if (!need_h && !need_v) memcpy(out, src->data, (size_t)w * (size_t)h * 3);
    }
    coeffs_free(&ch);
    coeffs_free(&cv);
    free(tmp);
    if (!ok) {
        free(out);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory resizing %d x %d to %d x %d", src->w,
                       src->h, w, h);
    }
    dst->w = w;
    dst->h = h;
    dst->data = out;
    return LS_OK;
}

ls_status ls_mask_resize_nearest(const ls_mask *src, int w, int h, ls_mask *dst, ls_error *err)
{
    if (!dst) return ls_fail(err, LS_ERR_ARG, "ls_mask_resize_nearest: no output mask given");
    dst->w = dst->h = 0;
    dst->data = NULL;
    if (!src || !src->data || !side_ok(src->w, src->h))
        return ls_fail(err, LS_ERR_ARG, "ls_mask_resize_nearest: the source mask is empty");
    if (!side_ok(w, h)) {
        return ls_fail(err, LS_ERR_ARG, "cannot resize a mask to %d x %d; sides must be 1..%d px",
                       w, h, LS_MAX_SIDE);
    }
    uint8_t *d = malloc((size_t)w * (size_t)h);
    int *sx = malloc(sizeof(int) * (size_t)w);
    if (!d || !sx) {
        free(d);
        free(sx);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory resizing a mask to %d x %d", w, h);
    }
    /* floor((dst + 0.5) * in / out) in exact integer arithmetic: ((2 dst + 1) * in) / (2 out). */
    for (int x = 0; x < w; x++) {
        int64_t s = ((2 * (int64_t)x + 1) * src->w) / (2 * (int64_t)w);
        sx[x] = s >= src->w ? src->w - 1 : (int)s;
    }
    for (int y = 0; y < h; y++) {
        int64_t s = ((2 * (int64_t)y + 1) * src->h) / (2 * (int64_t)h);
        const uint8_t *row = src->data + (size_t)(s >= src->h ? src->h - 1 : s) * (size_t)src->w;
        for (int x = 0; x < w; x++) d[(size_t)y * (size_t)w + (size_t)x] = row[sx[x]];
    }
    free(sx);
    dst->w = w;
    dst->h = h;
    dst->data = d;
    return LS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* PNG writing                                                                                 */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} png_membuf;

static void png_write_mem(png_structp png, png_bytep data, size_t n)
{
    png_membuf *b = png_get_io_ptr(png);
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) png_error(png, "encoded image too large");
            cap *= 2;
        }
        uint8_t *p = realloc(b->p, cap);
        if (!p) png_error(png, "out of memory for the encoded image");
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void png_write_file(png_structp png, png_bytep data, size_t n)
{
    if (fwrite(data, 1, n, png_get_io_ptr(png)) != n) png_error(png, "write failed");
}

static void png_flush_nop(png_structp png) { (void)png; }

/* Encodes 8-bit gray (channels 1) or RGB (channels 3) through the given writer. */
static ls_status png_encode(const uint8_t *data, int w, int h, int channels, png_rw_ptr writer,
                            void *io, const char *name, ls_error *err)
{
    if (!data || !side_ok(w, h)) {
        return ls_fail(err, LS_ERR_ARG, "%s: cannot write a %d x %d image (sides must be 1..%d, "
                       "pixels given)", name, w, h, LS_MAX_SIDE);
    }
    png_bytep *rows = malloc(sizeof(png_bytep) * (size_t)h);
    if (!rows) return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory encoding PNG", name);
    for (int y = 0; y < h; y++) rows[y] = (png_bytep)(data + (size_t)y * (size_t)w * channels);
    png_errbuf eb = {{0}};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &eb, png_on_error,
                                              png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        free(rows);
        return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory starting the PNG encoder", name);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(rows);
        return ls_fail(err, LS_ERR_IO, "%s: cannot write PNG (%s)", name, eb.msg);
    }
    png_set_write_fn(png, io, writer, png_flush_nop);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8,
                 channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    return LS_OK;
}

/* Written atomically (src/fileio.c): readers never see a partial file. */
static ls_status png_write_atomic(const char *path, const uint8_t *data, int w, int h,
                                  int channels, ls_error *err)
{
    if (!path) return ls_fail(err, LS_ERR_ARG, "no output path given for the PNG");
    char *tmp = NULL;
    FILE *f = NULL;
    ls_status st = ls_atomic_open(path, &tmp, &f, err);
    if (st != LS_OK) return st;
    st = png_encode(data, w, h, channels, png_write_file, f, path, err);
    ls_error close_err;
    ls_status cst = ls_atomic_close(path, tmp, f, st == LS_OK, &close_err);
    if (st == LS_OK && cst != LS_OK) {
        if (err) *err = close_err;
        st = cst;
    }
    return st;
}

ls_status ls_png_write_gray(const char *path, const uint8_t *data, int w, int h, ls_error *err)
{
    return png_write_atomic(path, data, w, h, 1, err);
}

ls_status ls_png_write_rgb(const char *path, const uint8_t *data, int w, int h, ls_error *err)
{
    return png_write_atomic(path, data, w, h, 3, err);
}

ls_status ls_png_encode_rgb(const uint8_t *data, int w, int h, uint8_t **out, size_t *out_len,
                            ls_error *err)
{
    if (!out || !out_len) return ls_fail(err, LS_ERR_ARG, "ls_png_encode_rgb: no output given");
    *out = NULL;
    *out_len = 0;
    png_membuf b = {NULL, 0, 0};
    ls_status st = png_encode(data, w, h, 3, png_write_mem, &b, "(PNG in memory)", err);
    if (st != LS_OK) {
        free(b.p);
        return st;
    }
    *out = b.p;
    *out_len = b.len;
    return LS_OK;
}
