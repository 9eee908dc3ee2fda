/* Atomic file writing (src/fileio.c). */
#ifndef LS_FILEIO_H
#define LS_FILEIO_H

#include "leukoseg.h"

#include <stdio.h>

/* Opens a new temp file "<path>.tmp.<pid>.<n>" beside path for writing; *tmp is malloc'd. */
ls_status ls_atomic_open(const char *path, char **tmp, FILE **f, ls_error *err);
/* Closes f and, when ok, syncs and renames it over path; otherwise (or on any failure) removes
 * the temp file. Frees tmp. */
ls_status ls_atomic_close(const char *path, char *tmp, FILE *f, int ok, ls_error *err);

#endif
