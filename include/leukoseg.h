/* leukoseg: SegFormer (Mix Transformer encoder + all-MLP decode head) in C.
 *
 * Public API of libleukoseg. Every function that can fail returns an ls_status and, on failure,
 * fills an ls_error with a message that names the file or value at fault and what to do.
 * Nothing in the library exits the process.
 *
 * Layout conventions: images are HWC uint8 RGB; model inputs are NCHW float32 (as in PyTorch);
 * inside the model, token maps are kept channels-last ([B, H*W, C], token n = y*W + x), which is
 * exactly HuggingFace's flatten(2).transpose(1, 2) order.
 */
#ifndef LEUKOSEG_H
#define LEUKOSEG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* Status and errors                                                                           */
/* ------------------------------------------------------------------------------------------ */

typedef enum {
    LS_OK = 0,
    LS_ERR_IO,      /* a file could not be opened, read or written */
    LS_ERR_FORMAT,  /* a file is corrupt, truncated or of an unsupported kind */
    LS_ERR_SHAPE,   /* sizes or tensor shapes do not match */
    LS_ERR_ARG,     /* a bad argument or option value */
    LS_ERR_NOMEM,   /* an allocation failed or a request is too large */
    LS_ERR_NUMERIC, /* NaN or Inf appeared */
    LS_ERR_INTERRUPTED
} ls_status;

typedef struct {
    char msg[1024];
} ls_error;

