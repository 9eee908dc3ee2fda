/* NumPy .npy files (format versions 1.0, 2.0 and 3.0), little-endian numeric dtypes only.
 *
 * Layout: "\x93NUMPY", major, minor, header length (u16 for 1.x, u32 otherwise), then a Python
 * dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded with spaces and
 * a final '\n' so the data starts 64-byte aligned, then the raw C-order data.
 */
#include "fileio.h"
#include "leukoseg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Data is copied byte for byte between files and memory, which is only right on little-endian
 * hosts; refuse to build elsewhere rather than silently swap-corrupt tensors. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "leukoseg reads and writes little-endian tensor files and needs a little-endian host"
#endif

/* numpy itself refuses headers over 10000 bytes by default; allow more but keep a hard cap so a
 * hostile length field cannot make us allocate gigabytes. */
#define NPY_MAX_HEADER (1u << 20)

static const char NPY_MAGIC[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

size_t ls_dtype_size(ls_dtype dtype)
{
    switch (dtype) {
    case LS_F32: return 4;
    case LS_I64: return 8;
    case LS_U8: return 1;
    case LS_I32: return 4;
    case LS_F64: return 8;
    }
    return 0;
}

size_t ls_array_numel(const ls_array *a)
{
    size_t n = 1;
    for (int i = 0; i < a->ndim; i++) n *= (size_t)a->shape[i];
    return n;
}

void ls_array_free(ls_array *a)
{
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* numel * element size with every step overflow-checked; also validates ndim and dims. */
static int checked_nbytes(const ls_array *a, size_t *nbytes)
{
    size_t n = ls_dtype_size(a->dtype);
    if (n == 0 || a->ndim < 0 || a->ndim > 8) return 0;
    for (int i = 0; i < a->ndim; i++) {
        if (a->shape[i] < 0) return 0;
        uint64_t d = (uint64_t)a->shape[i];
        if (d > SIZE_MAX || (d != 0 && n > SIZE_MAX / d)) return 0;
        n *= (size_t)d;
    }
    *nbytes = n;
    return 1;
}

/* ---- header dict parser ------------------------------------------------------------------ */

typedef struct {
    const char *s, *end;
} cursor;

static void skip_ws(cursor *c)
{
    while (c->s < c->end && (*c->s == ' ' || *c->s == '\t' || *c->s == '\n' || *c->s == '\r'))
        c->s++;
}

static int accept(cursor *c, char ch)
{
    skip_ws(c);
    if (c->s < c->end && *c->s == ch) {
        c->s++;
        return 1;
    }
    return 0;
}

/* A Python string literal in ' or " quotes, without escapes (numpy never writes any here). */
static int parse_str(cursor *c, char *out, size_t cap)
{
    skip_ws(c);
    if (c->s >= c->end || (*c->s != '\'' && *c->s != '"')) return 0;
    char q = *c->s++;
    size_t n = 0;
    while (c->s < c->end && *c->s != q) {
        if (*c->s == '\\' || n + 1 >= cap) return 0;
        out[n++] = *c->s++;
    }
    if (c->s >= c->end) return 0;
    c->s++;
    out[n] = '\0';
    return 1;
}

static int parse_word(cursor *c, const char *w)
{
    skip_ws(c);
    size_t n = strlen(w);
    if ((size_t)(c->end - c->s) < n || memcmp(c->s, w, n) != 0) return 0;
    c->s += n;
    return 1;
}

/* A non-negative integer; Python 2 era files may append 'L'. */
static int parse_dim(cursor *c, int64_t *v)
{
    skip_ws(c);
    if (c->s >= c->end || *c->s < '0' || *c->s > '9') return 0;
    int64_t x = 0;
    while (c->s < c->end && *c->s >= '0' && *c->s <= '9') {
        int dig = *c->s++ - '0';
        if (x > (INT64_MAX - dig) / 10) return 0;
        x = x * 10 + dig;
    }
    if (c->s < c->end && *c->s == 'L') c->s++;
    *v = x;
    return 1;
}

static ls_status parse_shape(cursor *c, ls_array *a, const char *path, ls_error *err)
{
    if (!accept(c, '('))
        return ls_fail(err, LS_ERR_FORMAT, "%s: npy 'shape' is not a tuple", path);
    a->ndim = 0;
    if (accept(c, ')')) return LS_OK;
    for (;;) {
        int64_t d;
        if (!parse_dim(c, &d))
            return ls_fail(err, LS_ERR_FORMAT, "%s: npy shape holds a value that is not a "
                           "non-negative integer", path);
        if (a->ndim == 8)
            return ls_fail(err, LS_ERR_FORMAT, "%s: npy array has more than 8 dimensions; "
                           "reshape it before saving", path);
        a->shape[a->ndim++] = d;
        int comma = accept(c, ',');
        if (accept(c, ')')) return LS_OK;
        if (!comma) break;
    }
    return ls_fail(err, LS_ERR_FORMAT, "%s: npy shape tuple is malformed", path);
}

static ls_status parse_descr(const char *d, ls_dtype *dt, const char *path, ls_error *err)
{
    static const struct {
        const char *descr;
        ls_dtype dt;
    } known[] = {{"<f4", LS_F32}, {"<f8", LS_F64}, {"<i8", LS_I64}, {"<i4", LS_I32},
                 {"|u1", LS_U8},  {"u1", LS_U8},   {"<u1", LS_U8}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(d, known[i].descr) == 0) {
            *dt = known[i].dt;
            return LS_OK;
        }
    if (d[0] == '>')
        return ls_fail(err, LS_ERR_FORMAT, "%s: npy dtype '%s' is big-endian; save it with "
                       "arr.astype('<%s') first", path, d, d + 1);
    return ls_fail(err, LS_ERR_FORMAT, "%s: npy dtype '%s' is not supported (use float32, "
                   "float64, int64, int32 or uint8)", path, d);
}

static ls_status parse_header(const char *h, size_t len, ls_array *a, const char *path,
                              ls_error *err)
{
    cursor c = {h, h + len};
    int have_descr = 0, have_order = 0, have_shape = 0;
    if (!accept(&c, '{'))
        return ls_fail(err, LS_ERR_FORMAT, "%s: npy header is not a dict", path);
    while (!accept(&c, '}')) {
        char key[32], val[32];
        ls_status st;
        if (!parse_str(&c, key, sizeof key) || !accept(&c, ':'))
            return ls_fail(err, LS_ERR_FORMAT, "%s: npy header dict is malformed", path);
        if (strcmp(key, "descr") == 0 && !have_descr) {
            if (!parse_str(&c, val, sizeof val))
                return ls_fail(err, LS_ERR_FORMAT, "%s: npy 'descr' is not a simple dtype "
                               "string (structured arrays are not supported)", path);
            if ((st = parse_descr(val, &a->dtype, path, err)) != LS_OK) return st;
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0 && !have_order) {
            if (parse_word(&c, "True"))
                return ls_fail(err, LS_ERR_FORMAT, "%s: npy array is in Fortran order; save "
                               "np.ascontiguousarray(arr) instead", path);
            if (!parse_word(&c, "False"))
                return ls_fail(err, LS_ERR_FORMAT, "%s: npy 'fortran_order' is not a bool",
                               path);
            have_order = 1;
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            if ((st = parse_shape(&c, a, path, err)) != LS_OK) return st;
            have_shape = 1;
        } else {
            return ls_fail(err, LS_ERR_FORMAT, "%s: npy header has an unexpected or repeated "
                           "key '%s'", path, key);
        }
        if (!accept(&c, ',')) {
            if (accept(&c, '}')) break;
            return ls_fail(err, LS_ERR_FORMAT, "%s: npy header dict is malformed", path);
        }
    }
    if (!have_descr || !have_order || !have_shape)
        return ls_fail(err, LS_ERR_FORMAT, "%s: npy header lacks 'descr', 'fortran_order' or "
                       "'shape'", path);
    return LS_OK;
}

/* ---- load ---------------------------------------------------------------------------------- */

static ls_status load_file(FILE *f, const char *path, ls_array *a, ls_error *err)
{
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode))
        return ls_fail(err, LS_ERR_IO, "%s: not a regular file", path);
    uint64_t fsize = (uint64_t)sb.st_size;

    unsigned char pre[12];
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, NPY_MAGIC, 6) != 0)
        return ls_fail(err, LS_ERR_FORMAT, "%s: not a .npy file (bad magic or too short)", path);
    int major = pre[6], minor = pre[7];
    if (major < 1 || major > 3 || minor != 0)
        return ls_fail(err, LS_ERR_FORMAT, "%s: npy format version %d.%d is not supported "
                       "(1.0, 2.0 or 3.0 expected)", path, major, minor);
    size_t prelen = 10;
    uint32_t hlen = (uint32_t)pre[8] | (uint32_t)pre[9] << 8;
    if (major >= 2) {
        if (fread(pre + 10, 1, 2, f) != 2)
            return ls_fail(err, LS_ERR_FORMAT, "%s: npy file is truncated in its header", path);
        prelen = 12;
        hlen |= (uint32_t)pre[10] << 16 | (uint32_t)pre[11] << 24;
    }
    if (hlen > NPY_MAX_HEADER || prelen + hlen > fsize)
        return ls_fail(err, LS_ERR_FORMAT, "%s: npy header length %u is larger than the file "
                       "or the %u-byte limit", path, (unsigned)hlen, NPY_MAX_HEADER);
    char *h = malloc(hlen + 1u);
    if (!h) return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory for the npy header", path);
    ls_status st = LS_OK;
    if (fread(h, 1, hlen, f) != hlen)
        st = ls_fail(err, LS_ERR_IO, "%s: read error in the npy header", path);
    else
        st = parse_header(h, hlen, a, path, err);
    free(h);
    if (st != LS_OK) return st;

    size_t nbytes;
    if (!checked_nbytes(a, &nbytes) || (uint64_t)nbytes != fsize - prelen - hlen)
        return ls_fail(err, LS_ERR_FORMAT, "%s: npy data is %llu bytes but its shape and dtype "
                       "need a different size (truncated or corrupt file)", path,
                       (unsigned long long)(fsize - prelen - hlen));
    /* One spare byte so empty arrays still get a non-NULL buffer. */
    a->data = malloc(nbytes + 1);
    if (!a->data)
        return ls_fail(err, LS_ERR_NOMEM, "%s: cannot allocate %zu bytes for the npy data",
                       path, nbytes);
    if (fread(a->data, 1, nbytes, f) != nbytes)
        return ls_fail(err, LS_ERR_IO, "%s: read error in the npy data", path);
    return LS_OK;
}

