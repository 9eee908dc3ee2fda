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
 * and mask levels.
 */
#include "leukoseg.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
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

typedef struct {
    ls_sample *v;
    int n;
} sample_list;

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
    name_list listed; /* stems from the split file */
    int use_file;
} selection;

/* A split-file line matches a stem or a stem with its folder ("Dataset 2/034"). */
static int listed(const selection *sel, const char *folder, const char *stem, size_t slen)
{
    size_t fl = folder ? strlen(folder) : 0;
    for (int i = 0; i < sel->listed.n; i++) {
        const char *s = sel->listed.v[i];
        if (fl && strncmp(s, folder, fl) == 0 && s[fl] == '/') s += fl + 1;
        if (strlen(s) == slen && strncmp(s, stem, slen) == 0) return 1;
    }
    return 0;
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

/* images/ + masks/ levels from classes.txt (or "levels"): one class per line "<value> [name]",
 * plus optional lines "ignore <value>" and "snap". Without such a file the folder is taken to use
 * segmentation_WBC's convention (0 background, 128 cytoplasm, 255 nucleus, snapping on), the
 * common case for white-blood-cell masks. */
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
    int n;
} cell_types;

static ls_status read_cell_types(const char *path, cell_types *ct, ls_error *err)
{
    ct->type = NULL;
    ct->n = 0;
    name_list lines;
    ls_status st = read_lines(path, &lines, err);
    for (int i = 0; st == LS_OK && i < lines.n; i++) {
        char *s = lines.v[i], *end;
        if (!*s || (i == 0 && !isdigit((unsigned char)*s))) continue; /* blank or header */
        long id = strtol(s, &end, 10), t = -1;
        if (end != s && *end == ',') t = strtol(end + 1, &end, 10);
        if (id < 0 || id > 1000000 || t < 1 || t > 5 || *trim(end)) {
            st = ls_fail(err, LS_ERR_FORMAT, "%s:%d: expected '<image id>,<cell type 1..5>', "
                         "found '%s'", path, i + 1, s);
            break;
        }
        if (id >= ct->n) {
            int *p = realloc(ct->type, sizeof(int) * (size_t)(id + 1));
            if (!p) {
                st = ls_fail(err, LS_ERR_NOMEM, "out of memory reading %s", path);
                break;
            }
            memset(p + ct->n, 0, sizeof(int) * (size_t)(id + 1 - ct->n));
            ct->type = p;
            ct->n = (int)id + 1;
        }
        ct->type[id] = (int)t;
    }
    names_free(&lines);
    if (st != LS_OK) {
        free(ct->type);
        ct->type = NULL;
        ct->n = 0;
    }
    return st;
}

/* A folder of NNN.bmp images with NNN.png masks; csv (may be NULL or absent) gives cell types.
 * folder names the folder in split-file lines ("Dataset 2/034"), or is NULL. */
static ls_status add_bmp_folder(const char *dir, const char *folder, const char *csv, int source,
                                const selection *sel, sample_list *out, ls_error *err)
{
    cell_types ct = {NULL, 0};
    ls_status st = csv && is_file(csv) ? read_cell_types(csv, &ct, err) : LS_OK;
    name_list names = {NULL, 0};
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
    names_free(&names);
    free(ct.type);
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
        wbc_classes(ci);
        st = add_wbc_root(root, &entries, base, sel, out, err);
    } else if (is_dir(idir) && is_dir(mdir)) {
        st = read_level_file(root, ci, err);
        if (st == LS_OK) st = add_images_masks(root, base, sel, out, err);
    } else if (is_roboflow(root)) {
        st = add_roboflow(root, base, sel, ci, out, err);
    } else if (bmp) {
        wbc_classes(ci);
        st = add_wbc_folder(root, base, sel, out, err);
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
    selection sel = {split, {NULL, 0}, split_file != NULL};
    ls_status st = split_file ? read_lines(split_file, &sel.listed, err) : LS_OK;
    int stems = 0;
    for (int i = 0; i < sel.listed.n; i++) stems += sel.listed.v[i][0] != 0;
    if (st == LS_OK && split_file && stems == 0)
        st = ls_fail(err, LS_ERR_FORMAT, "split file %s lists no stems", split_file);
    /* Sources number the folders: one past the highest already in the dataset. */
    int base = 0;
    for (int i = 0; i < ds->n; i++) {
        if (ds->samples[i].source >= base) base = ds->samples[i].source + 1;
    }
    sample_list list = {NULL, 0};
    class_info ci;
    memset(&ci, 0, sizeof ci);
    if (st == LS_OK) st = collect(root, base, &sel, &ci, &list, err);
    if (st == LS_OK && list.n == 0) {
        st = ls_fail(err, LS_ERR_ARG, "%s has no samples for %s%s; check the folder and the split",
                     root, split_file ? "the stems in " : "the split ",
                     split_file ? split_file : split_name(split));
    }
    if (st == LS_OK && ds->num_classes && ds->num_classes != ci.num_classes) {
        st = ls_fail(err, LS_ERR_ARG, "%s has %d classes but the folders added before have %d; "
                     "folders combined in one dataset must share their classes", root,
                     ci.num_classes, ds->num_classes);
    }
    if (st == LS_OK && ds->num_classes && !same_levels(&ci.levels, &ds->levels)) {
        char a[128], b[128];
        describe_levels(&ci.levels, a, sizeof a);
        describe_levels(&ds->levels, b, sizeof b);
        st = ls_fail(err, LS_ERR_ARG, "%s stores classes as mask values %s (snap %d, ignore %d) "
                     "but the folders added before use %s (snap %d, ignore %d); convert the masks "
                     "so they agree", root, a, ci.levels.snap, ci.levels.ignore_value, b,
                     ds->levels.snap, ds->levels.ignore_value);
    }
    ls_sample *all = NULL;
    if (st == LS_OK) {
        all = realloc(ds->samples, sizeof *all * ((size_t)ds->n + (size_t)list.n));
        if (!all) st = ls_fail(err, LS_ERR_NOMEM, "out of memory adding %s", root);
    }
    if (st == LS_OK) {
        qsort(list.v, (size_t)list.n, sizeof *list.v, cmp_sample);
        memcpy(all + ds->n, list.v, sizeof *all * (size_t)list.n);
        ds->samples = all;
        ds->n += list.n;
        free(list.v);
        list.v = NULL;
        list.n = 0;
        if (!ds->num_classes) {
            ds->num_classes = ci.num_classes;
            memcpy(ds->class_names, ci.names, sizeof ci.names);
            ds->levels = ci.levels;
        }
    }
    samples_free(&list);
    names_free(&sel.listed);
    return st;
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