/* Formats msg into err (when err is not NULL) and returns status. */
ls_status ls_fail(ls_error *err, ls_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ------------------------------------------------------------------------------------------ */
/* Images and masks (src/image.c)                                                              */
/* ------------------------------------------------------------------------------------------ */

/* 8-bit RGB image, HWC interleaved, data[(y*w + x)*3 + c]. */
typedef struct {
    int w, h;
    uint8_t *data;
} ls_image;

/* Raw mask values before level mapping: gray values (1..16 bit, kept as stored) or palette
 * indices. */
typedef struct {
    int w, h;
    int bit_depth;     /* 8 or 16 for gray; 1..8 for palette indices */
    int is_palette;    /* 1: values are palette indices */
    uint16_t *data;    /* w*h values */
} ls_raw_mask;

/* Class-index mask: labels 0..K-1, LS_IGNORE for ignored pixels. */
#define LS_IGNORE 255
typedef struct {
    int w, h;
    uint8_t *data;
} ls_mask;

/* Loads BMP (all variants), PNG (8/16-bit, gray, palette, alpha) or JPEG, by content, as RGB.
 * 16-bit samples scale to 8 bits by (v * 255 + 32767) / 65535; alpha is ignored (documented policy:
 * pixels are taken as stored, not composited). Gray v becomes (v, v, v). */
ls_status ls_image_load(const char *path, ls_image *img, ls_error *err);
/* Same, from memory (for uploads). name is used in messages. */
ls_status ls_image_decode(const uint8_t *bytes, size_t len, const char *name, ls_image *img,
                          ls_error *err);
void ls_image_free(ls_image *img);

ls_status ls_raw_mask_load(const char *path, ls_raw_mask *mask, ls_error *err);
void ls_raw_mask_free(ls_raw_mask *mask);

/* How raw mask values become classes. levels[k] is the raw value of class k. */
typedef struct {
    int num_levels;
    int levels[16];
    int snap;          /* 1: a value that is no level but lies within 45% of the way from its
                          nearest level to the neighbouring one snaps to it (counted); values
                          farther off (mid-gap, or far beyond the outermost levels) are errors.
                          0: every value that is no level is an error naming file and values */
    int ignore_value;  /* raw value that means "ignore" (-1: none) */
} ls_level_map;

/* Maps raw values to class indices. n_snapped (may be NULL) receives the count of snapped pixels.
 * Palette masks use indices directly (index k is class k; ignore_value still applies). A 16-bit
 * gray mask whose values are all multiples of 257 (an 8-bit mask stored as v * 257) is read as
 * v / 257, unless its values are all levels as stored. An error lists the values that are no
 * level with their pixel counts and says how to declare levels or snapping. */
ls_status ls_mask_from_raw(const ls_raw_mask *raw, const ls_level_map *map, const char *path,
                           ls_mask *mask, long *n_snapped, ls_error *err);
void ls_mask_free(ls_mask *mask);

/* Resizing. Images: bilinear with a triangle filter widened on downscale (PIL's BILINEAR).
 * Label maps: nearest with half-pixel centres, src = floor((dst + 0.5) * in / out). */
ls_status ls_image_resize(const ls_image *src, int w, int h, ls_image *dst, ls_error *err);
ls_status ls_mask_resize_nearest(const ls_mask *src, int w, int h, ls_mask *dst, ls_error *err);

/* PNG writers; written atomically (temp file in the same folder, then rename). */
ls_status ls_png_write_gray(const char *path, const uint8_t *data, int w, int h, ls_error *err);
ls_status ls_png_write_rgb(const char *path, const uint8_t *data, int w, int h, ls_error *err);
/* Encodes to memory (for the server). *out is malloc'd. */
ls_status ls_png_encode_rgb(const uint8_t *data, int w, int h, uint8_t **out, size_t *out_len,
                            ls_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Datasets (src/dataset.c)                                                                    */
/* ------------------------------------------------------------------------------------------ */

typedef enum { LS_SPLIT_ALL = 0, LS_SPLIT_TRAIN, LS_SPLIT_VAL, LS_SPLIT_TEST } ls_split;

typedef struct {
    char *image_path;
    char *mask_path;   /* NULL when the sample has no mask */
    char *stem;        /* file name without extension, e.g. "001" */
    int id;            /* numeric id from the stem, or -1 */
    int cell_type;     /* 1..5 from the class-label CSV (neutrophil..basophil), 0 unknown */
    int source;        /* index of the dataset folder this sample came from */
} ls_sample;

typedef struct {
    ls_sample *samples;
    int n;
    int num_classes;          /* segmentation classes (3 for segmentation_WBC) */
    char class_names[16][32];
    ls_level_map levels;
    char notes[2048];         /* what ls_dataset_add found worth telling the user (label CSVs
                                 missing or incomplete), one line each ending in '\n'; "" if
                                 none. The library never prints: the caller shows them. */
} ls_dataset;

/* Opens a dataset folder, detecting its layout:
 *  - segmentation_WBC: "NNN.bmp" + "NNN.png" side by side (in the folder or its "Dataset N"
 *    subfolders), class labels from "Class Labels of Dataset N.csv";
 *  - images/ + masks/ folders with matching stems (PNG masks only; a JPEG mask is an error);
 *  - Roboflow png-mask-semantic: train/ valid/ test/ with X.jpg + X_mask.png and _classes.csv.
 * Levels come from the folder's classes.txt, else segmentation_WBC's 0/128/255; in that case a
 * folder whose masks never hold one of those levels (binary 0/255 masks) is an error.
 * split selects the samples: the fixed id split (id % 5 == 1 test, == 2 val, else train) for
 * segmentation_WBC and images/masks; the folders for Roboflow. split_file, when not NULL, lists
 * stems (one per line, "#" comments) and overrides split; a line that names no image of this
 * folder is an error, unless its "<folder>/" prefix names a folder outside root. Samples are
 * appended to ds (several folders); notes are appended to ds->notes. */
ls_status ls_dataset_add(ls_dataset *ds, const char *root, ls_split split, const char *split_file,
                         ls_error *err);
/* Checks that a model predicting num_labels classes can be scored on ds; the message names both
 * class counts, the dataset's classes and what to do. model_name is used in the message. */
ls_status ls_dataset_check_classes(const ls_dataset *ds, int num_labels, const char *model_name,
                                   ls_error *err);
ls_status ls_split_parse(const char *name, ls_split *split, ls_error *err);
void ls_dataset_free(ls_dataset *ds);

/* Loads sample i's image and class mask (mask->data NULL when it has none); checks sizes match.
 * n_snapped receives the snapped-pixel count. */
ls_status ls_dataset_load(const ls_dataset *ds, int i, ls_image *img, ls_mask *mask,
                          long *n_snapped, ls_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Random numbers (deterministic under a seed)                                                 */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    uint64_t s[4];
} ls_rng;

void ls_rng_seed(ls_rng *rng, uint64_t seed);
uint64_t ls_rng_next(ls_rng *rng);
float ls_rng_uniform(ls_rng *rng);              /* [0, 1) */
float ls_rng_normal(ls_rng *rng);               /* N(0, 1) */
int ls_rng_int(ls_rng *rng, int n);             /* [0, n) */

/* ------------------------------------------------------------------------------------------ */
/* Augmentation and preprocessing (src/augment.c)                                              */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    int size;              /* output crop is size x size */
    float scale_min, scale_max; /* random rescale of the image (relative to fitting `size`) */
    int hflip, vflip, rot90;    /* enable each */
    float brightness;      /* max added value, 0..255 units */
    float contrast;        /* max relative change, e.g. 0.2 */
    float saturation;
    float hue;             /* max hue shift in degrees (stain jitter) */
} ls_augment;

/* Default microscopy augmentation for a given training size. */
ls_augment ls_augment_default(int size);

/* Random training view of (img, mask): rescale so the image fits size x size times a random scale,
 * random crop, pad (image 0 after normalisation, label LS_IGNORE), flips, rot90, colour jitter.
 * Outputs: x [3, size, size] normalised float (CHW), labels [size*size]. */
ls_status ls_augment_sample(const ls_augment *aug, ls_rng *rng, const ls_image *img,
                            const ls_mask *mask, const float mean[3], const float std[3],
                            float *x, uint8_t *labels, ls_error *err);

/* The 8 symmetries of the square, for training on every orientation of a cell (a smear has no
 * up or left). view (0..LS_DIHEDRAL_VIEWS-1): bit 0 mirrors left-right, bit 1 mirrors top-bottom,
 * bit 2 then transposes (so the output is h x w); view 0 is a copy. mask may be NULL or hold no
 * data (out_mask then holds none); otherwise it must be the image's size. */
#define LS_DIHEDRAL_VIEWS 8
ls_status ls_dihedral(const ls_image *img, const ls_mask *mask, int view, ls_image *out_img,
                      ls_mask *out_mask, ls_error *err);

/* Deterministic eval view: resize image to w x h (ls_image_resize), scale by 1/255, normalise.
 * x is [3, h, w]. */
ls_status ls_preprocess(const ls_image *img, int w, int h, const float mean[3], const float std[3],
                        float *x, ls_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Tensors on disk: NumPy .npy and safetensors (src/npy.c, src/safetensors.c)                  */
/* ------------------------------------------------------------------------------------------ */

typedef enum { LS_F32 = 0, LS_I64, LS_U8, LS_I32, LS_F64 } ls_dtype;

typedef struct {
    ls_dtype dtype;
    int ndim;
    int64_t shape[8];
    void *data;   /* malloc'd, C order */
} ls_array;

size_t ls_array_numel(const ls_array *a);
size_t ls_dtype_size(ls_dtype dtype);          /* bytes per element; 0 for an invalid dtype */
ls_status ls_npy_load(const char *path, ls_array *a, ls_error *err);  /* f32/f64/i64/i32/u8 */
ls_status ls_npy_save(const char *path, const ls_array *a, ls_error *err); /* atomic */
void ls_array_free(ls_array *a);

typedef struct {
    char *name;
    ls_array array;
} ls_named_tensor;

typedef struct {
    ls_named_tensor *tensors;
    int n;
    char **meta_keys, **meta_values;  /* __metadata__ string map */
    int n_meta;
} ls_tensor_file;

/* Reads and validates a safetensors file (header size, offsets contiguous, sizes, duplicates). */
ls_status ls_safetensors_load(const char *path, ls_tensor_file *tf, ls_error *err);
/* Writes atomically; the header is padded to 8 bytes. */
ls_status ls_safetensors_save(const char *path, const ls_tensor_file *tf, ls_error *err);
const ls_named_tensor *ls_tensor_file_find(const ls_tensor_file *tf, const char *name);
const char *ls_tensor_file_meta(const ls_tensor_file *tf, const char *key);
void ls_tensor_file_free(ls_tensor_file *tf);

/* ------------------------------------------------------------------------------------------ */
/* Metrics (src/metrics.c)                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Confusion matrix, counts[gt * k + pred]; pixels with gt == LS_IGNORE are dropped. */
typedef struct {
    int k;
    uint64_t *counts;
} ls_confusion;

ls_status ls_confusion_init(ls_confusion *cm, int k, ls_error *err);
/* A pred value outside 0..k-1 (other than ignore in gt) is an error. */
ls_status ls_confusion_add(ls_confusion *cm, const uint8_t *gt, const uint8_t *pred, size_t n,
                           ls_error *err);
void ls_confusion_free(ls_confusion *cm);

typedef struct {
    int k;
    double iou[16], dice[16], precision[16], recall[16];
    int present[16];          /* class in gt or pred; absent classes are excluded from means */
    double miou, pixel_accuracy, mean_accuracy;
    double whole_cell_dice;   /* classes >= 1 merged against class 0 */
    uint64_t pixels;
} ls_metrics;

void ls_metrics_compute(const ls_confusion *cm, ls_metrics *m);

/* ------------------------------------------------------------------------------------------ */
/* SegFormer model (src/segformer.c)                                                           */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    char variant[8];        /* "b0".."b5" */
    int num_channels;       /* 3 */
    int hidden[4];          /* hidden_sizes */
    int depths[4];
    int heads[4];
    int sr[4];              /* sr_ratios */
    int patch[4];           /* patch_sizes */
    int stride[4];
    int mlp_ratio;          /* 4 */
    int decoder_hidden;     /* 256 (b0, b1) or 768 */
    int num_labels;
    float drop_path_rate;   /* 0.1 */
    float classifier_dropout; /* 0.1 */
} ls_config;

ls_status ls_config_for_variant(const char *variant, int num_labels, ls_config *cfg,
                                ls_error *err);
/* Parses a configuration in HF SegformerConfig field names; path is used in messages. */
ls_status ls_config_from_json(const char *json, ls_config *cfg, const char *path, ls_error *err);

/* One parameter or buffer: an HF state_dict entry stored in a flat float array. */
typedef struct {
    char name[112];
    int ndim;
    int shape[4];
    size_t offset;      /* into the model's flat arrays */
    size_t numel;
    int no_decay;       /* encoder LayerNorm weights and biases: weight decay 0 */
    int is_head;        /* decode_head.*: learning rate x head_lr_mult */
} ls_param;

typedef struct ls_model ls_model;       /* parameters, gradients, buffers, metadata */
typedef struct ls_workspace ls_workspace; /* activations for one batch shape */

/* Creates a model with HF initialisation from seed (Linear/Conv N(0, 0.02), biases 0, norms 1/0,
 * BN running stats 0/1). */
ls_status ls_model_create(const ls_config *cfg, uint64_t seed, ls_model **model, ls_error *err);
void ls_model_free(ls_model *model);

const ls_config *ls_model_config(const ls_model *model);
int ls_model_num_params(const ls_model *model);           /* number of parameter tensors */
const ls_param *ls_model_param(const ls_model *model, int i);
float *ls_model_weights(ls_model *model);                  /* flat parameters */
float *ls_model_grads(ls_model *model);                    /* flat gradients */
size_t ls_model_num_weights(const ls_model *model);        /* floats in the flat arrays */
/* BatchNorm buffers of the decode head. */
float *ls_model_bn_running_mean(ls_model *model);
float *ls_model_bn_running_var(ls_model *model);
int64_t ls_model_bn_batches_tracked(const ls_model *model);

/* Model metadata (class names, levels, preprocessing, provenance) as a string map. */
ls_status ls_model_set_meta(ls_model *model, const char *key, const char *value, ls_error *err);
const char *ls_model_get_meta(const ls_model *model, const char *key);

/* Saves as safetensors with HF tensor names and the metadata map. Atomic. */
ls_status ls_model_save(const ls_model *model, const char *path, ls_error *err);
/* Loads a model file; the configuration comes from its metadata ("config" JSON) or, for a plain HF
 * file, from the tensor shapes. */
ls_status ls_model_load(const char *path, ls_model **model, ls_error *err);

/* Copies tensors from a file into an existing model by name. Tensors whose shape differs are
 * skipped when allow_skip (reported in report), otherwise the first mismatch is an error naming the
 * tensor and both shapes. A "module." prefix and the original mmseg names are mapped to HF
 * names. */
ls_status ls_model_load_weights(ls_model *model, const char *path, int allow_skip, char *report,
                                size_t report_len, ls_error *err);

/* Workspace for batch B of H x W inputs; reused while shapes stay the same. */
ls_status ls_workspace_create(const ls_model *model, int batch, int h, int w, int training,
                              ls_workspace **ws, ls_error *err);
void ls_workspace_free(ls_workspace *ws);
size_t ls_workspace_bytes(const ls_workspace *ws);

/* Forward. x: [B, 3, H, W] float32 NCHW. training: BN batch stats, dropout and drop path drawn from
 * rng. logits: [B, K, ceil(H/4), ceil(W/4)] NCHW (may be NULL; the workspace keeps them). */
ls_status ls_model_forward(ls_model *model, ls_workspace *ws, const float *x, int training,
                           ls_rng *rng, float *logits, ls_error *err);
/* Cross-entropy (HF semantics): logits upsampled bilinearly (align_corners=False) to the label
 * size lh x lw, mean over non-ignored pixels. All-ignore gives loss 0 and zero gradient.
 * Stores d(loss)/d(logits) in the workspace for ls_model_backward. */
ls_status ls_model_loss(ls_model *model, ls_workspace *ws, const uint8_t *labels, int lh, int lw,
                        float *loss, ls_error *err);
/* Backward from the stored loss gradient; gradients are accumulated into ls_model_grads. */
ls_status ls_model_backward(ls_model *model, ls_workspace *ws, ls_error *err);
void ls_model_zero_grad(ls_model *model);

/* Head-averaged attention of one query token (index y*w + x on the stage's grid) over the
 * reduced key grid (hr x wr), from the last forward: softmax(q k^T / sqrt(d)) recomputed from the
 * kept queries and keys, so it works after a chunked inference forward. out holds hr*wr floats. */
ls_status ls_attention_map(const ls_model *model, const ls_workspace *ws, int stage, int block,
                           int sample, int query, float *out, int *hr, int *wr, ls_error *err);
/* Token grid (h x w) and reduced key grid (hr x wr) of a stage (0..3) in this workspace. */
void ls_workspace_stage_grid(const ls_workspace *ws, int stage, int *h, int *w, int *hr, int *wr);

/* Logits of the last forward, NHWC [B, h4, w4, K]. */
const float *ls_workspace_logits(const ls_workspace *ws, int *h4, int *w4);

/* ------------------------------------------------------------------------------------------ */
/* Optimiser (src/optim.c)                                                                     */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    float lr;            /* base learning rate (6e-5 in the official recipe) */
    float head_lr_mult;  /* 10 */
    float weight_decay;  /* 0.01 */
    float beta1, beta2, eps;
    long warmup_iters;
    float warmup_ratio;  /* 1e-6 */
    long max_iters;      /* poly decay to 0 at max_iters */
    float power;         /* 1.0 */
} ls_adamw_config;

