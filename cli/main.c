/* leukoseg command line: dispatch and helpers shared by the subcommands. */
#include "cli.h"
#include "fileio.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static const char *usage =
    "leukoseg: SegFormer for white-blood-cell segmentation, in C\n"
    "\n"
    "usage: leukoseg <command> [options]   (leukoseg <command> --help for each)\n"
    "\n"
    "  train     train a SegFormer on one or more dataset folders\n"
    "  eval      confusion matrix, per-class IoU/Dice/precision/recall, mIoU on a split\n"
    "  segment   masks, overlays and class areas for images\n"
    "  forward   raw eval-mode logits of a preprocessed NCHW .npy tensor\n"
    "  info      configuration, classes, parameter count and provenance of a model\n"
    "  serve     results pages, upload-and-segment and attention views over HTTP\n"
    "  report    the results pages as a static folder (no server needed)\n"
    "  bench     training and inference throughput, GFLOP/s and peak memory\n"
    "  count     cells, cell types and a differential count (--eval: type accuracy)\n"
    "  train-cells  fit the cell-type classifier of a model on labelled images\n";

/* OpenBLAS reads OPENBLAS_CORETYPE once, when it is loaded, so it must be in the environment
 * before the process starts: if it is unset, set it and exec ourselves again. Debian's OpenBLAS
 * 0.3.21 does not recognise Zen 4 and falls back to its SSE3 "Prescott" kernels (2-4x slower);
 * its SkylakeX kernels run on any AVX-512 CPU. OpenMP's waiting is left at libgomp's default
 * (spin, then sleep): passive waiting halved throughput, since a forward pass runs hundreds of
 * short parallel regions. */
static void exec_with_runtime_settings(char **argv)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (!getenv("OPENBLAS_CORETYPE") && __builtin_cpu_supports("avx512f") &&
        !getenv("LEUKOSEG_NO_REEXEC")) {
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
        setenv("LEUKOSEG_NO_REEXEC", "1", 1); /* never loop */
        execv("/proc/self/exe", argv);
        /* exec failed (no /proc): carry on with OpenBLAS's own choice */
    }
#else
    (void)argv;
#endif
}

static int run_command(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "train")) return cmd_train(argc - 1, argv + 1);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 1, argv + 1);
    if (!strcmp(cmd, "segment")) return cmd_segment(argc - 1, argv + 1);
    if (!strcmp(cmd, "forward")) return cmd_forward(argc - 1, argv + 1);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "serve")) return cmd_serve(argc - 1, argv + 1);
    if (!strcmp(cmd, "report")) return cmd_report(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "count")) return cmd_count(argc - 1, argv + 1);
    if (!strcmp(cmd, "train-cells")) return cmd_train_cells(argc - 1, argv + 1);
    fprintf(stderr, "leukoseg: unknown command '%s'\n\n%s", cmd, usage);
    return 2;
}

int cli_finish_stdout(int rc)
{
    /* Results (JSON, tables) go to stdout, often redirected to a file: on a full disk or a
     * closed descriptor they are lost or cut short, and exit status 0 would pass the truncated
     * file on as a success. stdout is buffered, so the error may only show at this flush. */
    errno = 0;
    int flushed = fflush(stdout) == 0;
    int e = errno;
    if (flushed && !ferror(stdout)) return rc;
    fprintf(stderr, "leukoseg: cannot write the output (stdout): %s; the output is incomplete: "
            "check where stdout goes (free disk space, an open file or pipe) and run again\n",
            e ? strerror(e) : "write error");
    return rc ? rc : 1;
}

int main(int argc, char **argv)
{
    exec_with_runtime_settings(argv);
    return cli_finish_stdout(run_command(argc, argv));
}

int cli_error(const char *cmd, const ls_error *err)
{
    progress_done();
    fprintf(stderr, "leukoseg %s: error: %s\n", cmd, err->msg);
    return 1;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "leukoseg %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see leukoseg %s --help)\n", cmd);
    va_end(ap);
    return 2;
}

