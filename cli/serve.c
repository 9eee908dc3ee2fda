/* leukoseg serve: the results pages and a JSON API over HTTP (libmicrohttpd).
 *
 *   GET  /                    index.html (page files are served from the binary by exact name)
 *   GET  /data/model.js       architecture, training history   (computed at start)
 *   GET  /data/results.js     test metrics, gallery index      (computed at start)
 *   GET  /data/gallery/NAME.png  gallery strips
 *   GET  /api/health          {"ok": true}
 *   POST /api/segment         body = image bytes -> areas, cells, mask/overlay as data: URLs
 *   POST /api/attention?x=X&y=Y  body = image bytes -> per-stage attention of pixel (X, Y)
 *
 * Threads: libmicrohttpd runs one thread per connection (so page requests are not queued behind
 * inference); every use of the model goes through one inference thread, which keeps one OpenMP
 * thread pool warm and bounds memory to one decoded image at a time. */
#include "cli.h"

#ifndef LS_HAVE_MHD

int cmd_serve(int argc, char **argv)
{
    (void)argc, (void)argv;
    fputs("leukoseg serve: this build has no libmicrohttpd; install libmicrohttpd-dev and "
          "rebuild (leukoseg report writes the same pages as files)\n", stderr);
    return 1;
}

#else

#define LS_WEB_WITH_MODEL
#include "web.h"


#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BODY ((size_t)20 * 1024 * 1024)   /* upload cap in bytes (20 MiB) */
#define MAX_SIDE 4096                          /* upload cap: width and height in pixels */
#define MAX_CONNECTIONS 128 /* with 20 MiB uploads held each: at most 2.5 GiB */

static const char *serve_help =
    "usage: leukoseg serve [--model M] [--data DIR] [--port P] [--bind ADDR]\n"
    "\n"
    "Serves the results pages and a JSON API on http://ADDR:P/ (default 127.0.0.1:8080; port 0\n"
    "picks a free one, printed on stdout). At start, segments the test split of each dataset\n"
    "folder of DIR for the results pages (metrics, gallery). Stop with Ctrl-C or SIGTERM.\n"
    "\n"
    "  POST /api/segment            image bytes (BMP, PNG, JPEG) -> JSON: class areas, cells,\n"
    "                               image/mask/overlay as PNG data: URLs\n"
    "  POST /api/segment?window=W   the same for a field with many cells: half-overlapping\n"
    "                               W x W pixel windows (see count --window)\n"
    "  POST /api/attention?x=X&y=Y  image bytes -> each stage's last-block attention for the\n"
    "                               pixel (X, Y), averaged over heads, on the reduced key grid\n"
    "Uploads over 20 MiB or 4096 pixels a side get 413, undecodable ones 400 (JSON errors).\n"
    "\n"
    "  --model M    model file (default: the shipped model)\n"
    "  --data DIR   dataset folder for the results pages (default: segmentation_WBC; a DIR\n"
    "               given here must exist, a missing default only leaves the metrics out)\n"
    "  --port P     TCP port (default 8080), opened before the results pages are computed\n"
    "  --bind ADDR  IPv4 address to listen on (default 127.0.0.1, this machine only)\n";

/* ------------------------------------------------------------------------------------------ */
/* Inference thread                                                                            */
/* ------------------------------------------------------------------------------------------ */

enum job_kind { JOB_SEGMENT, JOB_ATTENTION };

typedef struct job {
    enum job_kind kind;
    const uint8_t *body;
    size_t len;
    int x, y;            /* attention query pixel */
    int window;          /* segment: window side for fields with many cells, 0 whole image */
    /* results */
    unsigned status;     /* HTTP status */
    char *json;          /* malloc'd response body */
    int done;
    struct job *next;
} job;

typedef struct {
    ls_model *model;
    ls_workspace *ws;    /* attention workspace, reused (the input size is fixed) */
    web_bundle bundle;
    pthread_mutex_t lock;
    pthread_cond_t wake, finished;
    job *head, *tail;
    int stopping;
} server;