typedef struct {
    ls_adamw_config cfg;
    float *m, *v;        /* same layout as the model's flat weights */
    long step;           /* steps taken */
} ls_adamw;

ls_adamw_config ls_adamw_default(void);
ls_status ls_adamw_init(ls_adamw *opt, const ls_model *model, const ls_adamw_config *cfg,
                        ls_error *err);
/* mmcv poly schedule with linear warm-up, for iteration it (0-based). */
float ls_lr_at(const ls_adamw_config *cfg, long it);
/* One AdamW step (PyTorch semantics) with parameter groups. */
void ls_adamw_step(ls_adamw *opt, ls_model *model);
void ls_adamw_free(ls_adamw *opt);

/* ------------------------------------------------------------------------------------------ */
/* Inference helpers (src/infer.c)                                                             */
/* ------------------------------------------------------------------------------------------ */

/* How a model expects its input: resized to width x height, v/255, then (v - mean) / std.
 * From the model's metadata ("input_size", "image_mean", "image_std"); HF defaults otherwise
 * (512 x 512, ImageNet mean and std). */
typedef struct {
    int width, height;
    float mean[3], std[3];
} ls_preproc;

void ls_model_preproc(const ls_model *model, ls_preproc *pp);

/* Segments one image: preprocess, eval forward, logits upsampled once bilinearly
 * (align_corners=False) to the image size, argmax. mask becomes img->w x img->h. probs (optional)
 * receives a malloc'd [h*w*K] array of softmax probabilities. */
