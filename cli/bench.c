/* leukoseg bench: training-step and inference throughput on random data, achieved GFLOP/s from
 * the model's own shapes, and peak resident memory. */
#include "cli.h"
#include "model.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static const char *bench_help =
    "usage: leukoseg bench [--variant V] [--size S] [--batch B] [--threads T] [--steps N]\n"
    "                      [--infer-only] [--json]\n"
    "\n"
    "Times training steps (forward, loss, backward, AdamW) and eval-mode inference on random\n"
    "inputs after a warm-up. Prints img/s, achieved GFLOP/s (2 x multiply-adds of the forward;\n"
    "a training step counts 3 forwards) and peak resident memory.\n"
    "--infer-only skips training (for sizes whose training activations do not fit).\n"
    "Defaults: b0, 128, batch 8, all cores, 10 timed steps.\n";

/* Multiply-adds of one eval forward for a b x h x w input, from the same shapes the model uses:
 * convolutions and linears, the two attention products, the depthwise conv and the head. */
static double forward_macs(const ls_config *c, int h, int w)
{
    double macs = 0.0;
    int cin = c->num_channels, hi = h, wi = w;
    double n1 = 0.0;
    for (int i = 0; i < 4; i++) {
        int k = c->patch[i], ch = c->hidden[i], f = ch * c->mlp_ratio;
        hi = (hi + 2 * (k / 2) - k) / c->stride[i] + 1;
        wi = (wi + 2 * (k / 2) - k) / c->stride[i] + 1;
        double n = (double)hi * wi;
        double nr = c->sr[i] > 1 ? (double)(hi / c->sr[i]) * (wi / c->sr[i]) : n;
        if (i == 0) n1 = n;
        macs += n * cin * k * k * ch;                          /* patch embedding */
        double block = n * ch * ch * 2                         /* query, output dense */
                       + nr * ch * ch * 2                      /* key, value */
                       + (c->sr[i] > 1 ? nr * ch * ch * c->sr[i] * c->sr[i] : 0.0)
                       + 2.0 * n * nr * ch                     /* QK^T and PV */
                       + 2.0 * n * ch * f + n * f * 9.0;       /* Mix-FFN */
        macs += block * c->depths[i];
        macs += n * ch * c->decoder_hidden;                    /* linear_c */
        cin = ch;
    }
    int d = c->decoder_hidden;
    macs += n1 * 4.0 * d * d + n1 * d * c->num_labels;         /* fuse, classifier */
    return macs;
}

static double seconds_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct {
    const char *variant;
    int size, batch, threads, steps, json, infer_only;
} bench_options;