int opt_value(int argc, char **argv, int *i, const char *name, const char **value)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return 0;
    if (argv[*i][n] == '=') {
        *value = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != '\0') return 0;
    if (*i + 1 >= argc) {
        *value = NULL;
        return 1;
    }
    *value = argv[++*i];
    return 1;
}

int parse_int(const char *cmd, const char *name, const char *s, int lo, int hi, int *out)
{
    char *end = NULL;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || end == s || *end || v < lo || v > hi) {
        cli_usage_error(cmd, "%s needs an integer in %d..%d, got '%s'", name, lo, hi,
                        s ? s : "(nothing)");
        return 0;
    }
    *out = (int)v;
    return 1;
}

int parse_threads(const char *cmd, const char *s)
{
    int threads = 1;
    if (!parse_int(cmd, "--threads", s, 1, 1024, &threads)) return 0;
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    return 1;
}

int parse_float(const char *cmd, const char *name, const char *s, double lo, double hi,
                double *out)
{
    char *end = NULL;
    errno = 0;
    double v = s ? strtod(s, &end) : 0.0;
    if (!s || errno || end == s || *end || !(v >= lo && v <= hi)) {
        cli_usage_error(cmd, "%s needs a number in %g..%g, got '%s'", name, lo, hi,
                        s ? s : "(nothing)");
        return 0;
    }
    *out = v;
    return 1;
}

/* The binary lives in <repo>/build/; the model in <repo>/models/, the data in <repo>/../shared. */
static const char *repo_relative(char *buf, size_t cap, const char *env, int levels_up,
                                 const char *rel)
{
    const char *over = getenv(env);
    if (over && *over) return over;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(buf, cap, "%s", rel);
        return buf;
    }
    exe[n] = '\0';
    /* <repo>/build/leukoseg -> <repo> (2 levels up) or the folder holding <repo> (3) */
    for (int up = 0; up < levels_up; up++) {
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
    }
    snprintf(buf, cap, "%s/%s", exe, rel);
    return buf;
}

const char *default_model_path(void)
{
    static char buf[PATH_MAX + 64];
    return repo_relative(buf, sizeof buf, "LEUKOSEG_MODEL", 2, "models/leukoseg-b0.safetensors");
}

const char *default_data_path(void)
{
    static char buf[PATH_MAX + 64];
    return repo_relative(buf, sizeof buf, "LEUKOSEG_DATA", 3, "shared/data/segmentation_WBC");
}

ls_status cli_load_model(const char *path, ls_model **model, ls_error *err)
{
    if (strcmp(path, default_model_path()) == 0 && access(path, R_OK) != 0)
        return ls_fail(err, LS_ERR_IO, "the shipped model %s is missing: restore it with "
                       "`git checkout models/`, or give another with --model FILE (or "
                       "LEUKOSEG_MODEL=FILE), e.g. runs/main/leukoseg-b0.safetensors from "
                       "`make main`", path);
    return ls_model_load(path, model, err);
}

const char *split_name(ls_split split)
{
    static const char *names[] = {"all", "train", "val", "test"};
    return names[split];
}

ls_status cli_check_folder(const char *option, const char *path, ls_error *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return ls_fail(err, LS_ERR_IO, "%s %s: %s; give an existing dataset folder, or leave "
                       "%s out for the default", option, path, strerror(errno), option);
    if (!S_ISDIR(st.st_mode))
        return ls_fail(err, LS_ERR_ARG, "%s %s is not a folder; give the dataset folder", option,
                       path);
    return LS_OK;
}

/* Whether the len bytes at line already occur as a whole line before it in notes. */
static int said_before(const char *notes, const char *line, int len)
{
    for (const char *p = notes; p < line;) {
        const char *end = strchr(p, '\n');
        int n = end ? (int)(end - p) : (int)strlen(p);
        if (n == len && !strncmp(p, line, (size_t)len)) return 1;
        p += n + (end ? 1 : 0);
    }
    return 0;
}