ls_status ls_segment_image(ls_model *model, const ls_image *img, ls_mask *mask, float **probs,
                           ls_error *err);

/* Large fields. The model learned from images that hold about one white cell; a field with
 * many cells, shrunk whole onto the model's input, shows it cells far smaller than it knows.
 * A window is a square of `window` image pixels that should frame one cell as the training
 * images did (120 for Dataset 1's magnification, 300 for Dataset 2's); each is resized onto the
 * model's input on its own. window <= 0, or one at least as large as the image, means the whole
 * image as one window. */
typedef struct {
    int x, y, w, h;
} ls_rect;

/* The window of `window` pixels centred on (cx, cy), shifted to lie inside the image; along a
 * side no longer than the window it covers the whole side. */
ls_rect ls_window_around(const ls_image *img, int window, double cx, double cy);
/* Copies rectangle r of img (which must lie inside it) into out. */
ls_status ls_image_crop(const ls_image *img, ls_rect r, ls_image *out, ls_error *err);
/* ls_segment_image over half-overlapping windows: each window's class probabilities are
 * blended into the field with a tent weight (1 at the window's centre, 0.1 at its edges), then
 * argmax. probs (optional) receives the blended probabilities [h*w*K]. */
ls_status ls_segment_windows(ls_model *model, const ls_image *img, int window, ls_mask *mask,
                             float **probs, ls_error *err);