static char *json_error(const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* The job's reply: an error with its HTTP status, or the result object (status 200) when ok,
 * else an internal error with msg. */
static void reply_error(job *j, unsigned status, const char *msg)
{
    j->status = status;
    j->json = json_error(msg);
}

static void reply_result(job *j, int ok, const cJSON *result, const char *msg)
{
    if (!ok) {
        reply_error(j, MHD_HTTP_INTERNAL_SERVER_ERROR, msg);
        return;
    }
    j->status = MHD_HTTP_OK;
    j->json = cJSON_PrintUnformatted(result);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* Width and height from the file header, without decoding: a small file can declare a huge
 * image (a PNG of 30000 x 30000 zeros compresses to a few MB), which must be refused before the
 * decoder allocates it. Returns 0 when the header gives no size (the decoder then decides). */
static int sniff_size(const uint8_t *b, size_t n, long *w, long *h)
{
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n >= 24 && !memcmp(b, png_sig, 8) && !memcmp(b + 12, "IHDR", 4)) {
        *w = be32(b + 16);
        *h = be32(b + 20);
        return 1;
    }
    if (n >= 26 && b[0] == 'B' && b[1] == 'M') {
        uint32_t hs = le32(b + 14);
        if (hs == 12) { /* BITMAPCOREHEADER: 16-bit sizes */
            *w = b[18] | b[19] << 8;
            *h = b[20] | b[21] << 8;
        } else {
            *w = labs((long)(int32_t)le32(b + 18));
            *h = labs((long)(int32_t)le32(b + 22));
        }
        return 1;
    }
    if (n >= 4 && b[0] == 0xff && b[1] == 0xd8) {
        size_t p = 2;
        while (p + 9 < n) {
            if (b[p] != 0xff) return 0;
            uint8_t m = b[p + 1];
            if (m == 0xff) { /* fill byte */
                p++;
                continue;
            }
            if (m == 0xd8 || m == 0x01 || (m >= 0xd0 && m <= 0xd7)) { /* no length */
                p += 2;
                continue;
            }
            size_t seg = (size_t)b[p + 2] << 8 | b[p + 3];
            if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {
                *h = b[p + 5] << 8 | b[p + 6];
                *w = b[p + 7] << 8 | b[p + 8];
                return 1;
            }
            p += 2 + seg;
        }
    }
    return 0;
}

/* Decodes an upload; sets job status and error body on failure. */
static int decode_upload(job *j, ls_image *img)
{
    long w = 0, h = 0;
    char msg[1200];
    if (sniff_size(j->body, j->len, &w, &h) && (w > MAX_SIDE || h > MAX_SIDE)) {
        snprintf(msg, sizeof msg, "image is %ldx%ld pixels; the limit is %dx%d", w, h, MAX_SIDE,
                 MAX_SIDE);
        reply_error(j, MHD_HTTP_CONTENT_TOO_LARGE, msg);
        return 0;
    }
    ls_error err = {{0}};
    if (ls_image_decode(j->body, j->len, "upload", img, &err) != LS_OK) {
        snprintf(msg, sizeof msg, "cannot decode the upload as BMP, PNG or JPEG: %s", err.msg);
        reply_error(j, MHD_HTTP_BAD_REQUEST, msg);
        return 0;
    }
    if (img->w > MAX_SIDE || img->h > MAX_SIDE) { /* a format the sniffer does not know */
        snprintf(msg, sizeof msg, "image is %dx%d pixels; the limit is %dx%d", img->w, img->h,
                 MAX_SIDE, MAX_SIDE);
        ls_image_free(img);
        reply_error(j, MHD_HTTP_CONTENT_TOO_LARGE, msg);
        return 0;
    }
    return 1;
}

static void add_png(cJSON *o, const char *key, const uint8_t *rgb, int w, int h, ls_error *err,
                    int *ok)
{
    if (!*ok) return;
    char *url = web_png_data_url(rgb, w, h, err);
    if (!url) {
        *ok = 0;
        return;
    }
    cJSON_AddStringToObject(o, key, url);
    free(url);
}

static void run_segment(server *s, job *j)
{
    ls_image img = {0};
    if (!decode_upload(j, &img)) return;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ls_error err = {{0}};
    ls_mask mask = {0};
    ls_cells cells = {0};
    uint8_t *colored = NULL, *overlay = NULL;
    int ok = web_segment_cells(s->model, &img, j->window, &mask, &cells, &err) == LS_OK;
    if (ok) {
        colored = web_color_mask(&mask, NULL, 0);
        overlay = web_color_mask(&mask, &img, 0.45f);
        if (!colored || !overlay) ok = 0, ls_fail(&err, LS_ERR_NOMEM, "out of memory");
    }
    cJSON *o = cJSON_CreateObject();
    if (ok) {
        int k = ls_model_config(s->model)->num_labels;
        size_t n = (size_t)img.w * img.h;
        double counts[16] = {0};
        for (size_t p = 0; p < n; p++) counts[mask.data[p]] += 1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        cJSON_AddNumberToObject(o, "width", img.w);
        cJSON_AddNumberToObject(o, "height", img.h);
        cJSON_AddNumberToObject(o, "window", j->window);
        cJSON_AddNumberToObject(o, "ms", (t1.tv_sec - t0.tv_sec) * 1e3 +
                                             (t1.tv_nsec - t0.tv_nsec) / 1e6);
        cJSON *classes = cJSON_AddArrayToObject(o, "classes");
        for (int c = 0; c < k; c++) {
            char name[64];
            web_class_name(s->model, c, name, sizeof name);
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "name", name);
            cJSON_AddNumberToObject(e, "pixels", counts[c]);
            cJSON_AddNumberToObject(e, "fraction", counts[c] / (double)n);
            cJSON_AddItemToArray(classes, e);
        }
        web_add_cells(o, s->model, &cells);
        cJSON *warnings = cJSON_AddArrayToObject(o, "warnings");
        int flags = ls_field_check(s->model, &img, &cells, j->window);
        for (int b = LS_FIELD_LARGE; b <= LS_FIELD_WINDOW_MISMATCH; b <<= 1)
            if (flags & b) cJSON_AddItemToArray(warnings, cJSON_CreateString(ls_field_warning(b)));
        add_png(o, "image", img.data, img.w, img.h, &err, &ok);
        add_png(o, "mask", colored, img.w, img.h, &err, &ok);
        add_png(o, "overlay", overlay, img.w, img.h, &err, &ok);
    }
    reply_result(j, ok, o, err.msg);
    cJSON_Delete(o);
    free(colored);
    free(overlay);
    ls_cells_free(&cells);
    ls_mask_free(&mask);
    ls_image_free(&img);
}