static int parse_bench(int argc, char **argv, bench_options *o)
{
    *o = (bench_options){"b0", 128, 8, 0, 10, 0, 0};
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(bench_help, stdout);
            return -1;
        } else if (!strcmp(argv[i], "--json")) {
            o->json = 1;
        } else if (!strcmp(argv[i], "--infer-only")) {
            o->infer_only = 1;
        } else if (opt_value(argc, argv, &i, "--variant", &v)) {
            if (!v) return cli_usage_error("bench", "--variant needs b0..b5");
            o->variant = v;
        } else if (opt_value(argc, argv, &i, "--size", &v)) {
            if (!parse_int("bench", "--size", v, 32, 4096, &o->size)) return 2;
        } else if (opt_value(argc, argv, &i, "--batch", &v)) {
            if (!parse_int("bench", "--batch", v, 1, 256, &o->batch)) return 2;
        } else if (opt_value(argc, argv, &i, "--threads", &v)) {
            if (!parse_int("bench", "--threads", v, 1, 1024, &o->threads)) return 2;
        } else if (opt_value(argc, argv, &i, "--steps", &v)) {
            if (!parse_int("bench", "--steps", v, 1, 100000, &o->steps)) return 2;
        } else {
            return cli_usage_error("bench", "unknown option '%s'", argv[i]);
        }
    }
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    bench_options o;
    int rc = parse_bench(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
#ifdef _OPENMP
    if (o.threads > 0) omp_set_num_threads(o.threads);
    int threads = omp_get_max_threads();
#else
    int threads = 1;
#endif
    ls_error err = {{0}};
    ls_config cfg;
    ls_model *m = NULL;
    ls_workspace *train_ws = NULL, *eval_ws = NULL;
    ls_adamw opt = {0};
    size_t plane = (size_t)o.size * o.size;
    float *x = malloc(sizeof(float) * 3 * plane * o.batch);
    uint8_t *labels = malloc(plane * o.batch);
    ls_status st = (!x || !labels) ? ls_fail(&err, LS_ERR_NOMEM, "out of memory") : LS_OK;
    if (st == LS_OK) st = ls_config_for_variant(o.variant, 3, &cfg, &err);
    if (st == LS_OK) st = ls_model_create(&cfg, 1, &m, &err);
    ls_rng rng;
    ls_rng_seed(&rng, 7);
    for (size_t k = 0; st == LS_OK && k < 3 * plane * o.batch; k++) x[k] = ls_rng_normal(&rng);
    for (size_t k = 0; st == LS_OK && k < plane * o.batch; k++)
        labels[k] = (uint8_t)ls_rng_int(&rng, 3);
    if (st == LS_OK && !o.infer_only)
        st = ls_workspace_create(m, o.batch, o.size, o.size, 1, &train_ws, &err);
    ls_adamw_config ac = ls_adamw_default();
    if (st == LS_OK && !o.infer_only) st = ls_adamw_init(&opt, m, &ac, &err);
    double train_s = 0.0, infer_s = 0.0;
    if (st == LS_OK && !o.infer_only) {
        float loss;
        for (int s = -2; st == LS_OK && s < o.steps; s++) { /* two warm-up steps */
            double t0 = seconds_now();
            ls_model_zero_grad(m);
            st = ls_model_forward(m, train_ws, x, 1, &rng, NULL, &err);
            if (st == LS_OK) st = ls_model_loss(m, train_ws, labels, o.size, o.size, &loss, &err);
            if (st == LS_OK) st = ls_model_backward(m, train_ws, &err);
            if (st == LS_OK) ls_adamw_step(&opt, m);
            if (s >= 0) train_s += seconds_now() - t0;
            progress_line("training step %d/%d", s + 3, o.steps + 2);
        }
        ls_workspace_free(train_ws);
        train_ws = NULL;
    }
    if (st == LS_OK) st = ls_workspace_create(m, o.batch, o.size, o.size, 0, &eval_ws, &err);
    for (int s = -2; st == LS_OK && s < o.steps; s++) {
        double t0 = seconds_now();
        st = ls_model_forward(m, eval_ws, x, 0, NULL, NULL, &err);
        if (s >= 0) infer_s += seconds_now() - t0;
        progress_line("inference step %d/%d", s + 3, o.steps + 2);
    }
    progress_done();
    if (st == LS_OK) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        double imgs = (double)o.batch * o.steps;
        double gflop = 2.0 * forward_macs(&cfg, o.size, o.size) * 1e-9;
        double train_img_s = o.infer_only ? 0.0 : imgs / train_s, infer_img_s = imgs / infer_s;
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "variant", o.variant);
        cJSON_AddNumberToObject(r, "size", o.size);
        cJSON_AddNumberToObject(r, "batch", o.batch);
        cJSON_AddNumberToObject(r, "threads", threads);
        cJSON_AddNumberToObject(r, "gflop_per_image_forward", gflop);
        if (!o.infer_only) {
            cJSON_AddNumberToObject(r, "train_img_s", train_img_s);
            cJSON_AddNumberToObject(r, "train_gflop_s", train_img_s * 3.0 * gflop);
        }
        cJSON_AddNumberToObject(r, "infer_img_s", infer_img_s);
        cJSON_AddNumberToObject(r, "infer_gflop_s", infer_img_s * gflop);
        cJSON_AddNumberToObject(r, "peak_rss_mib", ru.ru_maxrss / 1024.0);
        char *s = o.json ? cJSON_PrintUnformatted(r) : cJSON_Print(r);
        printf("%s\n", s);
        free(s);
        cJSON_Delete(r);
    }
    rc = st == LS_OK ? 0 : cli_error("bench", &err);
    ls_adamw_free(&opt);
    ls_workspace_free(train_ws);
    ls_workspace_free(eval_ws);
    ls_model_free(m);
    free(x);
    free(labels);
    return rc;
}