/* Argmax over K channels of NHWC logits/probabilities [n, K] into labels [n]. */
void ls_argmax(const float *scores, size_t n, int k, uint8_t *labels);

/* ------------------------------------------------------------------------------------------ */
/* Cells and differential count (src/cells.c, src/celltype.c)                                  */
/* ------------------------------------------------------------------------------------------ */

/* White-cell types of the class-label CSVs: 1 neutrophil, 2 lymphocyte, 3 monocyte,
 * 4 eosinophil, 5 basophil; 0 is "unidentified" (classifier confidence below the threshold). */
#define LS_CELL_TYPES 5
/* Mask class of the nucleus; every class >= 1 (except LS_IGNORE) is part of a cell. */
#define LS_NUCLEUS_CLASS 2

typedef struct {
    int min_area;      /* instances below this many pixels are specks: dropped and counted */
    double neck_ratio; /* two watershed regions stay apart while the widest contact between them
                          (distance-transform saddle) is below neck_ratio x the smaller region's
                          peak distance (its inscribed radius) */
    int lobe_open;     /* half-width (px) of the square opening before nucleus lobes are counted */
    int window;        /* ls_cells_analyze: side of the windows of a large field (see
                          ls_segment_windows); 0 = the whole image as one */
} ls_cell_params;

