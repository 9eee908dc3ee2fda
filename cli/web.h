/* The results web pages of `leukoseg serve` and `leukoseg report`: page files built into the
 * binary (generated from the files in web/ by tools/embed.c) and the data files computed from a
 * model and a dataset (cli/report.c). */
#ifndef LS_WEB_H
#define LS_WEB_H

#include <stddef.h>
#include <stdint.h>

/* One page file from web/, by base name. data holds len bytes plus a terminating 0. */
typedef struct {
    const char *name;
    const char *type;
    const unsigned char *data;
    size_t len;
} ls_web_file;

extern const ls_web_file ls_web_files[]; /* ends with a {0} entry */
extern const int ls_web_nfiles;

#ifdef LS_WEB_WITH_MODEL /* the parts below need leukoseg.h / cJSON */
#include "cli.h"

#include <cjson/cJSON.h>

/* A generated file: "data/results.js", "data/gallery/d1_001.png", ... */
typedef struct {
    char name[128];
    const char *type;
    uint8_t *data;
    size_t len;
} web_blob;

typedef struct {
    web_blob *v;
    int n, cap;
} web_bundle;

/* Looks up a page file (embedded) or a generated file by exact name; NULL if there is none.
 * Exact matching is the whole of the server's path policy: no file system is touched. */
const ls_web_file *web_find_page(const char *name);
const web_blob *web_bundle_find(const web_bundle *b, const char *name);
void web_bundle_free(web_bundle *b);

/* Builds data/model.js (architecture, training history; live says whether a server answers the
 * upload and attention endpoints) and data/results.js plus the gallery PNGs (test split of each
 * dataset folder under data_dir). A dataset that cannot be read is reported in results.js rather
 * than failing, so the page still shows the model. */
ls_status web_build_bundle(ls_model *model, const char *model_path, const char *data_dir,
                           int live, web_bundle *b, ls_error *err);

/* Per-class colours shared by the server's overlays, the gallery and (as CSS) the page. */
extern const uint8_t web_class_colors[8][3];

/* Class name c from the model's metadata ("class%d" when it has none). */
void web_class_name(const ls_model *m, int c, char *out, size_t cap);

/* Colours a class mask (LS_IGNORE grey); blends it over img at alpha when img is not NULL.
 * Returns malloc'd RGB or NULL. */
uint8_t *web_color_mask(const ls_mask *mask, const ls_image *img, float alpha);

/* "data:image/png;base64,..." of an RGB image, malloc'd; NULL on failure (err set). */
char *web_png_data_url(const uint8_t *rgb, int w, int h, ls_error *err);

/* Segments img and finds its cells (ls_cells_analyze; a model without a nucleus class gets
 * ls_segment_windows and no cells), over windows of `window` pixels for a field with many
 * cells (0: the whole image). cells is zeroed when there are none. */
ls_status web_segment_cells(ls_model *model, const ls_image *img, int window, ls_mask *mask,
                            ls_cells *cells, ls_error *err);

/* Adds "cells" (type, confidence, area, bbox, ... per cell), "differential" ({type: count})
 * and "cells_classified" (whether the model has a cell-type classifier) to obj. */
void web_add_cells(cJSON *obj, const ls_model *model, const ls_cells *cells);
#endif

#endif
