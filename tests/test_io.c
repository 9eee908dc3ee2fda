/* Tensor file I/O: .npy and safetensors round trips, byte-exact layout against the official
 * writer, and corrupt files that must fail with LS_ERR_FORMAT rather than crash. */
#include "leukoseg.h"
#include "testutil.h"

#include <dirent.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static char g_dir[64];

static const char *tpath(const char *name)
{
    static char buf[4][256];
    static int slot;
    char *p = buf[slot++ % 4];
    snprintf(p, 256, "%s/%s", g_dir, name);
    return p;
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
    fclose(f);
}

static size_t read_bytes(const char *path, unsigned char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

/* Number of entries in the test folder, to prove saves leave no temporary files behind. */
static int dir_entries(void)
{
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

/* ---- npy ------------------------------------------------------------------------------------ */

static void test_npy_roundtrip(void)
{
    ls_error err = {{0}};
    float f32[6] = {1.5f, -2, 3, 4, 5, 6.25f};
    double f64[3] = {1e300, -0.5, 3};
    int64_t i64[2] = {INT64_MIN, 42};
    int32_t i32[4] = {-7, 0, 7, INT32_MAX};
    uint8_t u8[5] = {0, 1, 128, 254, 255};
    struct {
        ls_dtype dt;
        int ndim;
        int64_t shape[8];
        void *data;
    } cases[] = {
        {LS_F32, 2, {2, 3}, f32}, {LS_F64, 1, {3}, f64}, {LS_I64, 0, {0}, i64},
        {LS_I32, 3, {1, 2, 2}, i32}, {LS_U8, 8, {1, 1, 1, 5, 1, 1, 1, 1}, u8},
        {LS_F32, 2, {0, 3}, f32},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ls_array a = {cases[i].dt, cases[i].ndim, {0}, cases[i].data};
        memcpy(a.shape, cases[i].shape, sizeof a.shape);
        ls_array b;
        CHECK_OK(ls_npy_save(tpath("a.npy"), &a, &err), err);
        CHECK_OK(ls_npy_load(tpath("a.npy"), &b, &err), err);
        CHECK(b.dtype == a.dtype && b.ndim == a.ndim);
        CHECK(memcmp(b.shape, a.shape, (size_t)a.ndim * sizeof a.shape[0]) == 0);
        size_t nb = ls_array_numel(&a) * ls_dtype_size(a.dtype);
        CHECK(ls_array_numel(&b) == ls_array_numel(&a));
        CHECK(b.data && memcmp(b.data, a.data, nb) == 0);
        /* numpy aligns the data to 64 bytes; the header is therefore 118 bytes here. */
        unsigned char raw[256];
        size_t n = read_bytes(tpath("a.npy"), raw, sizeof raw);
        CHECK(n == 128 + nb && raw[6] == 1 && raw[7] == 0 && raw[127] == '\n');
        ls_array_free(&b);
        CHECK(b.data == NULL);
    }
    CHECK(dir_entries() == 1);
}

/* A header exactly as numpy writes it, checked byte for byte. */
static void test_npy_exact_header(void)
{
    ls_error err = {{0}};
    float v[3] = {1, 2, 3};
    ls_array a = {LS_F32, 1, {3}, v};
    CHECK_OK(ls_npy_save(tpath("h.npy"), &a, &err), err);
    unsigned char raw[256];
    size_t n = read_bytes(tpath("h.npy"), raw, sizeof raw);
    const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }";
    CHECK(n == 128 + 12);
    CHECK(memcmp(raw, "\x93NUMPY\x01\x00\x76\x00", 10) == 0);
    CHECK(memcmp(raw + 10, dict, strlen(dict)) == 0);
    for (size_t i = 10 + strlen(dict); i < 127; i++) CHECK(raw[i] == ' ');
}

/* Writes an npy file with the given version and dict and `data_len` zero data bytes. */
static void write_npy(const char *path, int major, const char *dict, size_t data_len)
{
    unsigned char buf[1024] = {0};
    size_t hl = strlen(dict), pre = major == 1 ? 10 : 12;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[8] = (unsigned char)(hl & 0xff);
    buf[9] = (unsigned char)(hl >> 8);
    memcpy(buf + pre, dict, hl);
    write_bytes(path, buf, pre + hl + data_len);
}

static void test_npy_variants_and_errors(void)
{
    ls_error err = {{0}};
    ls_array a;
    /* Keys in another order, double quotes, v2.0 header, plain 'u1', Python 2 'L' suffix. */
    write_npy(tpath("v.npy"), 2, "{\"shape\": (2L, 3), 'fortran_order': False, 'descr': 'u1'}\n",
              6);
    CHECK_OK(ls_npy_load(tpath("v.npy"), &a, &err), err);
    CHECK(a.dtype == LS_U8 && a.ndim == 2 && a.shape[0] == 2 && a.shape[1] == 3);
    ls_array_free(&a);
    write_npy(tpath("v.npy"), 1, "{'descr': '<i8', 'fortran_order': False, 'shape': ()}", 8);
    CHECK_OK(ls_npy_load(tpath("v.npy"), &a, &err), err);
    CHECK(a.dtype == LS_I64 && a.ndim == 0 && ls_array_numel(&a) == 1);
    ls_array_free(&a);

    struct {
        const char *dict;
        size_t data_len;
        const char *why;
    } bad[] = {
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", 8, "Fortran"},
        {"{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8, "big-endian"},
        {"{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }", 4, "not supported"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 8, "bytes"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 12, "bytes"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", 4, "8 dim"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", 4, "non-negative"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", 4,
         "non-negative"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", 4,
         "bytes"},
        {"{'descr': '<f4', 'shape': (2,), }", 8, "lacks"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", 8, "unexpected"},
        {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8, "structured"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2 3), }", 8, "malformed"},
        {"not a dict", 8, "not a dict"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_npy(tpath("bad.npy"), 1, bad[i].dict, bad[i].data_len);
        err.msg[0] = '\0';
        ls_status st = ls_npy_load(tpath("bad.npy"), &a, &err);
        CHECK(st == LS_ERR_FORMAT);
        CHECK(a.data == NULL);
        if (!strstr(err.msg, bad[i].why) || !strstr(err.msg, "bad.npy"))
            fprintf(stderr, "case %zu: unexpected message '%s'\n", i, err.msg), tu_failures++;
    }
    /* Header length beyond the file, bad magic, version 9, empty file, missing file. */
    unsigned char raw[16] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0xff, 0xff, '{'};
    write_bytes(tpath("bad.npy"), raw, 11);
    CHECK(ls_npy_load(tpath("bad.npy"), &a, &err) == LS_ERR_FORMAT);
    raw[6] = 2;
    raw[10] = raw[11] = 0xff;
    write_bytes(tpath("bad.npy"), raw, 16);
    CHECK(ls_npy_load(tpath("bad.npy"), &a, &err) == LS_ERR_FORMAT);
    raw[6] = 9;
    write_bytes(tpath("bad.npy"), raw, 16);
    CHECK(ls_npy_load(tpath("bad.npy"), &a, &err) == LS_ERR_FORMAT && strstr(err.msg, "9.0"));
    write_bytes(tpath("bad.npy"), "PK\x03\x04 not npy", 12);
    CHECK(ls_npy_load(tpath("bad.npy"), &a, &err) == LS_ERR_FORMAT);
    write_bytes(tpath("bad.npy"), "", 0);
    CHECK(ls_npy_load(tpath("bad.npy"), &a, &err) == LS_ERR_FORMAT);
    CHECK(ls_npy_load(tpath("missing.npy"), &a, &err) == LS_ERR_IO);
    CHECK(strstr(err.msg, "missing.npy") != NULL);

    /* Flipping any header byte or truncating a valid file never crashes. */
    int32_t iv[6] = {1, 2, 3, 4, 5, 6};
    ls_array good = {LS_I32, 2, {2, 3}, iv};
    CHECK_OK(ls_npy_save(tpath("bad.npy"), &good, &err), err);
    unsigned char file[256];
    size_t fn = read_bytes(tpath("bad.npy"), file, sizeof file);
    for (size_t pos = 0; pos < fn; pos++) {
        write_bytes(tpath("bad.npy"), file, pos);
        CHECK(ls_npy_load(tpath("bad.npy"), &a, &err) == LS_ERR_FORMAT);
        if (pos >= 128) continue;
        unsigned char c = file[pos];
        file[pos] ^= 0x5a;
        write_bytes(tpath("bad.npy"), file, fn);
        if (ls_npy_load(tpath("bad.npy"), &a, &err) == LS_OK) ls_array_free(&a);
        file[pos] = c;
    }

    /* Saving into a folder that does not exist fails cleanly. */
    float v = 1;
    ls_array s = {LS_F32, 0, {0}, &v};
    CHECK(ls_npy_save(tpath("no/such/dir/x.npy"), &s, &err) == LS_ERR_IO);
    s.ndim = 9;
    CHECK(ls_npy_save(tpath("x.npy"), &s, &err) == LS_ERR_ARG);
}

/* ---- safetensors ---------------------------------------------------------------------------- */

static void test_st_roundtrip(void)
{
    ls_error err = {{0}};
    float w[6] = {0, 1, 2, 3, 4, 5};
    double d[2] = {0.25, -8};
    int64_t step = 1234567890123ll;
    int32_t i32[3] = {1, -2, 3};
    uint8_t u8[3] = {9, 8, 7};
    ls_named_tensor t[] = {
        {"z.weight", {LS_F32, 2, {2, 3}, w}},
        {"a.bias", {LS_F64, 1, {2}, d}},
        {"num_batches_tracked", {LS_I64, 0, {0}, &step}},
        {"ids", {LS_I32, 1, {3}, i32}},
        {"bytes", {LS_U8, 1, {3}, u8}},
        {"empty", {LS_F32, 2, {0, 4}, NULL}},
    };
    char *keys[] = {"format", "config"}, *vals[] = {"pt", "{\"variant\": \"b0\"}\n\t\x01"};
    ls_tensor_file tf = {t, 6, keys, vals, 2};
    CHECK_OK(ls_safetensors_save(tpath("m.safetensors"), &tf, &err), err);
    CHECK(dir_entries() == 1);

    ls_tensor_file in;
    CHECK_OK(ls_safetensors_load(tpath("m.safetensors"), &in, &err), err);
    CHECK(in.n == 6 && in.n_meta == 2);
    for (int i = 0; i < 6; i++) {
        const ls_named_tensor *r = ls_tensor_file_find(&in, t[i].name);
        CHECK(r != NULL);
        if (!r) continue;
        CHECK(r->array.dtype == t[i].array.dtype && r->array.ndim == t[i].array.ndim);
        CHECK(memcmp(r->array.shape, t[i].array.shape,
                     (size_t)t[i].array.ndim * sizeof(int64_t)) == 0);
        size_t nb = ls_array_numel(&r->array) * ls_dtype_size(r->array.dtype);
        CHECK(r->array.data != NULL);
        CHECK(nb == 0 || memcmp(r->array.data, t[i].array.data, nb) == 0);
    }
    const ls_named_tensor *s = ls_tensor_file_find(&in, "num_batches_tracked");
    CHECK(s && s->array.ndim == 0 && ls_array_numel(&s->array) == 1 &&
          *(int64_t *)s->array.data == step);
    CHECK(ls_tensor_file_find(&in, "nope") == NULL);
    CHECK(ls_tensor_file_meta(&in, "format") && !strcmp(ls_tensor_file_meta(&in, "format"), "pt"));
    CHECK(ls_tensor_file_meta(&in, "config") &&
          !strcmp(ls_tensor_file_meta(&in, "config"), vals[1]));
    CHECK(ls_tensor_file_meta(&in, "missing") == NULL);
    ls_tensor_file_free(&in);
    CHECK(in.n == 0 && in.tensors == NULL);

    /* Order in the file: I64, F64, F32 (by name), I32, U8, as the official writer sorts. */
    unsigned char raw[2048];
    size_t n = read_bytes(tpath("m.safetensors"), raw, sizeof raw - 1);
    raw[n] = 0;
    const char *h = (const char *)raw + 8;
    const char *p1 = strstr(h, "\"num_batches_tracked\""), *p2 = strstr(h, "\"a.bias\"");
    const char *p3 = strstr(h, "\"empty\""), *p4 = strstr(h, "\"z.weight\"");
    const char *p5 = strstr(h, "\"ids\""), *p6 = strstr(h, "\"bytes\"");
    const char *pm = strstr(h, "\"__metadata__\":{\"format\":\"pt\",\"config\":");
    CHECK(pm && p1 && p2 && p3 && p4 && p5 && p6);
    CHECK(pm < p1 && p1 < p2 && p2 < p3 && p3 < p4 && p4 < p5 && p5 < p6);
    CHECK(strstr(h, "\"num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],"
                    "\"data_offsets\":[0,8]}") != NULL);
    CHECK(strstr(h, "\\\"variant\\\": \\\"b0\\\"}\\n\\t\\u0001\"") != NULL);

    /* Duplicate names and bad entries are refused before anything is written. */
    t[1].name = "z.weight";
    CHECK(ls_safetensors_save(tpath("d.safetensors"), &tf, &err) == LS_ERR_ARG);
    CHECK(strstr(err.msg, "z.weight") != NULL);
    t[1].name = "__metadata__";
    CHECK(ls_safetensors_save(tpath("d.safetensors"), &tf, &err) == LS_ERR_ARG);
    t[1].name = "a.bias";
    t[0].array.data = NULL;
    CHECK(ls_safetensors_save(tpath("d.safetensors"), &tf, &err) == LS_ERR_ARG);
    CHECK(dir_entries() == 1);
}

/* The three layouts of the official writer's own unit tests, rebuilt from their description:
 * a 64-byte header that needs no padding, one padded with 7 spaces, and metadata only. */
static void test_st_byte_exact(void)
{
    ls_error err = {{0}};
    float v[6] = {0, 1, 2, 3, 4, 5};
    unsigned char raw[256], want[256];

    ls_named_tensor t = {"attn.0", {LS_F32, 3, {1, 2, 3}, v}};
    ls_tensor_file tf = {&t, 1, NULL, NULL, 0};
    CHECK_OK(ls_safetensors_save(tpath("x.safetensors"), &tf, &err), err);
    const char *j1 = "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}";
    CHECK(strlen(j1) == 64);
    memset(want, 0, 8);
    want[0] = 64;
    memcpy(want + 8, j1, 64);
    memcpy(want + 72, v, 24);
    CHECK(read_bytes(tpath("x.safetensors"), raw, sizeof raw) == 96);
    CHECK(memcmp(raw, want, 96) == 0);

    t.name = "attn0";
    t.array.ndim = 4;
    int64_t s4[4] = {1, 1, 2, 3};
    memcpy(t.array.shape, s4, sizeof s4);
    CHECK_OK(ls_safetensors_save(tpath("x.safetensors"), &tf, &err), err);
    const char *j2 = "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}"
                     "       ";
    memset(want, 0, 8);
    want[0] = 72;
    memcpy(want + 8, j2, 72);
    memcpy(want + 80, v, 24);
    CHECK(read_bytes(tpath("x.safetensors"), raw, sizeof raw) == 104);
    CHECK(memcmp(raw, want, 104) == 0);

    char *k = "framework", *val = "pt";
    ls_tensor_file meta_only = {NULL, 0, &k, &val, 1};
    CHECK_OK(ls_safetensors_save(tpath("x.safetensors"), &meta_only, &err), err);
    const char *j3 = "{\"__metadata__\":{\"framework\":\"pt\"}}     ";
    memset(want, 0, 8);
    want[0] = 40;
    memcpy(want + 8, j3, 40);
    CHECK(read_bytes(tpath("x.safetensors"), raw, sizeof raw) == 48);
    CHECK(memcmp(raw, want, 48) == 0);
    ls_tensor_file in;
    CHECK_OK(ls_safetensors_load(tpath("x.safetensors"), &in, &err), err);
    CHECK(in.n == 0 && in.n_meta == 1);
    ls_tensor_file_free(&in);

    ls_tensor_file none = {0};
    CHECK_OK(ls_safetensors_save(tpath("x.safetensors"), &none, &err), err);
    CHECK(read_bytes(tpath("x.safetensors"), raw, sizeof raw) == 16);
    CHECK(memcmp(raw, "\x08\0\0\0\0\0\0\0{}      ", 16) == 0);
}

/* Writes [N][header][data_len bytes] with N = strlen(header) unless n_override. */
static void write_st(const char *path, const char *header, size_t data_len, uint64_t n_override)
{
    static unsigned char buf[4096];
    size_t hl = strlen(header);
    uint64_t n = n_override ? n_override : hl;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(n >> (8 * i));
    memcpy(buf + 8, header, hl);
    memset(buf + 8 + hl, 0x3f, data_len);
    write_bytes(path, buf, 8 + hl + data_len);
}

static void test_st_corrupt(void)
{
    ls_error err = {{0}};
    ls_tensor_file tf;
    /* A valid file first, so each bad case below differs from it in one respect. */
    write_st(tpath("c.st"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
             8, 0);
    CHECK_OK(ls_safetensors_load(tpath("c.st"), &tf, &err), err);
    ls_tensor_file_free(&tf);

    struct {
        const char *header;
        size_t data_len;
        uint64_t n;
        const char *why;
    } bad[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 7, 0, "truncated"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 9, 0, "trailing"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, 0, "gaps"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, 0, "overlaps"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 20, 0, "gaps"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, 0, "need 12"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, 0, "gaps"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, 0, "twice"},
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, 0, "BF16"},
        {"{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, 0, "unknown"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, 0,
         "non-negative"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, 0,
         "non-negative"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
         "\"data_offsets\":[0,8]}}", 8, 0, "overflows"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, 0,
         "dimensions"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, 0, "lacks"},
        {"{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0, "lacks"},
        {"{\"a\":[1,2]}", 0, 0, "not an object"},
        {"[1,2]", 0, 0, "not a JSON object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} x", 8, 0,
         "not a JSON object"},
        {"{\"a\":{\"dtype\":\"F32\",", 0, 0, "not a JSON object"},
        {"{\"__metadata__\":{\"k\":1}}", 0, 0, "not a string"},
        {"{\"__metadata__\":{\"k\":\"1\"},\"__metadata__\":{}}", 0, 0, "twice"},
        {"{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, 0, "twice"},
        {"{\"\xff\":{}}", 0, 0, "UTF-8"},
        {"{\"a\":1}", 0, 200000000, "100 MB"},
        {"{\"a\":1}", 0, 1000, "past the end"},
        {"{\"a\":1}", 0, UINT64_MAX, "100 MB"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_st(tpath("c.st"), bad[i].header, bad[i].data_len, bad[i].n);
        err.msg[0] = '\0';
        ls_status st = ls_safetensors_load(tpath("c.st"), &tf, &err);
        CHECK(st == LS_ERR_FORMAT);
        CHECK(tf.n == 0 && tf.tensors == NULL);
        if (!strstr(err.msg, bad[i].why) || !strstr(err.msg, "c.st"))
            fprintf(stderr, "case %zu: unexpected message '%s'\n", i, err.msg), tu_failures++;
    }
    write_bytes(tpath("c.st"), "\x02\0\0", 3);
    CHECK(ls_safetensors_load(tpath("c.st"), &tf, &err) == LS_ERR_FORMAT);
    CHECK(ls_safetensors_load(tpath("none.st"), &tf, &err) == LS_ERR_IO);

    /* Every truncation of a valid file fails cleanly (and none crashes under ASan). */
    float w[6] = {1, 2, 3, 4, 5, 6};
    int64_t k = 3;
    ls_named_tensor t[2] = {{"w", {LS_F32, 2, {2, 3}, w}}, {"k", {LS_I64, 0, {0}, &k}}};
    ls_tensor_file good = {t, 2, NULL, NULL, 0};
    CHECK_OK(ls_safetensors_save(tpath("g.st"), &good, &err), err);
    unsigned char raw[512];
    size_t n = read_bytes(tpath("g.st"), raw, sizeof raw);
    for (size_t cut = 0; cut < n; cut++) {
        write_bytes(tpath("c.st"), raw, cut);
        CHECK(ls_safetensors_load(tpath("c.st"), &tf, &err) == LS_ERR_FORMAT);
    }
    /* Flipping any single header byte never crashes; most flips are rejected. */
    for (size_t pos = 0; pos < n - 32; pos++) {
        unsigned char c = raw[pos];
        raw[pos] ^= 0x5a;
        write_bytes(tpath("c.st"), raw, n);
        if (ls_safetensors_load(tpath("c.st"), &tf, &err) == LS_OK) ls_tensor_file_free(&tf);
        raw[pos] = c;
    }
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/ls_test_io_XXXXXX");
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 2;
    }
    test_npy_roundtrip();
    test_npy_exact_header();
    test_npy_variants_and_errors();
    unlink(tpath("a.npy"));
    unlink(tpath("h.npy"));
    unlink(tpath("v.npy"));
    unlink(tpath("bad.npy"));
    test_st_roundtrip();
    test_st_byte_exact();
    test_st_corrupt();
    const char *files[] = {"m.safetensors", "x.safetensors", "c.st", "g.st"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) unlink(tpath(files[i]));
    rmdir(g_dir);
    TEST_DONE();
}
