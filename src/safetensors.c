/* safetensors files: 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the tensor
 * bytes. The reader applies every check of the reference reader (read_metadata/validate) so a
 * file it accepts is one the official library accepts too; the writer reproduces the official
 * byte layout (tensor order, compact JSON, space padding to 8 bytes).
 */
#include "fileio.h"
#include "leukoseg.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "leukoseg reads and writes little-endian tensor files and needs a little-endian host"
#endif

/* The reference reader's MAX_HEADER_SIZE. */
#define ST_MAX_HEADER 100000000ull
/* JSON numbers arrive as doubles; above 2^53 they are no longer exact integers. */
#define ST_MAX_JSON_INT 9007199254740992.0

/* rank is the position in the reference Dtype enum, which is ordered by alignment; the writer
 * sorts by descending rank, so I64 tensors come before F64 ones although both align to 8. */
static const struct {
    const char *name;
    ls_dtype dtype;
    int rank;
} ST_DTYPES[] = {{"U8", LS_U8, 1}, {"I32", LS_I32, 9}, {"F32", LS_F32, 11},
                 {"F64", LS_F64, 12}, {"I64", LS_I64, 13}};
#define ST_NDTYPES (int)(sizeof ST_DTYPES / sizeof ST_DTYPES[0])

/* Valid in the format but not read by leukoseg: named in the error so users know to convert. */
static const char *const ST_OTHER_DTYPES[] = {"BOOL", "I8", "F8_E5M2", "F8_E4M3", "I16",
                                              "U16", "F16", "BF16", "U32", "U64"};

static int dtype_index(ls_dtype dt)
{
    for (int i = 0; i < ST_NDTYPES; i++)
        if (ST_DTYPES[i].dtype == dt) return i;
    return -1;
}

void ls_tensor_file_free(ls_tensor_file *tf)
{
    if (!tf) return;
    for (int i = 0; i < tf->n; i++) {
        free(tf->tensors[i].name);
        ls_array_free(&tf->tensors[i].array);
    }
    free(tf->tensors);
    for (int i = 0; i < tf->n_meta; i++) {
        free(tf->meta_keys[i]);
        free(tf->meta_values[i]);
    }
    free(tf->meta_keys);
    free(tf->meta_values);
    memset(tf, 0, sizeof *tf);
}

const ls_named_tensor *ls_tensor_file_find(const ls_tensor_file *tf, const char *name)
{
    for (int i = 0; i < tf->n; i++)
        if (strcmp(tf->tensors[i].name, name) == 0) return &tf->tensors[i];
    return NULL;
}

const char *ls_tensor_file_meta(const ls_tensor_file *tf, const char *key)
{
    for (int i = 0; i < tf->n_meta; i++)
        if (strcmp(tf->meta_keys[i], key) == 0) return tf->meta_values[i];
    return NULL;
}

/* ---- reading ------------------------------------------------------------------------------- */

static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, min = 0x80, c &= 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, min = 0x800, c &= 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, min = 0x10000, c &= 0x07;
        } else {
            return 0;
        }
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            c = c << 6 | (s[i + k] & 0x3f);
        }
        /* Overlong forms, UTF-16 surrogates and values past U+10FFFF are not UTF-8. */
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
        i += len;
    }
    return 1;
}

/* A JSON number that is an exact non-negative integer. */
static int json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= ST_MAX_JSON_INT) || d != (double)(uint64_t)d) return 0;
    *out = (uint64_t)d;
    return 1;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* Where one tensor's bytes lie; idx is the tensor's position in tf->tensors. */
typedef struct {
    uint64_t begin, end;
    size_t nbytes;
    const char *name;
    int idx;
} st_span;

