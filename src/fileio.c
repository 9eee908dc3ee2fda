/* Atomic file writing shared by every writer of the library: a temp file beside the target,
 * flushed to disk, then renamed over it, so readers never see a partial file and a failed write
 * leaves the old one untouched. */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Creates "<path>.tmp.N" next to the target with O_EXCL (so two writers never share a temp file)
 * and mode 0666 filtered by the umask, like a plain fopen would give the final file. */
ls_status ls_atomic_open(const char *path, char **tmp, FILE **f, ls_error *err)
{
    static _Atomic unsigned counter;
    size_t n = strlen(path) + 48;
    *tmp = malloc(n);
    if (!*tmp) return ls_fail(err, LS_ERR_NOMEM, "%s: out of memory", path);
    for (int tries = 0; tries < 100; tries++) {
        snprintf(*tmp, n, "%s.tmp.%ld.%u", path, (long)getpid(), counter++);
        int fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
        if (fd < 0 && errno == EEXIST) continue;
        if (fd >= 0 && (*f = fdopen(fd, "wb")) != NULL) return LS_OK;
        ls_status st = ls_fail(err, LS_ERR_IO, "%s: cannot create a temporary file next to it: "
                               "%s (check the folder exists and is writable)", path,
                               strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(*tmp);
        }
        free(*tmp);
        *tmp = NULL;
        return st;
    }
    free(*tmp);
    *tmp = NULL;
    return ls_fail(err, LS_ERR_IO, "%s: cannot find a free temporary file name", path);
}

/* Flushes to disk and renames over the target; on any failure (ok == 0 included) the temp file
 * is removed so a failed save leaves the old file untouched and no debris. */
ls_status ls_atomic_close(const char *path, char *tmp, FILE *f, int ok, ls_error *err)
{
    int saved_errno = 0;
    if (ok && (fflush(f) != 0 || fsync(fileno(f)) != 0)) {
        ok = 0;
        saved_errno = errno;
    }
    if (fclose(f) != 0 && ok) {
        ok = 0;
        saved_errno = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = 0;
        saved_errno = errno;
    }
    ls_status st = LS_OK;
    if (!ok) {
        unlink(tmp);
        st = ls_fail(err, LS_ERR_IO, "%s: write failed: %s (check free disk space)", path,
                     strerror(saved_errno ? saved_errno : EIO));
    }
    free(tmp);
    return st;
}