/* min_area 100, neck_ratio 0.7, lobe_open 1, window 0. */
ls_cell_params ls_cell_params_default(void);

typedef struct {
    long area;          /* pixels of the cell, cytoplasm and nucleus */
    long nucleus_area;
    double nc_ratio;    /* nucleus_area / cytoplasm pixels (a cytoplasm of 0 counts as 1) */
    int lobes;          /* 8-connected nucleus components after the opening */
    double perimeter;   /* Crofton estimate over 4 directions (a digital disc gives 2 pi r) */
    double circularity; /* 4 pi area / perimeter^2: about 1 for a disc, lower for rough shapes */
    int bbox_x, bbox_y, bbox_w, bbox_h;
    double cx, cy;      /* centroid, pixel units (x right, y down) */
    int border;         /* 1: touches the image border, so it may be cut */
    int predicted;      /* most likely type 1..5; 0 until classified */
    int type;           /* predicted, or 0 (unidentified) when confidence < threshold */
    double confidence;  /* the largest softmax probability */
    float probs[LS_CELL_TYPES];
} ls_cell;

typedef struct {
    int w, h;
    int32_t *labels;    /* w*h: 0 background or speck, i + 1 for cells[i] */
    ls_cell *cells;
    int n;
    int specks;         /* instances dropped for area < min_area */
    long speck_pixels;
    int anucleate;      /* instances of at least min_area dropped for having no nucleus pixel */
    long anucleate_pixels;
} ls_cells;