static void run_attention(server *s, job *j)
{
    ls_image img = {0};
    if (!decode_upload(j, &img)) return;
    ls_error err = {{0}};
    if (j->x < 0 || j->y < 0 || j->x >= img.w || j->y >= img.h) {
        char msg[128];
        snprintf(msg, sizeof msg, "pixel (%d, %d) is outside the %dx%d image", j->x, j->y, img.w,
                 img.h);
        reply_error(j, MHD_HTTP_BAD_REQUEST, msg);
        ls_image_free(&img);
        return;
    }
    const ls_config *cfg = ls_model_config(s->model);
    ls_preproc pp;
    ls_model_preproc(s->model, &pp);
    float *x = malloc(sizeof(float) * 3 * pp.width * pp.height);
    ls_status st = x ? LS_OK : ls_fail(&err, LS_ERR_NOMEM, "out of memory");
    if (st == LS_OK) st = ls_preprocess(&img, pp.width, pp.height, pp.mean, pp.std, x, &err);
    /* An inference workspace: ls_attention_map recomputes one query's attention from the kept
     * queries and keys, so the chunked attention of inference is fine. */
    if (st == LS_OK && !s->ws)
        st = ls_workspace_create(s->model, 1, pp.height, pp.width, 0, &s->ws, &err);
    if (st == LS_OK) st = ls_model_forward(s->model, s->ws, x, 0, NULL, NULL, &err);
    cJSON *o = cJSON_CreateObject();
    if (st == LS_OK) {
        cJSON_AddNumberToObject(o, "width", img.w);
        cJSON_AddNumberToObject(o, "height", img.h);
        cJSON_AddNumberToObject(o, "window", j->window);
        cJSON_AddNumberToObject(o, "x", j->x);
        cJSON_AddNumberToObject(o, "y", j->y);
        cJSON *stages = cJSON_AddArrayToObject(o, "stages");
        for (int si = 0; si < 4; si++) {
            int gh, gw, hr, wr;
            ls_workspace_stage_grid(s->ws, si, &gh, &gw, &hr, &wr);
            int heads = cfg->heads[si], nr = hr * wr;
            /* The query token covering the pixel: the image maps onto the token grid. */
            int qx = (int)((long)j->x * gw / img.w), qy = (int)((long)j->y * gh / img.h);
            float *avg = calloc((size_t)nr, sizeof *avg);
            if (!avg) {
                st = ls_fail(&err, LS_ERR_NOMEM, "out of memory");
                break;
            }
            st = ls_attention_map(s->model, s->ws, si, cfg->depths[si] - 1, 0, qy * gw + qx, avg,
                                  &hr, &wr, &err);
            if (st != LS_OK) {
                free(avg);
                break;
            }
            float mx = 0;
            for (int r = 0; r < nr; r++) mx = avg[r] > mx ? avg[r] : mx;
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "stage", si + 1);
            cJSON_AddNumberToObject(e, "block", cfg->depths[si]);
            cJSON_AddNumberToObject(e, "heads", heads);
            cJSON_AddNumberToObject(e, "grid_width", gw);
            cJSON_AddNumberToObject(e, "grid_height", gh);
            cJSON_AddNumberToObject(e, "query_x", qx);
            cJSON_AddNumberToObject(e, "query_y", qy);
            cJSON_AddNumberToObject(e, "keys_width", wr);
            cJSON_AddNumberToObject(e, "keys_height", hr);
            cJSON_AddNumberToObject(e, "max", mx);
            cJSON_AddItemToObject(e, "weights", cJSON_CreateFloatArray(avg, nr));
            cJSON_AddItemToArray(stages, e);
            free(avg);
        }
    }
    reply_result(j, st == LS_OK, o, err.msg);
    cJSON_Delete(o);
    free(x);
    ls_image_free(&img);
}