/* Parses one tensor entry into t (name, dtype, shape) and its byte span. */
static ls_status parse_entry(const cJSON *e, const char *path, ls_named_tensor *t, st_span *sp,
                             ls_error *err)
{
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return ls_fail(err, LS_ERR_FORMAT, "%s: header entry '%s' is not an object", path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs) ||
        cJSON_GetArraySize(offs) != 2)
        return ls_fail(err, LS_ERR_FORMAT, "%s: tensor '%s' lacks a valid dtype, shape or "
                       "data_offsets [begin, end]", path, name);
    int di = -1;
    for (int i = 0; i < ST_NDTYPES; i++)
        if (strcmp(dt->valuestring, ST_DTYPES[i].name) == 0) di = i;
    if (di < 0) {
        for (size_t i = 0; i < sizeof ST_OTHER_DTYPES / sizeof ST_OTHER_DTYPES[0]; i++)
            if (strcmp(dt->valuestring, ST_OTHER_DTYPES[i]) == 0)
                return ls_fail(err, LS_ERR_FORMAT, "%s: tensor '%s' has dtype %s, which "
                               "leukoseg does not read; convert the file to F32 (e.g. "
                               "tensor.float() before saving)", path, name, dt->valuestring);
        return ls_fail(err, LS_ERR_FORMAT, "%s: tensor '%s' has unknown dtype '%.32s'", path,
                       name, dt->valuestring);
    }
    ls_array *a = &t->array;
    a->dtype = ST_DTYPES[di].dtype;
    int nd = cJSON_GetArraySize(shape);
    if (nd > 8)
        return ls_fail(err, LS_ERR_FORMAT, "%s: tensor '%s' has %d dimensions (at most 8 are "
                       "supported)", path, name, nd);
    a->ndim = nd;
    size_t nbytes = ls_dtype_size(a->dtype);
    int k = 0;
    for (const cJSON *d = shape->child; d; d = d->next, k++) {
        uint64_t v;
        if (!json_uint(d, &v))
            return ls_fail(err, LS_ERR_FORMAT, "%s: tensor '%s' has a shape entry that is not a "
                           "non-negative integer", path, name);
        if (v != 0 && nbytes > SIZE_MAX / v)
            return ls_fail(err, LS_ERR_FORMAT, "%s: tensor '%s' shape overflows the address "
                           "space", path, name);
        nbytes *= (size_t)v;
        a->shape[k] = (int64_t)v;
    }
    if (!json_uint(offs->child, &sp->begin) || !json_uint(offs->child->next, &sp->end))
        return ls_fail(err, LS_ERR_FORMAT, "%s: tensor '%s' has data_offsets that are not "
                       "non-negative integers", path, name);
    sp->nbytes = nbytes;
    if (!(t->name = dup_str(name)))
        return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory for tensor names", path);
    sp->name = t->name;
    return LS_OK;
}

static ls_status parse_metadata(const cJSON *m, const char *path, ls_tensor_file *tf,
                                ls_error *err)
{
    /* The reference reader treats "__metadata__": null as absent. */
    if (cJSON_IsNull(m)) return LS_OK;
    if (!cJSON_IsObject(m))
        return ls_fail(err, LS_ERR_FORMAT, "%s: __metadata__ is not a string map", path);
    int n = cJSON_GetArraySize(m);
    tf->meta_keys = calloc((size_t)n + 1, sizeof *tf->meta_keys);
    tf->meta_values = calloc((size_t)n + 1, sizeof *tf->meta_values);
    if (!tf->meta_keys || !tf->meta_values)
        return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory for metadata", path);
    for (const cJSON *e = m->child; e; e = e->next) {
        if (!cJSON_IsString(e))
            return ls_fail(err, LS_ERR_FORMAT, "%s: __metadata__ value of '%s' is not a string",
                           path, e->string);
        for (int i = 0; i < tf->n_meta; i++)
            if (strcmp(tf->meta_keys[i], e->string) == 0)
                return ls_fail(err, LS_ERR_FORMAT, "%s: __metadata__ key '%s' appears twice",
                               path, e->string);
        tf->meta_keys[tf->n_meta] = dup_str(e->string);
        tf->meta_values[tf->n_meta] = dup_str(e->valuestring);
        /* Counted before the check so ls_tensor_file_free releases a half-made pair. */
        tf->n_meta++;
        if (!tf->meta_keys[tf->n_meta - 1] || !tf->meta_values[tf->n_meta - 1])
            return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory for metadata", path);
    }
    return LS_OK;
}

static int cmp_span_name(const void *a, const void *b)
{
    return strcmp(((const st_span *)a)->name, ((const st_span *)b)->name);
}

