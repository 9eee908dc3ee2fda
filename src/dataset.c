/* Datasets: finding image/mask pairs in the known folder layouts, choosing a split, and loading a
 * sample with its class mask.
 *
 * Layouts (detected in this order):
 *  - segmentation_WBC root: "Dataset N" folders of NNN.bmp + NNN.png, cell types from
 *    "Class Labels of Dataset N.csv" beside them; each "Dataset N" folder is its own source,
 *    because the two sets come from different microscopes and stains;
 *  - images/ + masks/ with matching stems (image .bmp/.png/.jpg/.jpeg, mask .png);
 *  - Roboflow png-mask-semantic export: train/ valid/ test/ with X.jpg + X_mask.png and a
 *    _classes.csv ("Pixel Value, Class") in each;
 *  - a plain folder of NNN.bmp + NNN.png (one "Dataset N" folder; its CSV is looked up in the
 *    parent folder).
 * A dataset (several folders) keeps one level map, so every folder added must use the same classes
 * and mask levels. Levels come from a folder's classes.txt (not Roboflow's, which has its own
 * _classes.csv); without one, segmentation_WBC's are assumed and checked against the masks.
 */
#include "leukoseg.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *split_name(ls_split s)
{
    static const char *const names[] = {"all", "train", "val", "test"};
    return names[s];
}

ls_status ls_split_parse(const char *name, ls_split *split, ls_error *err)
{
    static const struct {
        const char *name;
        ls_split split;
    } choices[] = {{"train", LS_SPLIT_TRAIN}, {"val", LS_SPLIT_VAL}, {"valid", LS_SPLIT_VAL},
                   {"test", LS_SPLIT_TEST},   {"all", LS_SPLIT_ALL}};
    for (size_t i = 0; name && i < sizeof choices / sizeof choices[0]; i++) {
        if (strcmp(name, choices[i].name) == 0) {
            *split = choices[i].split;
            return LS_OK;
        }
    }
    return ls_fail(err, LS_ERR_ARG, "unknown split '%s'; choose train, val (or valid), test or all",
                   name ? name : "(none)");
}

/* ------------------------------------------------------------------------------------------ */
/* Files and folders                                                                           */
/* ------------------------------------------------------------------------------------------ */

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* "a/b" (no doubled slash); NULL when out of memory. */
static char *join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (!p) return NULL;
    memcpy(p, a, la);
    size_t n = la;
    if (n == 0 || p[n - 1] != '/') p[n++] = '/';
    memcpy(p + n, b, lb + 1);
    return p;
}

typedef struct {
    char **v;
    int n;
} name_list;

static void names_free(name_list *l)
{
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static ls_status names_push(name_list *l, const char *s, size_t len, ls_error *err)
{
    char **v = realloc(l->v, sizeof(char *) * (size_t)(l->n + 1));
    if (!v) return ls_fail(err, LS_ERR_NOMEM, "out of memory listing files");
    l->v = v;
    if (!(v[l->n] = strndup(s, len))) return ls_fail(err, LS_ERR_NOMEM, "out of memory");
    l->n++;
    return LS_OK;
}

/* Sorted entry names, hidden ones (".", "..", macOS "._x" debris) left out. */
static ls_status list_dir(const char *dir, name_list *out, ls_error *err)
{
    out->v = NULL;
    out->n = 0;
    DIR *d = opendir(dir);
    if (!d) return ls_fail(err, LS_ERR_IO, "cannot open folder %s: %s", dir, strerror(errno));
    ls_status st = LS_OK;
    struct dirent *e;
    while (st == LS_OK && (e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') st = names_push(out, e->d_name, strlen(e->d_name), err);
    }
    closedir(d);
    if (st != LS_OK) names_free(out);
    else if (out->n) qsort(out->v, (size_t)out->n, sizeof(char *), cmp_str);
    return st;
}

static const char *ext_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && dot != name ? dot + 1 : "";
}

static size_t stem_len(const char *name)
{
    const char *e = ext_of(name);
    return *e ? (size_t)(e - 1 - name) : strlen(name);
}

static int is_image_name(const char *name)
{
    const char *e = ext_of(name);
    return !strcasecmp(e, "bmp") || !strcasecmp(e, "png") || !strcasecmp(e, "jpg")
           || !strcasecmp(e, "jpeg");
}

/* Index of the entry "<stem>.<ext>" (extension case ignored), or -1. */
static int find_stem(const name_list *l, const char *stem, size_t slen, const char *ext)
{
    for (int i = 0; i < l->n; i++) {
        if (stem_len(l->v[i]) == slen && strncmp(l->v[i], stem, slen) == 0
            && !strcasecmp(ext_of(l->v[i]), ext))
            return i;
    }
    return -1;
}

/* Numeric id of a stem of 1..9 digits, else -1. */
static int parse_id(const char *stem)
{
    size_t n = strlen(stem);
    if (n == 0 || n > 9) return -1;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)stem[i])) return -1;
    }
    return atoi(stem);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