static void *inference_thread(void *arg)
{
    server *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->head && !s->stopping) pthread_cond_wait(&s->wake, &s->lock);
        if (!s->head) break;
        job *j = s->head;
        s->head = j->next;
        if (!s->head) s->tail = NULL;
        pthread_mutex_unlock(&s->lock);
        if (j->kind == JOB_SEGMENT) run_segment(s, j);
        else run_attention(s, j);
        pthread_mutex_lock(&s->lock);
        j->done = 1;
        pthread_cond_broadcast(&s->finished);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Runs a job on the inference thread and waits for it. */
static void submit(server *s, job *j)
{
    pthread_mutex_lock(&s->lock);
    j->next = NULL;
    if (s->tail) s->tail->next = j;
    else s->head = j;
    s->tail = j;
    pthread_cond_signal(&s->wake);
    while (!j->done) pthread_cond_wait(&s->finished, &s->lock);
    pthread_mutex_unlock(&s->lock);
}

/* ------------------------------------------------------------------------------------------ */
/* HTTP                                                                                        */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    int too_big;
    enum job_kind kind;
} upload;

static enum MHD_Result send_bytes(struct MHD_Connection *c, unsigned status, const char *type,
                                  const void *data, size_t len, enum MHD_ResponseMemoryMode mode,
                                  int cacheable)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)data, mode);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Cache-Control", cacheable ? "max-age=60" : "no-store");
    /* The page needs only its own files and the data: URLs the API returns. */
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data: blob:; "
                            "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, char *json)
{
    if (!json) return send_bytes(c, 500, "application/json", "{\"error\":\"out of memory\"}",
                                 25, MHD_RESPMEM_PERSISTENT, 0);
    return send_bytes(c, status, "application/json", json, strlen(json), MHD_RESPMEM_MUST_FREE,
                      0);
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *msg)
{
    return send_json(c, status, json_error(msg));
}