ls_status ls_npy_load(const char *path, ls_array *a, ls_error *err)
{
    memset(a, 0, sizeof *a);
    FILE *f = fopen(path, "rb");
    if (!f)
        return ls_fail(err, LS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    ls_status st = load_file(f, path, a, err);
    fclose(f);
    if (st != LS_OK) ls_array_free(a);
    return st;
}

/* ---- save ---------------------------------------------------------------------------------- */

ls_status ls_npy_save(const char *path, const ls_array *a, ls_error *err)
{
    static const char *descr[] = {[LS_F32] = "<f4", [LS_I64] = "<i8", [LS_U8] = "|u1",
                                  [LS_I32] = "<i4", [LS_F64] = "<f8"};
    size_t nbytes;
    if (!checked_nbytes(a, &nbytes))
        return ls_fail(err, LS_ERR_ARG, "%s: cannot save an array with dtype %d, %d dims or a "
                       "negative/oversized shape", path, (int)a->dtype, a->ndim);
    if (nbytes > 0 && !a->data)
        return ls_fail(err, LS_ERR_ARG, "%s: array to save has no data", path);

    /* 8 dims of up to 19 digits plus separators fit comfortably in 512 bytes. */
    char h[512];
    int len = snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                       descr[a->dtype]);
    for (int i = 0; i < a->ndim; i++)
        len += snprintf(h + len, sizeof h - (size_t)len, "%s%lld", i ? ", " : "",
                        (long long)a->shape[i]);
    len += snprintf(h + len, sizeof h - (size_t)len, "%s), }", a->ndim == 1 ? "," : "");
    /* Version 1.0 (u16 length) always suffices here; pad so data starts 64-byte aligned. */
    size_t total = 10 + (size_t)len + 1;
    size_t pad = (64 - total % 64) % 64;
    memset(h + len, ' ', pad);
    h[len + (int)pad] = '\n';
    size_t hlen = (size_t)len + pad + 1;
    unsigned char pre[10];
    memcpy(pre, NPY_MAGIC, 6);
    pre[6] = 1;
    pre[7] = 0;
    pre[8] = (unsigned char)(hlen & 0xff);
    pre[9] = (unsigned char)(hlen >> 8);

    char *tmp;
    FILE *f;
    ls_status st = ls_atomic_open(path, &tmp, &f, err);
    if (st != LS_OK) return st;
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(h, 1, hlen, f) == hlen &&
             (nbytes == 0 || fwrite(a->data, 1, nbytes, f) == nbytes);
    return ls_atomic_close(path, tmp, f, ok, err);
}