/* Cell instances of a class mask. Foreground is every class >= 1 with 8-connectivity. Seeds are
 * the 8-connected nucleus components (a component without nucleus gets one seed at its
 * distance-transform maximum); a marker watershed on the Euclidean distance to the background
 * (outside the image counts as background) splits touching cells at their necks. Regions of one
 * cell (the fragments of a lobed nucleus) are merged again: neighbours whose saddle reaches
 * neck_ratio of the smaller peak, then remaining regions below min_area into the neighbour with
 * the widest contact. A region without any nucleus pixel is not a white cell and is dropped
 * (counted in anucleate). Cells are numbered in raster order of their first pixel and measured;
 * type fields stay 0 (see ls_cells_classify). */
ls_status ls_cells_find(const ls_mask *mask, const ls_cell_params *params, ls_cells *cells,
                        ls_error *err);
/* Merges cells: cell i joins cell into[i] (into[i] == i keeps it; a target must keep itself).
 * The cells are renumbered in raster order and measured again; type fields are reset to 0. */
ls_status ls_cells_merge(ls_cells *cells, const ls_mask *mask, const ls_cell_params *params,
                         const int *into, ls_error *err);
void ls_cells_free(ls_cells *cells);

/* "unidentified", "neutrophil", ..., "basophil" for 0..5; "?" otherwise. */
const char *ls_cell_type_name(int type);

/* Extra named tensors carried in the model file (the cell classifier); set copies the array,
 * replacing a tensor of the same name. get returns NULL when absent. */
ls_status ls_model_set_extra(ls_model *model, const char *name, const ls_array *a, ls_error *err);
const ls_array *ls_model_get_extra(const ls_model *model, const char *name);

/* Cell features: masked average pooling of each encoder stage's output at that stage's grid
 * (the cell mask resampled by area), sum(hidden) values, then 57 hand-crafted ones: morphology
 * relative to the cell (log area, nucleus fraction, N/C ratio, lobes, circularity, solidity of
 * cell and nucleus, nucleus circularity, axis ratio, components, thickness, offset), colour of
 * nucleus and cytoplasm as optical density against the image's background white point (means,
 * spreads, shares, texture, quantiles, redness), background OD and white point, mean RGB. The
 * "cell_classifier" metadata lists them. */
int ls_cell_feature_count(const ls_model *model);
int ls_model_has_cell_classifier(const ls_model *model);

/* Segments img, finds and measures its cells and classifies them with the model's classifier
 * (threshold < 0: the one stored with it). mask (may be NULL) receives the predicted class
 * mask, features (may be NULL) a malloc'd [cells->n, F] array. Without a classifier the cells
 * are found and measured but left unclassified.
 * With params->window set, the field is segmented over windows (ls_segment_windows), and each
 * cell is typed from the window centred on it (ls_window_around) analysed as an image of its
 * own, as the classifier's training images were: the cell of that window that holds most of
 * the field cell's pixels gives the features (a cell the window does not find again takes
 * encoder features pooled from that window and the rest from the field). */
ls_status ls_cells_analyze(ls_model *model, const ls_image *img, const ls_cell_params *params,
                           double threshold, ls_mask *mask, ls_cells *cells, float **features,
                           ls_error *err);