static enum MHD_Result serve_file(server *s, struct MHD_Connection *c, const char *url)
{
    if (!strcmp(url, "/api/health")) {
        static const char ok[] = "{\"ok\":true}";
        return send_bytes(c, MHD_HTTP_OK, "application/json", ok, sizeof ok - 1,
                          MHD_RESPMEM_PERSISTENT, 0);
    }
    /* Exact names only (MHD has already percent-decoded the path): "/../x" or "/data/../y" can
     * match nothing, and the file system is never consulted. */
    const char *name = !strcmp(url, "/") ? "index.html" : url + 1;
    const ls_web_file *f = web_find_page(name);
    if (f) return send_bytes(c, MHD_HTTP_OK, f->type, f->data, f->len, MHD_RESPMEM_PERSISTENT, 0);
    const web_blob *b = web_bundle_find(&s->bundle, name);
    if (b) return send_bytes(c, MHD_HTTP_OK, b->type, b->data, b->len, MHD_RESPMEM_PERSISTENT, 1);
    return send_error(c, MHD_HTTP_NOT_FOUND, "no such page");
}

/* Percent-decoding of paths and query values, as MHD's own but leaving "%00" encoded: a NUL
 * would end the C string early, so "/index.html%00.png" would be served as "/index.html". */
static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