static int cmp_span_offsets(const void *a, const void *b)
{
    const st_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Checks names unique and spans contiguous from 0 with sizes matching shapes (as the reference
 * reader does); leaves spans in file order and *data_len at the end of the last one. */
static ls_status validate(st_span *spans, int n, uint64_t *data_len, const char *path,
                          ls_error *err)
{
    qsort(spans, (size_t)n, sizeof *spans, cmp_span_name);
    for (int i = 1; i < n; i++)
        if (strcmp(spans[i - 1].name, spans[i].name) == 0)
            return ls_fail(err, LS_ERR_FORMAT, "%s: tensor '%s' appears twice in the header",
                           path, spans[i].name);
    qsort(spans, (size_t)n, sizeof *spans, cmp_span_offsets);
    uint64_t pos = 0;
    for (int i = 0; i < n; i++) {
        const st_span *s = &spans[i];
        if (s->begin != pos || s->end < s->begin)
            return ls_fail(err, LS_ERR_FORMAT, "%s: tensor '%s' has data_offsets [%llu, %llu] "
                           "but the data must continue at %llu without gaps or overlaps", path,
                           s->name, (unsigned long long)s->begin, (unsigned long long)s->end,
                           (unsigned long long)pos);
        if (s->end - s->begin != (uint64_t)s->nbytes)
            return ls_fail(err, LS_ERR_FORMAT, "%s: tensor '%s' spans %llu bytes but its shape "
                           "and dtype need %zu", path, s->name,
                           (unsigned long long)(s->end - s->begin), s->nbytes);
        pos = s->end;
    }
    *data_len = pos;
    return LS_OK;
}

/* Reads the length prefix and the header JSON; *root is the parsed object. */
static ls_status read_header(FILE *f, const char *path, uint64_t fsize, uint64_t *hlen_out,
                             cJSON **root, ls_error *err)
{
    unsigned char lenb[8];
    if (fsize < 8 || fread(lenb, 1, 8, f) != 8)
        return ls_fail(err, LS_ERR_FORMAT, "%s: too short to be a safetensors file", path);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | lenb[i];
    if (hlen > ST_MAX_HEADER)
        return ls_fail(err, LS_ERR_FORMAT, "%s: safetensors header length %llu exceeds the "
                       "100 MB limit (not a safetensors file, or corrupt)", path,
                       (unsigned long long)hlen);
    if (hlen > fsize - 8)
        return ls_fail(err, LS_ERR_FORMAT, "%s: safetensors header length %llu runs past the "
                       "end of the %llu-byte file (truncated?)", path, (unsigned long long)hlen,
                       (unsigned long long)fsize);
    char *h = malloc((size_t)hlen + 1);
    if (!h) return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory for the header", path);
    ls_status st = LS_OK;
    if (fread(h, 1, (size_t)hlen, f) != (size_t)hlen) {
        st = ls_fail(err, LS_ERR_IO, "%s: read error in the header", path);
    } else if (!utf8_valid((const unsigned char *)h, (size_t)hlen)) {
        st = ls_fail(err, LS_ERR_FORMAT, "%s: safetensors header is not valid UTF-8", path);
    } else {
        const char *end = NULL;
        *root = cJSON_ParseWithLengthOpts(h, (size_t)hlen, &end, 0);
        /* Like serde_json, allow only whitespace (the writer's padding) after the JSON value. */
        int ok = cJSON_IsObject(*root);
        for (const char *p = end; ok && p < h + hlen; p++)
            ok = *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r';
        if (!ok)
            st = ls_fail(err, LS_ERR_FORMAT, "%s: safetensors header is not a JSON object",
                         path);
    }
    free(h);
    *hlen_out = hlen;
    return st;
}

/* Fills tf from the parsed header and reads the data; spans has room for every entry. */
static ls_status load_tensors(FILE *f, const char *path, const cJSON *root, uint64_t hlen,
                              uint64_t fsize, st_span *spans, ls_tensor_file *tf, ls_error *err)
{
    ls_status st = LS_OK;
    int have_meta = 0;
    for (const cJSON *e = root->child; e && st == LS_OK; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            st = have_meta++ ? ls_fail(err, LS_ERR_FORMAT, "%s: __metadata__ appears twice",
                                       path)
                             : parse_metadata(e, path, tf, err);
        } else {
            spans[tf->n].idx = tf->n;
            st = parse_entry(e, path, &tf->tensors[tf->n], &spans[tf->n], err);
            /* The entry may hold a name already, so count it for ls_tensor_file_free. */
            tf->n++;
        }
    }
    if (st != LS_OK) return st;
    uint64_t data_len = 0;
    if ((st = validate(spans, tf->n, &data_len, path, err)) != LS_OK) return st;
    if (8 + hlen + data_len != fsize)
        return ls_fail(err, LS_ERR_FORMAT, "%s: file is %llu bytes but the header describes "
                       "%llu (truncated or trailing data)", path, (unsigned long long)fsize,
                       (unsigned long long)(8 + hlen + data_len));
    /* Spans are now contiguous and in file order, so the data is read in one forward pass. */
    for (int i = 0; i < tf->n; i++) {
        ls_named_tensor *t = &tf->tensors[spans[i].idx];
        size_t nb = spans[i].nbytes;
        /* One spare byte so empty tensors still get a non-NULL buffer. */
        if (!(t->array.data = malloc(nb + 1)))
            return ls_fail(err, LS_ERR_NOMEM, "%s: cannot allocate %zu bytes for tensor '%s'",
                           path, nb, t->name);
        if (fread(t->array.data, 1, nb, f) != nb)
            return ls_fail(err, LS_ERR_IO, "%s: read error in tensor '%s'", path, t->name);
    }
    return LS_OK;
}