/* Signs that the window setting does not fit an analysed image (bits; 0 when none):
 * - LS_FIELD_LARGE: no window, and the image's longer side is over 2.5 times the model's input
 *   side, larger than the images such a model learns from: a field of many cells is likely;
 * - LS_FIELD_SMALL_CELLS: no window, and of two or more cells not cut by the border most are
 *   under a quarter of the image side across (training images' cells fill 35-70% of it);
 * - LS_FIELD_WINDOW_MISMATCH: a window, and the median cell (equivalent diameter) is under 0.2
 *   or over 0.95 times its side, where training images frame cells at 0.3-0.7.
 * None of them proves an error; each is a reason to look at the overlay. */
#define LS_FIELD_LARGE 1
#define LS_FIELD_SMALL_CELLS 2
#define LS_FIELD_WINDOW_MISMATCH 4
int ls_field_check(const ls_model *model, const ls_image *img, const ls_cells *cells, int window);
/* One sentence on a warning bit of ls_field_check, with what to do. */
const char *ls_field_warning(int bit);

/* Features of the cells of a given mask (e.g. ground truth) with the model's encoder run on img.
 * features: malloc'd [cells->n, F]. */
ls_status ls_cells_features(ls_model *model, const ls_image *img, const ls_mask *mask,
                            const ls_cells *cells, float **features, ls_error *err);

/* Fits the classifier: softmax regression on standardised features, L2 1e-2 (pooled encoder
 * features penalised more), class weights n / (5 n_c) capped at 10, L-BFGS with backtracking.
 * types are 1..5; all cells form one domain (see ls_celltype_train). Stores
 * cell_classifier.{weight [5, F], bias [5], feature_mean [F], feature_std [F], domain_mean and
 * domain_std [K, F] or [F]} and the "cell_classifier" metadata in the model. */
ls_status ls_celltype_fit(ls_model *model, const float *features, const int *types, int n,
                          ls_error *err);
/* Classifies n cells from their features with the model's classifier. */
ls_status ls_cells_classify(const ls_model *model, const float *features, double threshold,
                            ls_cells *cells, ls_error *err);

/* Trains the classifier on the labelled samples of a dataset (ls_sample.cell_type 1..5): in each
 * of the 8 dihedral views of an image (ls_dihedral) two rows, the largest cell of the model's
 * predicted mask (as count --eval scores it) and the largest ground-truth cell (when the sample
 * has a mask). Each source folder is a domain whose features are normalised by their per-type
 * centre and within-type spread; a cell to classify takes the domain nearest by its
 * image-background features. */
ls_status ls_celltype_train(ls_model *model, const ls_dataset *train, ls_error *err);

/* Options of the classifier's training. views: the first 1..8 dihedral views of each image
 * (8, all of them, by default). cv_folds >= 2 first cross-validates the recipe: cv_repeats
 * times, each domain's labelled images are dealt out to cv_folds folds in an order drawn from
 * cv_seed; each fold's images (all their views and rows) are held out, the classifier is fitted
 * on the rest and types the held-out images' predicted cells of the unrotated view, as
 * count --eval does (an image where no cell is found counts as wrong). An image listed twice in
 * train is used once. cv_folds 0: no cross-validation. */
typedef struct {
    int views;
    int cv_folds, cv_repeats;
    uint64_t cv_seed;
} ls_celltype_options;
/* views 8, cv_folds 0, cv_repeats 4, cv_seed 1. */
ls_celltype_options ls_celltype_options_default(void);

#define LS_CV_MAX_DOMAINS 16
typedef struct {
    int domains;                              /* image folders, in order of appearance */
    char domain_names[LS_CV_MAX_DOMAINS][512]; /* each folder's path */
    /* [domain][truth][predicted], summed over the repeats */
    int confusion[LS_CV_MAX_DOMAINS][LS_CELL_TYPES][LS_CELL_TYPES];
    int no_cell[LS_CV_MAX_DOMAINS];           /* held-out images where no cell was found */
} ls_cell_cv;
/* ls_celltype_train with options; the cross-validation, when asked for, goes into cv before the
 * final fit on all the samples (the features are computed once for both). */
ls_status ls_celltype_train_opts(ls_model *model, const ls_dataset *train,
                                 const ls_celltype_options *opt, ls_cell_cv *cv, ls_error *err);

#ifdef __cplusplus
}
#endif
#endif