static size_t unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls, (void)c;
    char *r = s, *w = s;
    while (*r) {
        int hi = r[0] == '%' ? hexval(r[1]) : -1, lo = hi >= 0 ? hexval(r[2]) : -1;
        if (lo >= 0 && (hi | lo)) {
            *w++ = (char)(hi << 4 | lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

static int query_int(struct MHD_Connection *c, const char *key, int *out)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
    char *end = NULL;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || n < 0 || n > 1000000) return 0;
    *out = (int)n;
    return 1;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    server *s = cls;
    upload *u = *con_cls;
    if (!u) { /* first call: headers only */
        int get = !strcmp(method, MHD_HTTP_METHOD_GET) || !strcmp(method, MHD_HTTP_METHOD_HEAD);
        int post = !strcmp(method, MHD_HTTP_METHOD_POST);
        int api_seg = !strcmp(url, "/api/segment"), api_att = !strcmp(url, "/api/attention");
        if (get && (api_seg || api_att))
            return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "POST the image bytes here");
        if (get) return serve_file(s, c, url);
        if (!post) return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET, or POST to /api");
        if (!api_seg && !api_att) return send_error(c, MHD_HTTP_NOT_FOUND, "no such endpoint");
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > MAX_BODY) {
            /* Answered before the body is read: the client need not send 20 MB for a no. */
            char msg[160];
            snprintf(msg, sizeof msg, "upload is %s bytes; the limit is %zu bytes (20 MiB)", cl,
                     MAX_BODY);
            return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, msg);
        }
        if (!(u = calloc(1, sizeof *u))) return MHD_NO;
        u->kind = api_seg ? JOB_SEGMENT : JOB_ATTENTION;
        *con_cls = u;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        /* A body without Content-Length (chunked) that runs over the cap is read and dropped:
         * MHD can only answer once the request is complete. */
        if (u->too_big || u->len + n > MAX_BODY) {
            u->too_big = 1;
            free(u->buf);
            u->buf = NULL;
            return MHD_YES;
        }
        if (u->len + n > u->cap) {
            size_t cap = u->cap ? u->cap : 65536;
            while (cap < u->len + n) cap *= 2;
            uint8_t *nb = realloc(u->buf, cap);
            if (!nb) return MHD_NO;
            u->buf = nb;
            u->cap = cap;
        }
        memcpy(u->buf + u->len, upload_data, n);
        u->len += n;
        return MHD_YES;
    }
    if (u->too_big) return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "upload over 20 MiB");
    if (!u->len) return send_error(c, MHD_HTTP_BAD_REQUEST, "empty body: POST the image bytes");
    job j = {.kind = u->kind, .body = u->buf, .len = u->len};
    if (u->kind == JOB_ATTENTION && (!query_int(c, "x", &j.x) || !query_int(c, "y", &j.y)))
        return send_error(c, MHD_HTTP_BAD_REQUEST, "attention needs ?x=X&y=Y pixel coordinates");
    if (u->kind == JOB_SEGMENT &&
        MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "window") &&
        (!query_int(c, "window", &j.window) || (j.window && (j.window < 16 || j.window > 4096))))
        return send_error(c, MHD_HTTP_BAD_REQUEST, "window must be 0 (the whole image) or a "
                          "side of 16 to 4096 pixels");
    submit(s, &j);
    return send_json(c, j.status, j.json);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)c, (void)toe;
    upload *u = *con_cls;
    if (u) free(u->buf);
    free(u);
    *con_cls = NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Command                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* What to do when the listening socket cannot be opened, by errno. */
static const char *listen_advice(int e)
{
    if (e == EADDRINUSE)
        return "another program (perhaps another leukoseg serve) listens there: stop it, or "
               "choose another port with --port P (--port 0 picks a free one)";
    if (e == EACCES)
        return "ports below 1024 need privileges: choose --port 1024 or above";
    if (e == EADDRNOTAVAIL)
        return "the --bind address is not one of this machine's: give one of its addresses "
               "(127.0.0.1 for this machine only)";
    return "choose another port with --port P (--port 0 picks a free one)";
}

/* Opens the listening socket before the slow start-up work (the results pages take seconds), so
 * a port in use is reported at once and under our own message; libmicrohttpd would report it
 * only later, and as "port 0" for an address given with MHD_OPTION_SOCK_ADDR. Connections that
 * arrive meanwhile wait in the backlog. Returns the socket, or -1 after saying why. */
static int open_listener(const struct sockaddr_in *addr, const char *host)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    /* As libmicrohttpd does: a restart may reuse a port whose old connections are in TIME_WAIT
     * (on Linux this never lets two servers listen on one port). */
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd >= 0 && bind(fd, (const struct sockaddr *)addr, sizeof *addr) == 0 &&
        listen(fd, SOMAXCONN) == 0)
        return fd;
    int e = errno;
    if (fd >= 0) close(fd);
    fprintf(stderr, "leukoseg serve: error: cannot listen on %s:%u: %s; %s\n", host,
            (unsigned)ntohs(addr->sin_port), strerror(e), listen_advice(e));
    return -1;
}

/* The port the socket listens on (the one the system picked for --port 0). */
static unsigned listening_port(int fd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    return getsockname(fd, (struct sockaddr *)&a, &len) == 0 ? ntohs(a.sin_port) : 0;
}