static ls_status load_file(FILE *f, const char *path, ls_tensor_file *tf, ls_error *err)
{
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode))
        return ls_fail(err, LS_ERR_IO, "%s: not a regular file", path);
    uint64_t fsize = (uint64_t)sb.st_size, hlen = 0;
    cJSON *root = NULL;
    ls_status st = read_header(f, path, fsize, &hlen, &root, err);
    if (st == LS_OK) {
        int n = cJSON_GetArraySize(root);
        st_span *spans = calloc((size_t)n + 1, sizeof *spans);
        tf->tensors = calloc((size_t)n + 1, sizeof *tf->tensors);
        if (!spans || !tf->tensors)
            st = ls_fail(err, LS_ERR_NOMEM, "%s: out of memory for %d header entries", path, n);
        else
            st = load_tensors(f, path, root, hlen, fsize, spans, tf, err);
        free(spans);
    }
    cJSON_Delete(root);
    return st;
}

ls_status ls_safetensors_load(const char *path, ls_tensor_file *tf, ls_error *err)
{
    memset(tf, 0, sizeof *tf);
    FILE *f = fopen(path, "rb");
    if (!f) return ls_fail(err, LS_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    ls_status st = load_file(f, path, tf, err);
    fclose(f);
    if (st != LS_OK) ls_tensor_file_free(tf);
    return st;
}

/* ---- writing ------------------------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (n > cap - b->len) {
            if (cap > SIZE_MAX / 2) {
                b->oom = 1;
                return;
            }
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(sbuf *b, uint64_t v)
{
    char t[24];
    sb_put(b, t, (size_t)snprintf(t, sizeof t, "%llu", (unsigned long long)v));
}

/* A JSON string escaped the way serde_json does it, so headers match the official writer. */
static void sb_json_str(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char t[8];
        const char *esc = NULL;
        switch (*p) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (*p < 0x20) {
                snprintf(t, sizeof t, "\\u%04x", *p);
                esc = t;
            }
        }
        if (esc)
            sb_str(b, esc);
        else
            sb_put(b, (const char *)p, 1);
    }
    sb_put(b, "\"", 1);
}

/* Tensor order of the official writer: descending dtype rank, then name. */
typedef struct {
    int rank;
    const char *name;
    int idx;
} st_order;

static int cmp_order_name(const void *a, const void *b)
{
    return strcmp(((const st_order *)a)->name, ((const st_order *)b)->name);
}

static int cmp_write_order(const void *a, const void *b)
{
    const st_order *x = a, *y = b;
    if (x->rank != y->rank) return y->rank - x->rank;
    return strcmp(x->name, y->name);
}

/* Checks what the caller passed; a bad entry is an argument error naming it. */
static ls_status check_input(const ls_tensor_file *tf, const char *path, ls_error *err)
{
    if (tf->n < 0 || tf->n_meta < 0 || (tf->n > 0 && !tf->tensors) ||
        (tf->n_meta > 0 && (!tf->meta_keys || !tf->meta_values)))
        return ls_fail(err, LS_ERR_ARG, "%s: invalid tensor file to save", path);
    for (int i = 0; i < tf->n; i++) {
        const ls_named_tensor *t = &tf->tensors[i];
        const ls_array *a = &t->array;
        if (!t->name || strcmp(t->name, "__metadata__") == 0)
            return ls_fail(err, LS_ERR_ARG, "%s: tensor %d has no name or a reserved one", path,
                           i);
        if (dtype_index(a->dtype) < 0 || a->ndim < 0 || a->ndim > 8)
            return ls_fail(err, LS_ERR_ARG, "%s: tensor '%s' has an invalid dtype or ndim %d",
                           path, t->name, a->ndim);
        size_t nb = ls_dtype_size(a->dtype);
        for (int d = 0; d < a->ndim; d++) {
            if (a->shape[d] < 0 || (uint64_t)a->shape[d] > SIZE_MAX ||
                (a->shape[d] != 0 && nb > SIZE_MAX / (size_t)a->shape[d]))
                return ls_fail(err, LS_ERR_ARG, "%s: tensor '%s' has an invalid shape", path,
                               t->name);
            nb *= (size_t)a->shape[d];
        }
        if (nb > 0 && !a->data)
            return ls_fail(err, LS_ERR_ARG, "%s: tensor '%s' has no data", path, t->name);
    }
    for (int i = 0; i < tf->n_meta; i++)
        if (!tf->meta_keys[i] || !tf->meta_values[i])
            return ls_fail(err, LS_ERR_ARG, "%s: metadata entry %d is NULL", path, i);
    return LS_OK;
}