/* Reads a text file's trimmed lines (blank lines kept as "", so line numbers stay right). */
static ls_status read_lines(const char *path, name_list *out, ls_error *err)
{
    out->v = NULL;
    out->n = 0;
    FILE *f = fopen(path, "r");
    if (!f) return ls_fail(err, LS_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ls_status st = LS_OK;
    while (st == LS_OK && getline(&line, &cap, f) >= 0) {
        char *t = trim(line);
        st = names_push(out, t, strlen(t), err);
    }
    if (st == LS_OK && ferror(f)) st = ls_fail(err, LS_ERR_IO, "cannot read %s", path);
    free(line);
    fclose(f);
    if (st != LS_OK) names_free(out);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* Samples and selection                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* Room for the notes ls_dataset_add leaves for the user (ls_dataset.notes). */
#define NOTES_CAP sizeof(((ls_dataset *)NULL)->notes)

/* What the layouts found: the samples, and notes for the user. */
typedef struct {
    ls_sample *v;
    int n;
    char notes[NOTES_CAP];
} sample_list;

/* Appends one line to notes; a line cut short ends in "...", so the cut is visible. */
static void __attribute__((format(printf, 2, 3))) add_note(char *notes, const char *fmt, ...)
{
    size_t used = strlen(notes);
    if (used + 5 > NOTES_CAP) return;
    size_t room = NOTES_CAP - used - 1; /* the text and its '\n'; the NUL follows */
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(notes + used, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        notes[used] = 0;
        return;
    }
    size_t end = used + (size_t)n;
    if ((size_t)n >= room) {
        end = NOTES_CAP - 2;
        memcpy(notes + end - 3, "...", 3);
    }
    notes[end] = '\n';
    notes[end + 1] = 0;
}

static void sample_free(ls_sample *s)
{
    free(s->image_path);
    free(s->mask_path);
    free(s->stem);
}

static void samples_free(sample_list *l)
{
    for (int i = 0; i < l->n; i++) sample_free(&l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* Takes ownership of image and mask (either may be NULL after a failed allocation). */
static ls_status push_sample(sample_list *l, char *image, char *mask, int has_mask,
                             const char *stem, size_t slen, int cell_type, int source,
                             ls_error *err)
{
    ls_sample s = {image, mask, strndup(stem, slen), -1, cell_type, source};
    ls_sample *v = NULL;
    if (image && (mask || !has_mask) && s.stem) v = realloc(l->v, sizeof *v * (size_t)(l->n + 1));
    if (!v) {
        sample_free(&s);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory listing samples");
    }
    s.id = parse_id(s.stem);
    l->v = v;
    l->v[l->n++] = s;
    return LS_OK;
}

typedef struct {
    ls_split split;
    name_list listed;      /* lines of the split file */
    unsigned char *hit;    /* hit[i]: line i named a sample; written while layouts select */
    const char *root_name; /* the dataset folder's own name, which lines may use as a prefix */
    int use_file;
} selection;

/* Blank lines and "#" comments in a split file name nothing. */
static int is_list_comment(const char *line) { return !*line || *line == '#'; }

/* The stem a split-file line names in folder (a subfolder of the dataset, or NULL): the line
 * itself, or what follows "<folder>/" or "<dataset folder's name>/"; NULL when the line's prefix
 * names another folder. */
static const char *line_stem(const selection *sel, const char *line, const char *folder)
{
    const char *slash = strrchr(line, '/');
    if (!slash) return line;
    size_t pl = (size_t)(slash - line);
    int ours = (folder && strlen(folder) == pl && strncmp(line, folder, pl) == 0)
               || (strlen(sel->root_name) == pl && strncmp(line, sel->root_name, pl) == 0);
    return ours ? slash + 1 : NULL;
}

/* Whether the split file names this stem of folder; marks every line that does. */
static int listed(const selection *sel, const char *folder, const char *stem, size_t slen)
{
    int found = 0;
    for (int i = 0; i < sel->listed.n; i++) {
        const char *s = line_stem(sel, sel->listed.v[i], folder);
        if (s && strlen(s) == slen && strncmp(s, stem, slen) == 0) found = sel->hit[i] = 1;
    }
    return found;
}

/* Whether a split-file line is meant for the dataset at root: a bare stem, or a prefix that is
 * root's own name or a folder inside it. Other prefixes belong to the other dataset folders of
 * the same run (eval --data A --data B with one list). */
static int line_for_root(const selection *sel, const char *root, const char *line)
{
    const char *slash = strrchr(line, '/');
    if (!slash) return 1;
    size_t pl = (size_t)(slash - line);
    if (strlen(sel->root_name) == pl && strncmp(line, sel->root_name, pl) == 0) return 1;
    char *prefix = strndup(line, pl), *dir = prefix ? join(root, prefix) : NULL;
    int inside = dir && is_dir(dir);
    free(prefix);
    free(dir);
    return inside;
}

/* Every line of a split file meant for this dataset must name an image: a typo ("00l" for
 * "001") or a stem that does not exist would otherwise shrink an evaluation silently. */
static ls_status check_listed(const selection *sel, const char *root, const char *path,
                              ls_error *err)
{
    int unmatched = 0, first = -1;
    for (int i = 0; i < sel->listed.n; i++) {
        const char *line = sel->listed.v[i];
        if (is_list_comment(line) || sel->hit[i] || !line_for_root(sel, root, line)) continue;
        if (first < 0) first = i;
        unmatched++;
    }
    if (first < 0) return LS_OK;
    return ls_fail(err, LS_ERR_ARG, "%s:%d: '%s' matches no image in %s (%d listed name(s) match "
                   "none); a line names an image by its stem, without extension ('034', or "
                   "'Dataset 2/034' for an image in a subfolder): fix or remove the line", path,
                   first + 1, sel->listed.v[first], root, unmatched);
}

/* The fixed split by numeric id: id % 5 == 1 test, == 2 val, the rest train. */
static ls_status select_fixed(const selection *sel, const char *folder, const char *stem,
                              size_t slen, const char *path, int *take, ls_error *err)
{
    char buf[16] = {0};
    if (sel->use_file) {
        *take = listed(sel, folder, stem, slen);
        return LS_OK;
    }
    if (sel->split == LS_SPLIT_ALL) {
        *take = 1;
        return LS_OK;
    }
    int id = slen < sizeof buf ? parse_id(memcpy(buf, stem, slen)) : -1;
    if (id < 0) {
        return ls_fail(err, LS_ERR_ARG, "%s: the name '%.*s' is not a number, so the fixed split "
                       "(id %% 5) cannot place it; use the split 'all' or give a split file that "
                       "lists the stems to use", path, (int)slen, stem);
    }
    ls_split s = id % 5 == 1 ? LS_SPLIT_TEST : id % 5 == 2 ? LS_SPLIT_VAL : LS_SPLIT_TRAIN;
    *take = s == sel->split;
    return LS_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Classes and levels                                                                          */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    int num_classes;
    char names[16][32];
    ls_level_map levels;
    int assumed; /* 1: no classes.txt declared them; segmentation_WBC's are taken */
} class_info;

/* Names longer than 31 characters are cut: they only label reports. */
static void class_add(class_info *ci, int level, const char *name)
{
    int k = ci->num_classes++;
    ci->levels.levels[k] = level;
    ci->levels.num_levels = ci->num_classes;
    snprintf(ci->names[k], sizeof ci->names[k], "%s", name);
}

/* segmentation_WBC masks: 0 background, 128 cytoplasm, 255 nucleus. Snapping is on because a few
 * Dataset 2 masks hold stray levels 2..50 (counted and reported by the caller). */
static void wbc_classes(class_info *ci)
{
    memset(ci, 0, sizeof *ci);
    ci->levels.snap = 1;
    ci->levels.ignore_value = -1;
    class_add(ci, 0, "background");
    class_add(ci, 128, "cytoplasm");
    class_add(ci, 255, "nucleus");
}

static ls_status parse_level(const char *s, char **end, const char *path, int line, int *v,
                             ls_error *err)
{
    errno = 0;
    long x = strtol(s, end, 10);
    if (*end == s || errno || x < 0 || x > 65535) {
        return ls_fail(err, LS_ERR_FORMAT, "%s:%d: expected a mask value 0..65535 at '%s'", path,
                       line, s);
    }
    *v = (int)x;
    return LS_OK;
}

static ls_status check_new_level(const class_info *ci, int v, const char *path, int line,
                                 ls_error *err)
{
    if (ci->num_classes == 16)
        return ls_fail(err, LS_ERR_FORMAT, "%s:%d: more than 16 classes", path, line);
    for (int k = 0; k < ci->num_classes; k++) {
        if (ci->levels.levels[k] == v)
            return ls_fail(err, LS_ERR_FORMAT, "%s:%d: mask value %d listed twice", path, line, v);
    }
    return v == ci->levels.ignore_value
               ? ls_fail(err, LS_ERR_FORMAT, "%s:%d: %d is also the ignore value", path, line, v)
               : LS_OK;
}

/* Roboflow _classes.csv: a header, then "<pixel value>, <class name>" per class. */
static ls_status read_roboflow_classes(const char *path, class_info *ci, ls_error *err)
{
    name_list lines;
    ls_status st = read_lines(path, &lines, err);
    if (st != LS_OK) return st;
    memset(ci, 0, sizeof *ci);
    ci->levels.ignore_value = -1;
    for (int i = 0; st == LS_OK && i < lines.n; i++) {
        char *s = lines.v[i], *end;
        int v = 0;
        if (!*s || (i == 0 && !isdigit((unsigned char)*s))) continue; /* blank or header */
        st = parse_level(s, &end, path, i + 1, &v, err);
        if (st == LS_OK) st = check_new_level(ci, v, path, i + 1, err);
        if (st == LS_OK && *end != ',')
            st = ls_fail(err, LS_ERR_FORMAT, "%s:%d: expected '<value>, <class>'", path, i + 1);
        if (st == LS_OK) {
            class_add(ci, v, trim(end + 1));
        }
    }
    names_free(&lines);
    if (st == LS_OK && ci->num_classes < 2)
        st = ls_fail(err, LS_ERR_FORMAT, "%s lists fewer than 2 classes", path);
    return st;
}

/* A dataset folder's levels from its classes.txt (or "levels"): one class per line
 * "<value> [name]", plus optional lines "ignore <value>" and "snap". Without such a file the folder
 * is taken to use segmentation_WBC's convention (0 background, 128 cytoplasm, 255 nucleus,
 * snapping on), the common case for white-blood-cell masks; ci->assumed records that, so
 * ls_dataset_add can check the masks really hold those levels. */
static ls_status read_level_file(const char *root, class_info *ci, ls_error *err)
{
    char *path = join(root, "classes.txt");
    if (path && !is_file(path)) {
        free(path);
        path = join(root, "levels");
    }
    if (!path) return ls_fail(err, LS_ERR_NOMEM, "out of memory");
    if (!is_file(path)) {
        free(path);
        wbc_classes(ci);
        ci->assumed = 1;
        return LS_OK;
    }
    name_list lines;
    ls_status st = read_lines(path, &lines, err);
    memset(ci, 0, sizeof *ci);
    ci->levels.ignore_value = -1;
    /* The ignore line is read first so that a level equal to it is caught wherever it stands. */
    for (int i = 0; st == LS_OK && i < lines.n; i++) {
        char *end;
        if (strncmp(lines.v[i], "ignore", 6) == 0)
            st = parse_level(lines.v[i] + 6, &end, path, i + 1, &ci->levels.ignore_value, err);
    }
    for (int i = 0; st == LS_OK && i < lines.n; i++) {
        char *s = lines.v[i], *end;
        int v = 0;
        if (!*s || *s == '#' || strncmp(s, "ignore", 6) == 0) continue;
        if (strcmp(s, "snap") == 0) {
            ci->levels.snap = 1;
            continue;
        }
        st = parse_level(s, &end, path, i + 1, &v, err);
        if (st == LS_OK) st = check_new_level(ci, v, path, i + 1, err);
        if (st == LS_OK) {
            char def[32], *name = trim(end);
            if (!*name) {
                snprintf(def, sizeof def, "class%d", ci->num_classes);
                name = def;
            }
            class_add(ci, v, name);
        }
    }
    if (st == LS_OK && ci->num_classes < 2)
        st = ls_fail(err, LS_ERR_FORMAT, "%s lists fewer than 2 classes", path);
    names_free(&lines);
    free(path);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* Layouts                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Cell types from "Class Labels of Dataset N.csv": a header, then "<image id>,<type 1..5>". */
typedef struct {
    int *type; /* type[id], 0 unknown */
    int *line; /* line[id]: the CSV line type[id] came from, for duplicate errors */
    int n;
    int rows;  /* label rows read */
} cell_types;

static const char labels_format[] =
    "a header line, then one '<image id>,<type>' line per image (type 1 neutrophil, "
    "2 lymphocyte, 3 monocyte, 4 eosinophil, 5 basophil)";

static void cell_types_free(cell_types *ct)
{
    free(ct->type);
    free(ct->line);
    memset(ct, 0, sizeof *ct);
}

/* Makes room for type[id] (new entries unknown). */
static ls_status cell_types_grow(cell_types *ct, long id, const char *path, ls_error *err)
{
    if (id < ct->n) return LS_OK;
    int *t = realloc(ct->type, sizeof(int) * (size_t)(id + 1));
    if (t) ct->type = t;
    int *l = t ? realloc(ct->line, sizeof(int) * (size_t)(id + 1)) : NULL;
    if (!l) return ls_fail(err, LS_ERR_NOMEM, "out of memory reading %s", path);
    ct->line = l;
    memset(ct->type + ct->n, 0, sizeof(int) * (size_t)(id + 1 - ct->n));
    memset(ct->line + ct->n, 0, sizeof(int) * (size_t)(id + 1 - ct->n));
    ct->n = (int)id + 1;
    return LS_OK;
}

/* One "<image id>,<type>" row at line number line. An ID listed twice with the same type is
 * harmless; with another type the CSV contradicts itself, and guessing would mislabel a cell. */
static ls_status cell_types_row(cell_types *ct, const char *s, int line, const char *path,
                                ls_error *err)
{
    char *end;
    long id = strtol(s, &end, 10), t = -1;
    if (end != s && *end == ',') t = strtol(end + 1, &end, 10);
    while (isspace((unsigned char)*end)) end++;
    if (id < 0 || id > 1000000 || t < 1 || t > 5 || *end) {
        return ls_fail(err, LS_ERR_FORMAT, "%s:%d: expected '<image id>,<cell type 1..5>', found "
                       "'%s'; the file holds %s", path, line, s, labels_format);
    }
    ls_status st = cell_types_grow(ct, id, path, err);
    if (st != LS_OK) return st;
    if (ct->type[id] && ct->type[id] != t) {
        return ls_fail(err, LS_ERR_FORMAT, "%s:%d: image ID %ld has type %ld here but type %d on "
                       "line %d; keep one row per image, with its right type", path, line, id, t,
                       ct->type[id], ct->line[id]);
    }
    if (!ct->type[id]) {
        ct->rows++;
        ct->type[id] = (int)t;
        ct->line[id] = line;
    }
    return LS_OK;
}

static ls_status read_cell_types(const char *path, cell_types *ct, ls_error *err)
{
    memset(ct, 0, sizeof *ct);
    name_list lines;
    ls_status st = read_lines(path, &lines, err);
    for (int i = 0; st == LS_OK && i < lines.n; i++) {
        const char *s = lines.v[i];
        if (!*s || (i == 0 && !isdigit((unsigned char)*s))) continue; /* blank or header */
        st = cell_types_row(ct, s, i + 1, path, err);
    }
    names_free(&lines);
    if (st != LS_OK) cell_types_free(ct);
    return st;
}

/* Labels are only needed for cell types, so a missing or empty CSV is a note, not an error; the
 * note names the file expected, because training cell types fails later without it. */
static void note_missing_labels(const char *dir, const char *csv, const cell_types *ct,
                                sample_list *out)
{
    if (!csv) {
        add_note(out->notes, "%s: no cell-type labels: they are read from 'Class Labels of "
                 "Dataset N.csv' beside a folder named 'Dataset N', holding %s", dir,
                 labels_format);
    } else if (!is_file(csv)) {
        add_note(out->notes, "%s: no cell-type labels: %s does not exist; for cell types it "
                 "should hold %s", dir, csv, labels_format);
    } else if (ct->rows == 0) {
        add_note(out->notes, "%s holds no label rows, so %s has no cell-type labels; it should "
                 "hold %s", csv, dir, labels_format);
    }
}

/* Names how many of the images taken (out's samples from first on) have no label row in csv,
 * and the first few. */
static void note_unlabelled(const char *csv, int first, sample_list *out)
{
    int taken = 0, missing = 0;
    char some[64] = "";
    size_t used = 0;
    for (int i = first; i < out->n; i++) {
        taken++;
        if (out->v[i].cell_type) continue;
        if (++missing <= 4 && used < sizeof some)
            used += (size_t)snprintf(some + used, sizeof some - used, "%s%s",
                                     missing > 1 ? ", " : "", out->v[i].stem);
    }
    if (missing) {
        add_note(out->notes, "%s has no row for %d of the %d images (%s%s): their cell type "
                 "is unknown", csv, missing, taken, some, missing > 4 ? ", ..." : "");
    }
}

/* A folder of NNN.bmp images with NNN.png masks; csv (may be NULL or absent) gives cell types.
 * folder names the folder in split-file lines ("Dataset 2/034"), or is NULL. */
static ls_status add_bmp_folder(const char *dir, const char *folder, const char *csv, int source,
                                const selection *sel, sample_list *out, ls_error *err)
{
    cell_types ct = {NULL, NULL, 0, 0};
    ls_status st = csv && is_file(csv) ? read_cell_types(csv, &ct, err) : LS_OK;
    name_list names = {NULL, 0};
    int first = out->n;
    if (st == LS_OK) st = list_dir(dir, &names, err);
    for (int i = 0; st == LS_OK && i < names.n; i++) {
        const char *name = names.v[i];
        if (strcasecmp(ext_of(name), "bmp") != 0) continue;
        size_t slen = stem_len(name);
        char *image = join(dir, name);
        int take = 0;
        st = image ? select_fixed(sel, folder, name, slen, image, &take, err)
                   : ls_fail(err, LS_ERR_NOMEM, "out of memory");
        if (st != LS_OK || !take) {
            free(image);
            continue;
        }
        int m = find_stem(&names, name, slen, "png");
        char *mask = m >= 0 ? join(dir, names.v[m]) : NULL;
        char idbuf[16] = {0};
        int id = slen < sizeof idbuf ? parse_id(memcpy(idbuf, name, slen)) : -1;
        int type = id >= 0 && id < ct.n ? ct.type[id] : 0;
        st = push_sample(out, image, mask, m >= 0, name, slen, type, source, err);
    }
    if (st == LS_OK && ct.rows == 0) note_missing_labels(dir, csv, &ct, out);
    if (st == LS_OK && ct.rows > 0) note_unlabelled(csv, first, out);
    names_free(&names);
    cell_types_free(&ct);
    return st;
}

/* "Dataset <N>" -> N, else -1. */
static int dataset_number(const char *name)
{
    if (strncmp(name, "Dataset ", 8) != 0) return -1;
    return parse_id(name + 8);
}

typedef struct {
    int number;
    const char *name;
} numbered;

static int cmp_numbered(const void *a, const void *b)
{
    const numbered *x = a, *y = b;
    return (x->number > y->number) - (x->number < y->number);
}

/* segmentation_WBC root: every "Dataset N" subfolder, in numeric order, one source each. */
static ls_status add_wbc_root(const char *root, const name_list *entries, int base,
                              const selection *sel, sample_list *out, ls_error *err)
{
    numbered *sets = malloc(sizeof *sets * (size_t)entries->n);
    if (!sets) return ls_fail(err, LS_ERR_NOMEM, "out of memory");
    int n = 0;
    ls_status st = LS_OK;
    for (int i = 0; i < entries->n; i++) {
        int num = dataset_number(entries->v[i]);
        char *p = num >= 0 ? join(root, entries->v[i]) : NULL;
        if (p && is_dir(p)) sets[n++] = (numbered){num, entries->v[i]};
        free(p);
    }
    qsort(sets, (size_t)n, sizeof *sets, cmp_numbered);
    for (int i = 0; st == LS_OK && i < n; i++) {
        char csvname[64];
        snprintf(csvname, sizeof csvname, "Class Labels of Dataset %d.csv", sets[i].number);
        char *dir = join(root, sets[i].name), *csv = join(root, csvname);
        st = dir && csv ? add_bmp_folder(dir, sets[i].name, csv, base + i, sel, out, err)
                        : ls_fail(err, LS_ERR_NOMEM, "out of memory");
        free(dir);
        free(csv);
    }
    free(sets);
    return st;
}

/* One "Dataset N" folder (or any NNN.bmp + NNN.png folder); the CSV lives in the parent. */
static ls_status add_wbc_folder(const char *root, int base, const selection *sel,
                                sample_list *out, ls_error *err)
{
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && root[b - 1] != '/') b--;
    char *base_name = strndup(root + b, n - b);
    char *parent = b ? strndup(root, b) : strdup(".");
    if (!base_name || !parent) {
        free(base_name);
        free(parent);
        return ls_fail(err, LS_ERR_NOMEM, "out of memory");
    }
    int num = dataset_number(base_name);
    char *csv = NULL;
    if (num >= 0) {
        char csvname[64];
        snprintf(csvname, sizeof csvname, "Class Labels of Dataset %d.csv", num);
        csv = join(parent, csvname);
    }
    ls_status st = num < 0 || csv ? add_bmp_folder(root, NULL, csv, base, sel, out, err)
                                  : ls_fail(err, LS_ERR_NOMEM, "out of memory");
    free(csv);
    free(base_name);
    free(parent);
    return st;
}

/* Masks are read from PNG only. A JPEG mask is refused rather than read: its lossy compression
 * leaves grey values around every edge and can shift whole levels, so the classes it yields are
 * guesses. Without this check such a mask would be skipped, and the image reported as having no
 * mask at all. */
static ls_status check_mask_format(const char *mdir, const char *name, ls_error *err)
{
    const char *e = ext_of(name);
    if (!strcasecmp(e, "png")) return LS_OK;
    if (!strcasecmp(e, "jpg") || !strcasecmp(e, "jpeg")) {
        return ls_fail(err, LS_ERR_FORMAT, "mask %s/%s is a JPEG; JPEG masks are not read, because "
                       "lossy compression changes the class values along every edge: export the "
                       "mask as PNG (lossless) with the same name", mdir, name);
    }
    return ls_fail(err, LS_ERR_FORMAT, "mask %s/%s is not a PNG; masks/ must hold one PNG per "
                   "image (gray values or palette indices): convert it to PNG or move it out",
                   mdir, name);
}

/* images/ + masks/: a mask without its image is an error (usually a renamed file); an image
 * without a mask is kept with mask_path NULL (prediction-only samples). */
static ls_status add_images_masks(const char *root, int base, const selection *sel,
                                  sample_list *out, ls_error *err)
{
    char *idir = join(root, "images"), *mdir = join(root, "masks");
    name_list imgs = {NULL, 0}, masks = {NULL, 0};
    ls_status st = idir && mdir ? list_dir(idir, &imgs, err)
                                : ls_fail(err, LS_ERR_NOMEM, "out of memory");
    if (st == LS_OK) st = list_dir(mdir, &masks, err);
    for (int i = 0; st == LS_OK && i < masks.n; i++) st = check_mask_format(mdir, masks.v[i], err);
    for (int i = 0; st == LS_OK && i < masks.n; i++) {
        size_t slen = stem_len(masks.v[i]);
        int found = 0;
        for (int j = 0; j < imgs.n && !found; j++) {
            found = is_image_name(imgs.v[j]) && stem_len(imgs.v[j]) == slen
                    && strncmp(imgs.v[j], masks.v[i], slen) == 0;
        }
        if (!found) {
            st = ls_fail(err, LS_ERR_FORMAT, "mask %s/%s has no image of the same name in %s; "
                         "rename or remove it", mdir, masks.v[i], idir);
        }
    }
    for (int i = 0; st == LS_OK && i < imgs.n; i++) {
        const char *name = imgs.v[i];
        if (!is_image_name(name)) continue;
        size_t slen = stem_len(name);
        if (i + 1 < imgs.n && stem_len(imgs.v[i + 1]) == slen && is_image_name(imgs.v[i + 1])
            && strncmp(imgs.v[i + 1], name, slen) == 0) {
            st = ls_fail(err, LS_ERR_FORMAT, "%s holds both %s and %s; keep one image per name",
                         idir, name, imgs.v[i + 1]);
            break;
        }
        char *image = join(idir, name);
        int take = 0;
        st = image ? select_fixed(sel, NULL, name, slen, image, &take, err)
                   : ls_fail(err, LS_ERR_NOMEM, "out of memory");
        if (st != LS_OK || !take) {
            free(image);
            continue;
        }
        int m = find_stem(&masks, name, slen, "png");
        char *mask = m >= 0 ? join(mdir, masks.v[m]) : NULL;
        st = push_sample(out, image, mask, m >= 0, name, slen, 0, base, err);
    }
    names_free(&imgs);
    names_free(&masks);
    free(idir);
    free(mdir);
    return st;
}

static const struct {
    const char *folder;
    ls_split split;
} roboflow_splits[] = {{"train", LS_SPLIT_TRAIN}, {"valid", LS_SPLIT_VAL}, {"test", LS_SPLIT_TEST}};

static int same_levels(const ls_level_map *a, const ls_level_map *b)
{
    if (a->num_levels != b->num_levels || a->snap != b->snap || a->ignore_value != b->ignore_value)
        return 0;
    for (int k = 0; k < a->num_levels; k++) {
        if (a->levels[k] != b->levels[k]) return 0;
    }
    return 1;
}

static int is_roboflow(const char *root)
{
    int found = 0;
    for (size_t i = 0; i < 3 && !found; i++) {
        char *dir = join(root, roboflow_splits[i].folder);
        char *csv = dir ? join(dir, "_classes.csv") : NULL;
        found = csv && is_file(csv);
        free(dir);
        free(csv);
    }
    return found;
}

/* One Roboflow split folder: X.<image ext> with X_mask.png. */
static ls_status add_roboflow_dir(const char *dir, const char *folder, int base,
                                  const selection *sel, sample_list *out, ls_error *err)
{
    name_list names;
    ls_status st = list_dir(dir, &names, err);
    for (int i = 0; st == LS_OK && i < names.n; i++) {
        const char *name = names.v[i];
        size_t slen = stem_len(name);
        if (!is_image_name(name) || (slen >= 5 && strncmp(name + slen - 5, "_mask", 5) == 0))
            continue;
        if (sel->use_file && !listed(sel, folder, name, slen)) continue;
        char *mname = malloc(slen + 10);
        if (mname) snprintf(mname, slen + 10, "%.*s_mask.png", (int)slen, name);
        int m = -1;
        for (int j = 0; mname && j < names.n && m < 0; j++) {
            if (strcmp(names.v[j], mname) == 0) m = j;
        }
        free(mname);
        st = push_sample(out, join(dir, name), m >= 0 ? join(dir, names.v[m]) : NULL, m >= 0,
                         name, slen, 0, base, err);
    }
    names_free(&names);
    return st;
}

/* Roboflow export: the split folders, each with a _classes.csv that must agree. */
static ls_status add_roboflow(const char *root, int base, const selection *sel, class_info *ci,
                              sample_list *out, ls_error *err)
{
    ls_status st = LS_OK;
    int have_classes = 0;
    for (size_t i = 0; st == LS_OK && i < 3; i++) {
        const char *folder = roboflow_splits[i].folder;
        int wanted = sel->use_file || sel->split == LS_SPLIT_ALL
                     || sel->split == roboflow_splits[i].split;
        char *dir = join(root, folder), *csv = dir ? join(dir, "_classes.csv") : NULL;
        if (!csv) {
            st = ls_fail(err, LS_ERR_NOMEM, "out of memory");
        } else if (!is_dir(dir)) {
            /* A missing folder only matters when that split was asked for by name. */
            if (wanted && !sel->use_file && sel->split != LS_SPLIT_ALL) {
                st = ls_fail(err, LS_ERR_ARG, "%s has no %s/ folder, so it has no %s split; "
                             "choose another split", root, folder, split_name(sel->split));
            }
        } else if (wanted) {
            class_info here;
            st = read_roboflow_classes(csv, &here, err);
            if (st == LS_OK && have_classes
                && (here.num_classes != ci->num_classes || !same_levels(&here.levels, &ci->levels)))
                st = ls_fail(err, LS_ERR_FORMAT, "%s lists other classes than the _classes.csv of "
                             "the other split folders; make them agree", csv);
            if (st == LS_OK && !have_classes) *ci = here;
            have_classes = 1;
            if (st == LS_OK) st = add_roboflow_dir(dir, folder, base, sel, out, err);
        }
        free(dir);
        free(csv);
    }
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* Datasets                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static int cmp_sample(const void *a, const void *b)
{
    const ls_sample *x = a, *y = b;
    if (x->source != y->source) return x->source < y->source ? -1 : 1;
    if (x->id >= 0 && y->id >= 0 && x->id != y->id) return x->id < y->id ? -1 : 1;
    int c = strcmp(x->stem, y->stem);
    return c ? c : strcmp(x->image_path, y->image_path);
}

static void describe_levels(const ls_level_map *m, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = 0;
    for (int k = 0; k < m->num_levels && n < len; k++)
        n += (size_t)snprintf(buf + n, len - n, "%s%d", k ? "," : "", m->levels[k]);
}

/* Finds the layout of root and collects its samples; ci receives its classes. */
static ls_status collect(const char *root, int base, const selection *sel, class_info *ci,
                         sample_list *out, ls_error *err)
{
    name_list entries;
    ls_status st = list_dir(root, &entries, err);
    if (st != LS_OK) return st;
    int wbc_root = 0, bmp = 0;
    for (int i = 0; i < entries.n; i++) {
        char *p = join(root, entries.v[i]);
        if (p && dataset_number(entries.v[i]) >= 0 && is_dir(p)) wbc_root = 1;
        /* A plain segmentation_WBC folder has NNN.bmp images with NNN.png masks beside them;
         * a folder of unrelated images is no dataset (count then takes its files one by one). */
        if (p && !strcasecmp(ext_of(entries.v[i]), "bmp")) {
            size_t len = strlen(p);
            char *mask = malloc(len + 1);
            if (mask) {
                memcpy(mask, p, len + 1);
                memcpy(mask + len - 3, "png", 3);
                if (access(mask, R_OK) == 0) bmp = 1;
                free(mask);
            }
        }
        free(p);
    }
    char *idir = join(root, "images"), *mdir = join(root, "masks");
    if (!idir || !mdir) {
        st = ls_fail(err, LS_ERR_NOMEM, "out of memory");
    } else if (wbc_root) {
        st = read_level_file(root, ci, err);
        if (st == LS_OK) st = add_wbc_root(root, &entries, base, sel, out, err);
    } else if (is_dir(idir) && is_dir(mdir)) {
        st = read_level_file(root, ci, err);
        if (st == LS_OK) st = add_images_masks(root, base, sel, out, err);
    } else if (is_roboflow(root)) {
        st = add_roboflow(root, base, sel, ci, out, err);
    } else if (bmp) {
        st = read_level_file(root, ci, err);
        if (st == LS_OK) st = add_wbc_folder(root, base, sel, out, err);
    } else {
        st = ls_fail(err, LS_ERR_FORMAT, "%s holds no known dataset layout: expected 'Dataset N' "
                     "folders or files of NNN.bmp + NNN.png (segmentation_WBC), images/ + masks/ "
                     "folders, or Roboflow train/ valid/ test/ folders with _classes.csv", root);
    }
    free(idir);
    free(mdir);
    names_free(&entries);
    return st;
}

/* root's own name ("Dataset 2" for "data/Dataset 2/"), malloc'd; NULL when out of memory. */
static char *base_name_of(const char *root)
{
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && root[b - 1] != '/') b--;
    return strndup(root + b, n - b);
}

/* The selection of one ls_dataset_add call; sel->root_name must be set. */
static ls_status open_selection(selection *sel, ls_split split, const char *split_file,
                                ls_error *err)
{
    sel->split = split;
    sel->use_file = split_file != NULL;
    if (!split_file) return LS_OK;
    ls_status st = read_lines(split_file, &sel->listed, err);
    if (st != LS_OK) return st;
    int stems = 0;
    for (int i = 0; i < sel->listed.n; i++) stems += !is_list_comment(sel->listed.v[i]);
    if (stems == 0) {
        return ls_fail(err, LS_ERR_FORMAT, "split file %s lists no stems; write one image stem per "
                       "line ('034' or 'Dataset 2/034')", split_file);
    }
    sel->hit = calloc((size_t)sel->listed.n, 1);
    return sel->hit ? LS_OK : ls_fail(err, LS_ERR_NOMEM, "out of memory reading %s", split_file);
}

/* "0 (1200 px), 255 (300 px)": the stored values of hist with their pixel counts, lowest first. */
static void describe_values(const long *hist, char *buf, size_t len)
{
    size_t used = 0;
    int shown = 0;
    buf[0] = 0;
    for (int v = 0; v < 65536 && used < len; v++) {
        if (!hist[v]) continue;
        if (shown++ == 8) {
            snprintf(buf + used, len - used, ", ...");
            break;
        }
        used += (size_t)snprintf(buf + used, len - used, "%s%d (%ld px)", shown > 1 ? ", " : "", v,
                                 hist[v]);
    }
}

/* Reads the masks of one source folder, from the first on, until every class of levels has
 * appeared; present[k] marks class k seen, hist counts the stored values of the masks read. */
static ls_status classes_present(const sample_list *all, int source, const ls_level_map *levels,
                                 long *hist, int *present, int *masks, ls_error *err)
{
    int found = 0;
    *masks = 0;
    for (int i = 0; i < all->n && found < levels->num_levels; i++) {
        const ls_sample *s = &all->v[i];
        if (s->source != source || !s->mask_path) continue;
        ls_raw_mask raw;
        ls_mask m = {0, 0, NULL};
        ls_status st = ls_raw_mask_load(s->mask_path, &raw, err);
        if (st == LS_OK) st = ls_mask_from_raw(&raw, levels, s->mask_path, &m, NULL, err);
        for (size_t p = 0; st == LS_OK && p < (size_t)m.w * (size_t)m.h; p++) {
            hist[raw.data[p]]++;
            int k = m.data[p];
            if (k < levels->num_levels && !present[k]) found += present[k] = 1;
        }
        ls_raw_mask_free(&raw);
        ls_mask_free(&m);
        if (st != LS_OK) return st;
        ++*masks;
    }
    return LS_OK;
}

static ls_status report_missing_class(const char *root, const class_info *ci, const char *mask,
                                      const long *hist, int masks, int k, ls_error *err)
{
    char values[256];
    describe_values(hist, values, sizeof values);
    char *folder = strdup(mask), *slash = folder ? strrchr(folder, '/') : NULL;
    if (slash) *slash = 0;
    ls_status st = ls_fail(err, LS_ERR_FORMAT, "%s: none of its %d mask(s) holds %s (mask value "
                           "%d); they hold only the values %s. %s has no classes.txt, so its masks "
                           "are read with segmentation_WBC's levels (0 background, 128 cytoplasm, "
                           "255 nucleus) and %s would be missing: declare the real levels in "
                           "%s/classes.txt, one '<value> <name>' line per class (for binary 0/255 "
                           "masks: '0 background' and '255 cell')",
                           folder && slash ? folder : mask, masks, ci->names[k],
                           ci->levels.levels[k], values, root, ci->names[k], root);
    free(folder);
    return st;
}

/* Without a classes.txt a folder is read with segmentation_WBC's levels. A folder whose masks
 * never hold one of them (binary 0/255 masks: no cytoplasm anywhere) would lose that class
 * silently, with mIoU computed over a class that is not there, so it is an error. One image
 * without cytoplasm is normal, so each source folder is judged on all its masks (all = every
 * sample of the folder, whatever the split); reading stops once every class has appeared, after
 * one mask for segmentation_WBC. */
static ls_status check_assumed_levels(const char *root, const class_info *ci,
                                      const sample_list *all, ls_error *err)
{
    int first = -1, last = -1;
    for (int i = 0; i < all->n; i++) {
        if (first < 0 || all->v[i].source < first) first = all->v[i].source;
        if (all->v[i].source > last) last = all->v[i].source;
    }
    long *hist = malloc(65536 * sizeof *hist);
    ls_status st = hist ? LS_OK : ls_fail(err, LS_ERR_NOMEM, "out of memory checking %s", root);
    for (int src = first; st == LS_OK && src >= 0 && src <= last; src++) {
        int present[16] = {0}, masks = 0, missing = -1;
        memset(hist, 0, 65536 * sizeof *hist);
        st = classes_present(all, src, &ci->levels, hist, present, &masks, err);
        for (int k = ci->num_classes - 1; k >= 0; k--) missing = present[k] ? missing : k;
        const char *mask = NULL;
        for (int i = 0; i < all->n && !mask; i++)
            mask = all->v[i].source == src ? all->v[i].mask_path : NULL;
        if (st == LS_OK && masks > 0 && missing >= 0)
            st = report_missing_class(root, ci, mask, hist, masks, missing, err);
    }
    free(hist);
    return st;
}

/* Runs check_assumed_levels on every sample of root, not only the split's. */
static ls_status check_folder_levels(const char *root, const selection *sel, int base,
                                     const class_info *ci, const sample_list *selected,
                                     ls_error *err)
{
    if (!sel->use_file && sel->split == LS_SPLIT_ALL)
        return check_assumed_levels(root, ci, selected, err);
    selection every = {LS_SPLIT_ALL, {NULL, 0}, NULL, sel->root_name, 0};
    sample_list all;
    class_info same;
    memset(&all, 0, sizeof all);
    ls_status st = collect(root, base, &every, &same, &all, err);
    if (st == LS_OK) st = check_assumed_levels(root, ci, &all, err);
    samples_free(&all);
    return st;
}

static void describe_map(const ls_level_map *m, char *buf, size_t len)
{
    char lv[128];
    describe_levels(m, lv, sizeof lv);
    if (m->ignore_value >= 0)
        snprintf(buf, len, "%s (snapping %s, ignore value %d)", lv, m->snap ? "on" : "off",
                 m->ignore_value);
    else
        snprintf(buf, len, "%s (snapping %s, no ignore value)", lv, m->snap ? "on" : "off");
}

/* Folders combined in one dataset must share classes and levels. */
static ls_status check_joins(const ls_dataset *ds, const char *root, const class_info *ci,
                             ls_error *err)
{
    if (!ds->num_classes) return LS_OK;
    if (ds->num_classes != ci->num_classes) {
        return ls_fail(err, LS_ERR_ARG, "%s has %d classes but the folders added before have %d; "
                       "folders combined in one dataset must share their classes", root,
                       ci->num_classes, ds->num_classes);
    }
    if (same_levels(&ci->levels, &ds->levels)) return LS_OK;
    char a[200], b[200];
    describe_map(&ci->levels, a, sizeof a);
    describe_map(&ds->levels, b, sizeof b);
    return ls_fail(err, LS_ERR_ARG, "%s stores classes as mask values %s but the folders added "
                   "before use %s; make their classes.txt files agree, or convert the masks", root,
                   a, b);
}

/* Appends the notes of one folder; a cut ends in "...". */
static void append_notes(char *notes, const char *more)
{
    size_t used = strlen(notes), add = strlen(more);
    if (used + add < NOTES_CAP) {
        memcpy(notes + used, more, add + 1);
    } else if (used + 5 <= NOTES_CAP) {
        memcpy(notes + used, more, NOTES_CAP - used - 5);
        memcpy(notes + NOTES_CAP - 5, "...\n", 5);
    }
}

/* Moves the collected samples into ds, which takes the folder's classes if it had none. */
static ls_status append_samples(ls_dataset *ds, const char *root, const class_info *ci,
                                sample_list *list, ls_error *err)
{
    ls_sample *all = realloc(ds->samples, sizeof *all * ((size_t)ds->n + (size_t)list->n));
    if (!all) return ls_fail(err, LS_ERR_NOMEM, "out of memory adding %s", root);
    qsort(list->v, (size_t)list->n, sizeof *list->v, cmp_sample);
    memcpy(all + ds->n, list->v, sizeof *all * (size_t)list->n);
    ds->samples = all;
    ds->n += list->n;
    free(list->v);
    list->v = NULL;
    list->n = 0;
    if (!ds->num_classes) {
        ds->num_classes = ci->num_classes;
        memcpy(ds->class_names, ci->names, sizeof ci->names);
        ds->levels = ci->levels;
    }
    append_notes(ds->notes, list->notes);
    return LS_OK;
}

ls_status ls_dataset_add(ls_dataset *ds, const char *root, ls_split split, const char *split_file,
                         ls_error *err)
{
    if (!ds || !root) return ls_fail(err, LS_ERR_ARG, "ls_dataset_add: no dataset or folder given");
    if (split < LS_SPLIT_ALL || split > LS_SPLIT_TEST)
        return ls_fail(err, LS_ERR_ARG, "ls_dataset_add: split %d is not a known split", split);
    if (!is_dir(root)) {
        return ls_fail(err, LS_ERR_IO, "dataset folder %s does not exist or is not a folder; "
                       "check the path", root);
    }
    char *root_name = base_name_of(root);
    selection sel = {split, {NULL, 0}, NULL, root_name, 0};
    ls_status st = root_name ? open_selection(&sel, split, split_file, err)
                             : ls_fail(err, LS_ERR_NOMEM, "out of memory");
    /* Sources number the folders: one past the highest already in the dataset. */
    int base = 0;
    for (int i = 0; i < ds->n; i++) {
        if (ds->samples[i].source >= base) base = ds->samples[i].source + 1;
    }
    sample_list list;
    class_info ci;
    memset(&list, 0, sizeof list);
    memset(&ci, 0, sizeof ci);
    if (st == LS_OK) st = collect(root, base, &sel, &ci, &list, err);
    if (st == LS_OK && split_file) st = check_listed(&sel, root, split_file, err);
    if (st == LS_OK && list.n == 0) {
        st = ls_fail(err, LS_ERR_ARG, "%s has no samples for %s%s; check the folder and the split",
                     root, split_file ? "the stems in " : "the split ",
                     split_file ? split_file : split_name(split));
    }
    if (st == LS_OK && ci.assumed) st = check_folder_levels(root, &sel, base, &ci, &list, err);
    if (st == LS_OK) st = check_joins(ds, root, &ci, err);
    if (st == LS_OK) st = append_samples(ds, root, &ci, &list, err);
    samples_free(&list);
    names_free(&sel.listed);
    free(sel.hit);
    free(root_name);
    return st;
}

ls_status ls_dataset_check_classes(const ls_dataset *ds, int num_labels, const char *model_name,
                                   ls_error *err)
{
    if (!ds) return ls_fail(err, LS_ERR_ARG, "ls_dataset_check_classes: no dataset given");
    if (ds->num_classes == num_labels) return LS_OK;
    char names[400];
    size_t used = 0;
    names[0] = 0;
    for (int k = 0; k < ds->num_classes && used < sizeof names; k++) {
        used += (size_t)snprintf(names + used, sizeof names - used, "%s%s = mask value %d",
                                 k ? ", " : "", ds->class_names[k], ds->levels.levels[k]);
    }
    return ls_fail(err, LS_ERR_SHAPE, "the dataset has %d classes (%s) but the model %s predicts "
                   "%d; use a model trained on masks with these classes (leukoseg train takes its "
                   "classes from the data folder's classes.txt, or segmentation_WBC's 3 without "
                   "one), or, if the masks hold the model's classes, declare its %d levels in the "
                   "data folder's classes.txt ('<value> <name>' per line; leukoseg info shows the "
                   "model's)", ds->num_classes, names, model_name ? model_name : "(model)",
                   num_labels, num_labels);
}

void ls_dataset_free(ls_dataset *ds)
{
    if (!ds) return;
    for (int i = 0; i < ds->n; i++) sample_free(&ds->samples[i]);
    free(ds->samples);
    memset(ds, 0, sizeof *ds);
}

ls_status ls_dataset_load(const ls_dataset *ds, int i, ls_image *img, ls_mask *mask,
                          long *n_snapped, ls_error *err)
{
    if (n_snapped) *n_snapped = 0;
    if (!img || !mask) return ls_fail(err, LS_ERR_ARG, "ls_dataset_load: no output given");
    img->data = NULL;
    img->w = img->h = 0;
    mask->data = NULL;
    mask->w = mask->h = 0;
    if (!ds || i < 0 || i >= ds->n) {
        return ls_fail(err, LS_ERR_ARG, "sample %d does not exist (the dataset has %d)", i,
                       ds ? ds->n : 0);
    }
    const ls_sample *s = &ds->samples[i];
    ls_status st = ls_image_load(s->image_path, img, err);
    if (st != LS_OK || !s->mask_path) return st;
    ls_raw_mask raw;
    st = ls_raw_mask_load(s->mask_path, &raw, err);
    if (st == LS_OK && (raw.w != img->w || raw.h != img->h)) {
        st = ls_fail(err, LS_ERR_SHAPE, "image %s is %dx%d but its mask %s is %dx%d; a mask must "
                     "have exactly its image's size (nothing is resized silently): re-export the "
                     "mask", s->image_path, img->w, img->h, s->mask_path, raw.w, raw.h);
    }
    if (st == LS_OK) st = ls_mask_from_raw(&raw, &ds->levels, s->mask_path, mask, n_snapped, err);
    ls_raw_mask_free(&raw);
    if (st != LS_OK) ls_image_free(img);
    return st;
}