/* libmicrohttpd's own messages (a failed accept, a broken connection) carry our prefix, so they
 * read as the server's and not as stray lines. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    fputs("leukoseg serve: http: ", stderr);
    vfprintf(stderr, fmt, ap);
}

int cmd_serve(int argc, char **argv)
{
    const char *model_path = default_model_path(), *data = default_data_path();
    const char *bind = "127.0.0.1";
    int port = 8080, data_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(serve_help, stdout);
            return 0;
        } else if (opt_value(argc, argv, &i, "--model", &v)) {
            if (!v) return cli_usage_error("serve", "--model needs a file");
            model_path = v;
        } else if (opt_value(argc, argv, &i, "--data", &v)) {
            if (!v) return cli_usage_error("serve", "--data needs a folder");
            data = v;
            data_given = 1;
        } else if (opt_value(argc, argv, &i, "--port", &v)) {
            if (!parse_int("serve", "--port", v, 0, 65535, &port)) return 2;
        } else if (opt_value(argc, argv, &i, "--bind", &v)) {
            if (!v) return cli_usage_error("serve", "--bind needs an IPv4 address");
            bind = v;
        } else {
            return cli_usage_error("serve", "unknown option '%s'", argv[i]);
        }
    }
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, bind, &addr.sin_addr) != 1)
        return cli_usage_error("serve", "--bind needs an IPv4 address, got '%s'", bind);

    static server s; /* static: outlives every MHD thread */
    ls_error err = {{0}};
    if (data_given && cli_check_folder("--data", data, &err) != LS_OK)
        return cli_error("serve", &err);
    int listen_fd = open_listener(&addr, bind);
    if (listen_fd < 0) return 1;
    if (cli_load_model(model_path, &s.model, &err) != LS_OK) {
        close(listen_fd);
        return cli_error("serve", &err);
    }
    fprintf(stderr, "leukoseg serve: computing the results pages on the test split of %s\n", data);
    if (web_build_bundle(s.model, model_path, data, 1, &s.bundle, &err) != LS_OK) {
        close(listen_fd);
        ls_model_free(s.model);
        return cli_error("serve", &err);
    }
    const web_blob *r = web_bundle_find(&s.bundle, "data/results.js");
    if (r && strstr((const char *)r->data, "\"error\":\""))
        fprintf(stderr, "leukoseg serve: note: no test metrics; the page says why\n");

    /* Signals are taken by sigwait in this thread only: block them before any thread starts so
     * that every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client that hangs up must not end the server */

    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.wake, NULL);
    pthread_cond_init(&s.finished, NULL);
    pthread_t worker;
    if (pthread_create(&worker, NULL, inference_thread, &s) != 0) {
        fprintf(stderr, "leukoseg serve: error: cannot start the inference thread\n");
        close(listen_fd);
        return 1;
    }
    unsigned bound_port = listening_port(listen_fd);
    /* MHD takes the socket over (and closes it when stopped). The logger comes first: MHD uses
     * its own for anything said while the options before it are read. */
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG,
        0, NULL, NULL, on_request, &s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)listen_fd, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, &s, MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
        60u, MHD_OPTION_END);
    int rc = 0;
    if (!d) {
        fprintf(stderr, "leukoseg serve: error: cannot start the HTTP server on %s:%u (%s); "
                "check the messages above, or try another --port\n", bind, bound_port,
                strerror(errno));
        rc = 1;
    } else {
        printf("leukoseg serve: listening on http://%s:%u/\n", bind, bound_port);
        fflush(stdout);
        int sig = 0;
        sigwait(&sigs, &sig);
        fprintf(stderr, "leukoseg serve: stopping (signal %d)\n", sig);
        MHD_stop_daemon(d); /* waits for the connection threads, hence for their jobs */
    }
    pthread_mutex_lock(&s.lock);
    s.stopping = 1;
    pthread_cond_signal(&s.wake);
    pthread_mutex_unlock(&s.lock);
    pthread_join(worker, NULL);
    ls_workspace_free(s.ws);
    web_bundle_free(&s.bundle);
    ls_model_free(s.model);
    return rc;
}

#endif