/* Builds the padded header JSON in b for the tensors in `order`. */
static ls_status build_header(const ls_tensor_file *tf, const st_order *order, sbuf *b,
                              const char *path, ls_error *err)
{
    sb_put(b, "{", 1);
    if (tf->n_meta > 0) {
        sb_str(b, "\"__metadata__\":{");
        for (int i = 0; i < tf->n_meta; i++) {
            if (i) sb_put(b, ",", 1);
            sb_json_str(b, tf->meta_keys[i]);
            sb_put(b, ":", 1);
            sb_json_str(b, tf->meta_values[i]);
        }
        sb_put(b, "}", 1);
    }
    uint64_t pos = 0;
    for (int i = 0; i < tf->n; i++) {
        const ls_named_tensor *t = &tf->tensors[order[i].idx];
        if (i || tf->n_meta > 0) sb_put(b, ",", 1);
        sb_json_str(b, t->name);
        sb_str(b, ":{\"dtype\":\"");
        sb_str(b, ST_DTYPES[dtype_index(t->array.dtype)].name);
        sb_str(b, "\",\"shape\":[");
        for (int d = 0; d < t->array.ndim; d++) {
            if (d) sb_put(b, ",", 1);
            sb_u64(b, (uint64_t)t->array.shape[d]);
        }
        sb_str(b, "],\"data_offsets\":[");
        sb_u64(b, pos);
        sb_put(b, ",", 1);
        /* check_input bounded each size by SIZE_MAX; the sum must stay exact for readers. */
        uint64_t nb = ls_array_numel(&t->array) * ls_dtype_size(t->array.dtype);
        if (nb > (uint64_t)ST_MAX_JSON_INT - pos)
            return ls_fail(err, LS_ERR_ARG, "%s: tensors total more than 2^53 bytes", path);
        pos += nb;
        sb_u64(b, pos);
        sb_str(b, "]}");
    }
    sb_put(b, "}", 1);
    /* Pad with spaces so the data starts 8-byte aligned, as the official writer does. */
    while (!b->oom && b->len % 8) sb_put(b, " ", 1);
    if (b->oom) return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory for the header", path);
    if (b->len > ST_MAX_HEADER)
        return ls_fail(err, LS_ERR_ARG, "%s: header would exceed the 100 MB limit readers "
                       "enforce (too many tensors or too much metadata)", path);
    return LS_OK;
}

ls_status ls_safetensors_save(const char *path, const ls_tensor_file *tf, ls_error *err)
{
    ls_status st = check_input(tf, path, err);
    if (st != LS_OK) return st;
    st_order *order = malloc(((size_t)tf->n + 1) * sizeof *order);
    if (!order) return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < tf->n; i++) {
        order[i].rank = ST_DTYPES[dtype_index(tf->tensors[i].array.dtype)].rank;
        order[i].name = tf->tensors[i].name;
        order[i].idx = i;
    }
    qsort(order, (size_t)tf->n, sizeof *order, cmp_order_name);
    for (int i = 1; i < tf->n && st == LS_OK; i++)
        if (strcmp(order[i - 1].name, order[i].name) == 0)
            st = ls_fail(err, LS_ERR_ARG, "%s: tensor name '%s' is used twice", path,
                         order[i].name);
    qsort(order, (size_t)tf->n, sizeof *order, cmp_write_order);
    sbuf hb = {0};
    if (st == LS_OK) st = build_header(tf, order, &hb, path, err);

    char *tmp = NULL;
    FILE *f = NULL;
    if (st == LS_OK) st = ls_atomic_open(path, &tmp, &f, err);
    if (st == LS_OK) {
        unsigned char lenb[8];
        for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)hb.len >> (8 * i));
        int ok = fwrite(lenb, 1, 8, f) == 8 && fwrite(hb.p, 1, hb.len, f) == hb.len;
        for (int i = 0; i < tf->n && ok; i++) {
            const ls_array *a = &tf->tensors[order[i].idx].array;
            size_t nb = ls_array_numel(a) * ls_dtype_size(a->dtype);
            ok = nb == 0 || fwrite(a->data, 1, nb, f) == nb;
        }
        st = ls_atomic_close(path, tmp, f, ok, err);
    }
    free(hb.p);
    free(order);
    return st;
}