void cli_print_notes(const char *cmd, const ls_dataset *ds)
{
    /* A folder added for two splits leaves its notes twice: print each once. */
    for (const char *line = ds->notes; *line;) {
        const char *end = strchr(line, '\n');
        int len = end ? (int)(end - line) : (int)strlen(line);
        if (!said_before(ds->notes, line, len))
            fprintf(stderr, "leukoseg %s: note: %.*s\n", cmd, len, line);
        line += len + (end ? 1 : 0);
    }
}

ls_status make_dirs(const char *path, ls_error *err)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return ls_fail(err, LS_ERR_ARG, "path too long: %s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return ls_fail(err, LS_ERR_IO, "cannot create folder %s: %s", buf,
                               strerror(errno));
            *p = saved;
            if (saved == '\0') break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return ls_fail(err, LS_ERR_IO, "%s exists and is not a folder", path);
    return LS_OK;
}

ls_status write_text_atomic(const char *path, const char *text, ls_error *err)
{
    char *tmp = NULL;
    FILE *f = NULL;
    ls_status st = ls_atomic_open(path, &tmp, &f, err);
    if (st != LS_OK) return st;
    size_t n = strlen(text);
    return ls_atomic_close(path, tmp, f, fwrite(text, 1, n, f) == n, err);
}

static int progress_shown;

void progress_line(const char *fmt, ...)
{
    if (!isatty(2)) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("\r\033[K", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
    progress_shown = 1;
}

void progress_done(void)
{
    if (progress_shown) fputs("\r\033[K", stderr);
    progress_shown = 0;
}

ls_status evaluate_dataset(ls_model *model, const ls_dataset *ds, ls_confusion *cm,
                           const char *label, ls_error *err)
{
    for (int i = 0; i < ds->n; i++) {
        ls_image img = {0};
        ls_mask gt = {0}, pred = {0};
        long snapped = 0;
        ls_status st = ls_dataset_load(ds, i, &img, &gt, &snapped, err);
        if (st == LS_OK && snapped > 0) {
            progress_done();
            fprintf(stderr, "note: %s: %ld mask pixels were no declared level and were snapped to "
                    "the nearest one\n", ds->samples[i].mask_path, snapped);
        }
        if (st == LS_OK && !gt.data)
            st = ls_fail(err, LS_ERR_ARG, "%s has no mask; eval needs masks",
                         ds->samples[i].image_path);
        if (st == LS_OK) st = ls_segment_image(model, &img, &pred, NULL, err);
        if (st == LS_OK) st = ls_confusion_add(cm, gt.data, pred.data, (size_t)gt.w * gt.h, err);
        ls_image_free(&img);
        ls_mask_free(&gt);
        ls_mask_free(&pred);
        if (st != LS_OK) return st;
        progress_line("%s %d/%d", label, i + 1, ds->n);
    }
    progress_done();
    return LS_OK;
}

static cJSON *number_or_null(double v)
{
    return v == v ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

char *metrics_json(const ls_metrics *m, const ls_dataset *ds, int images)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "images", images);
    cJSON_AddItemToObject(o, "miou", number_or_null(m->miou));
    cJSON_AddItemToObject(o, "pixel_accuracy", number_or_null(m->pixel_accuracy));
    cJSON_AddItemToObject(o, "mean_accuracy", number_or_null(m->mean_accuracy));
    cJSON_AddItemToObject(o, "whole_cell_dice", number_or_null(m->whole_cell_dice));
    cJSON_AddNumberToObject(o, "pixels", (double)m->pixels);
    cJSON *classes = cJSON_AddArrayToObject(o, "classes");
    for (int c = 0; c < m->k; c++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", ds->class_names[c]);
        cJSON_AddItemToObject(e, "iou", number_or_null(m->iou[c]));
        cJSON_AddItemToObject(e, "dice", number_or_null(m->dice[c]));
        cJSON_AddItemToObject(e, "precision", number_or_null(m->precision[c]));
        cJSON_AddItemToObject(e, "recall", number_or_null(m->recall[c]));
        cJSON_AddItemToArray(classes, e);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}
