/* Shared helpers of the leukoseg command line. */
#ifndef LS_CLI_H
#define LS_CLI_H

#include "leukoseg.h"

#include <stdio.h>

/* Each subcommand: argc/argv start at the subcommand name. Returns the process exit status. */
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_segment(int argc, char **argv);
int cmd_forward(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_serve(int argc, char **argv);  /* cli/serve.c */
int cmd_report(int argc, char **argv); /* cli/report.c */
int cmd_bench(int argc, char **argv);
int cmd_count(int argc, char **argv);       /* cli/count.c */
int cmd_train_cells(int argc, char **argv); /* cli/count.c */

/* Flushes stdout and returns the exit status for a command that returned rc: rc, or 1 when
 * stdout could not be written (a full disk, a closed descriptor), after saying so on stderr. */
int cli_finish_stdout(int rc);

/* Prints "leukoseg <cmd>: error: <msg>" on stderr and returns exit status 1. */
int cli_error(const char *cmd, const ls_error *err);
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Option parsing: matches "--name value" or "--name=value"; advances *i. */
int opt_value(int argc, char **argv, int *i, const char *name, const char **value);
int parse_int(const char *cmd, const char *name, const char *s, int lo, int hi, int *out);
/* --threads N: OpenMP threads for the rest of the command (1..1024). */
int parse_threads(const char *cmd, const char *s);
int parse_float(const char *cmd, const char *name, const char *s, double lo, double hi,
                double *out);

/* Paths relative to the installed binary: the shipped model and the default dataset. */
const char *default_model_path(void);
const char *default_data_path(void);

/* ls_model_load, with advice when the default (shipped) model is missing. */
ls_status cli_load_model(const char *path, ls_model **model, ls_error *err);

/* Dataset split names for messages. */
const char *split_name(ls_split split);

/* A folder given explicitly with option (--data) must exist: a typo would otherwise pass as
 * "no data" and the command would succeed without its results. The error names the path. */
ls_status cli_check_folder(const char *option, const char *path, ls_error *err);

/* Prints a dataset's notes (ls_dataset.notes: label CSVs missing or incomplete) on stderr, each
 * line as "leukoseg <cmd>: note: ...". */
void cli_print_notes(const char *cmd, const ls_dataset *ds);

/* Creates a directory and its parents; error names the path. */
ls_status make_dirs(const char *path, ls_error *err);

/* Writes text to path atomically (temp file + rename). */
ls_status write_text_atomic(const char *path, const char *text, ls_error *err);

/* A progress line on stderr, only when stderr is a terminal. */
void progress_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void progress_done(void);

/* Evaluates a model on samples [0, n) of ds into a confusion matrix (original resolution). */
ls_status evaluate_dataset(ls_model *model, const ls_dataset *ds, ls_confusion *cm,
                           const char *label, ls_error *err);

/* Metrics as a cJSON-printed string (malloc'd). */
char *metrics_json(const ls_metrics *m, const ls_dataset *ds, int images);

#endif
