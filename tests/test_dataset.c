/* Datasets: layout detection, the fixed split, cell types, level maps, size checks, and the real
 * segmentation_WBC folder ($LEUKOSEG_DATA). */
#include "leukoseg.h"
#include "testutil.h"

#include <dirent.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


static char tmpdir[64];

static const char *tpath(const char *name)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

/* Removes what the tests wrote (two levels of folders at most). */
static void remove_tree(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[1024];
    while (d && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (depth < 3 && stat(p, &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(p, depth + 1);
        else remove(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

static void mkdirs(const char *rel)
{
    CHECK(mkdir(tpath(rel), 0755) == 0);
}

static void write_text(const char *rel, const char *text)
{
    FILE *f = fopen(tpath(rel), "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* A w x h RGB image and a w x h gray mask of value v. */
static void write_pair(const char *img_rel, int w, int h, const char *mask_rel, int mw, int mh,
                       uint8_t v)
{
    ls_error err = {""};
    uint8_t *px = calloc((size_t)w * (size_t)h * 3, 1), *m = malloc((size_t)mw * (size_t)mh);
    memset(m, v, (size_t)mw * (size_t)mh);
    char ip[512];
    snprintf(ip, sizeof ip, "%s", tpath(img_rel));
    CHECK_OK(ls_png_write_rgb(ip, px, w, h, &err), err);
    if (mask_rel) CHECK_OK(ls_png_write_gray(tpath(mask_rel), m, mw, mh, &err), err);
    free(px);
    free(m);
}

/* A w x h gray mask whose pixels cycle through the n values lv. */
static void write_cycle_mask(const char *rel, int w, int h, const uint8_t *lv, int n)
{
    ls_error err = {""};
    uint8_t *m = malloc((size_t)w * (size_t)h);
    for (int i = 0; i < w * h; i++) m[i] = lv[i % n];
    CHECK_OK(ls_png_write_gray(tpath(rel), m, w, h, &err), err);
    free(m);
}

static const uint8_t wbc_levels[3] = {0, 128, 255}, binary_levels[2] = {0, 255};

/* A w x h black 24-bit BMP (rows padded to 4 bytes). */
static void write_bmp(const char *rel, int w, int h)
{
    size_t row = ((size_t)w * 3 + 3) / 4 * 4, size = 54 + row * (size_t)h;
    uint8_t *b = calloc(size, 1);
    uint32_t fields[][2] = {{2, (uint32_t)size}, {10, 54}, {14, 40}, {18, (uint32_t)w},
                            {22, (uint32_t)h}};
    b[0] = 'B';
    b[1] = 'M';
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        uint8_t *at = b + fields[i][0];
        for (int k = 0; k < 4; k++) at[k] = (uint8_t)(fields[i][1] >> 8 * k);
    }
    b[26] = 1;  /* planes */
    b[28] = 24; /* bits per pixel */
    FILE *f = fopen(tpath(rel), "wb");
    CHECK(f && fwrite(b, 1, size, f) == size);
    if (f) fclose(f);
    free(b);
}

static int count_split(const char *root, ls_split split)
{
    ls_dataset ds = {0};
    ls_error err = {""};
    ls_status st = ls_dataset_add(&ds, root, split, NULL, &err);
    if (st != LS_OK) fprintf(stderr, "ls_dataset_add(%s): %s\n", root, err.msg);
    int n = st == LS_OK ? ds.n : -1;
    ls_dataset_free(&ds);
    return n;
}

static void test_real_dataset(void)
{
    struct stat st;
    if (stat(tu_wbc("/Dataset 1"), &st) != 0) {
        fprintf(stderr, "%s is absent: set LEUKOSEG_DATA to the segmentation_WBC folder\n",
                tu_wbc(""));
        CHECK(!"real dataset present");
        return;
    }
    /* Dataset 1 (300) + Dataset 2 (80 public): 60+20 test, 60+20 val, 180+40 train. */
    CHECK(count_split(tu_wbc(""), LS_SPLIT_TEST) == 80);
    CHECK(count_split(tu_wbc(""), LS_SPLIT_VAL) == 80);
    CHECK(count_split(tu_wbc(""), LS_SPLIT_TRAIN) == 220);
    CHECK(count_split(tu_wbc(""), LS_SPLIT_ALL) == 380);

    ls_dataset ds = {0};
    ls_error err = {""};
    CHECK_OK(ls_dataset_add(&ds, tu_wbc(""), LS_SPLIT_ALL, NULL, &err), err);
    CHECK(ds.num_classes == 3 && ds.levels.num_levels == 3 && ds.levels.snap == 1);
    CHECK(ds.levels.levels[0] == 0 && ds.levels.levels[1] == 128 && ds.levels.levels[2] == 255);
    CHECK(ds.levels.ignore_value == -1);
    CHECK(strcmp(ds.class_names[0], "background") == 0);
    CHECK(strcmp(ds.class_names[2], "nucleus") == 0);
    CHECK(ds.n == 380);
    /* Every image has a label row and the masks hold all three levels: nothing to note. */
    CHECK(ds.notes[0] == 0);
    if (ds.n != 380) {
        ls_dataset_free(&ds);
        return;
    }
    /* Sorted by source, then id; Dataset 1 is source 0. */
    ls_sample *s0 = &ds.samples[0];
    CHECK(s0->source == 0 && s0->id == 1 && strcmp(s0->stem, "001") == 0 && s0->cell_type == 2);
    CHECK(strcmp(s0->image_path, tu_wbc("/Dataset 1/001.bmp")) == 0);
    CHECK(s0->mask_path && strcmp(s0->mask_path, tu_wbc("/Dataset 1/001.png")) == 0);
    int types[6] = {0}, sources[2] = {0}, sorted = 1, i034 = -1;
    for (int i = 0; i < ds.n; i++) {
        ls_sample *s = &ds.samples[i];
        if (s->source == 0 && s->cell_type >= 0 && s->cell_type <= 5) types[s->cell_type]++;
        if (s->source >= 0 && s->source <= 1) sources[s->source]++;
        if (i && (s->source < s[-1].source || (s->source == s[-1].source && s->id <= s[-1].id)))
            sorted = 0;
        if (s->source == 1 && strcmp(s->stem, "034") == 0) i034 = i;
    }
    CHECK(sources[0] == 300 && sources[1] == 80 && sorted);
    /* The published Dataset 1 label counts. */
    CHECK(types[1] == 176 && types[2] == 53 && types[3] == 48 && types[4] == 22 && types[5] == 1);
    CHECK(types[0] == 0);

    ls_image img;
    ls_mask m;
    long snapped = -1;
    CHECK_OK(ls_dataset_load(&ds, 0, &img, &m, &snapped, &err), err);
    CHECK(img.w == 120 && img.h == 120 && m.w == 120 && m.h == 120 && snapped == 0);
    int present[3] = {0};
    for (int i = 0; m.data && i < m.w * m.h; i++) {
        if (m.data[i] < 3) present[m.data[i]] = 1;
    }
    CHECK(present[0] && present[1] && present[2]);
    ls_image_free(&img);
    ls_mask_free(&m);
    /* Dataset 2/034.png holds stray levels that snap (and are counted). */
    CHECK(i034 >= 0);
    if (i034 >= 0) {
        CHECK_OK(ls_dataset_load(&ds, i034, &img, &m, &snapped, &err), err);
        CHECK(img.w == 300 && img.h == 300 && snapped > 0);
        ls_image_free(&img);
        ls_mask_free(&m);
    }
    ls_dataset_free(&ds);
    CHECK(ds.n == 0 && ds.samples == NULL);

    /* One "Dataset N" folder, its CSV found in the parent; a second folder gets source 1. */
    CHECK_OK(ls_dataset_add(&ds, tu_wbc("/Dataset 1/"), LS_SPLIT_TEST, NULL, &err), err);
    CHECK(ds.n == 60 && ds.samples[0].cell_type == 2 && ds.samples[0].id == 1);
    CHECK_OK(ls_dataset_add(&ds, tu_wbc("/Dataset 2"), LS_SPLIT_TEST, NULL, &err), err);
    CHECK(ds.n == 80 && ds.samples[79].source == 1 && ds.samples[59].source == 0);
    CHECK(ds.notes[0] == 0);
    ls_dataset_free(&ds);
}

/* Split lists against the real folders: every name must match an image (the reviewer's list
 * 001, 999, 00l used to evaluate 1 image). */
static void test_real_split_lists(void)
{
    struct stat st;
    if (stat(tu_wbc("/Dataset 1"), &st) != 0) return; /* test_real_dataset reports it */
    ls_dataset ds = {0};
    ls_error err = {""};
    char list[512];
    snprintf(list, sizeof list, "%s", tpath("typos.txt"));
    write_text("typos.txt", "001\n999\n00l\n");
    CHECK(ls_dataset_add(&ds, tu_wbc("/Dataset 1"), LS_SPLIT_ALL, list, &err) == LS_ERR_ARG);
    CHECK(strstr(err.msg, "typos.txt:2: '999' matches no image") && strstr(err.msg, "Dataset 1")
          && strstr(err.msg, "2 listed name(s)"));
    CHECK(ds.n == 0);
    /* A folder prefix: its own name, or a subfolder of the segmentation_WBC root. A line for
     * Dataset 2 is left alone when only Dataset 1 is added (eval --data D1 --data D2). */
    write_text("typos.txt", "Dataset 1/001\nDataset 2/041\n");
    CHECK_OK(ls_dataset_add(&ds, tu_wbc("/Dataset 1"), LS_SPLIT_ALL, list, &err), err);
    CHECK(ds.n == 1 && ds.samples[0].id == 1);
    ls_dataset_free(&ds);
    CHECK_OK(ls_dataset_add(&ds, tu_wbc(""), LS_SPLIT_ALL, list, &err), err);
    CHECK(ds.n == 2 && ds.samples[1].id == 41 && ds.samples[1].source == 1);
    ls_dataset_free(&ds);
    /* Inside the root, a subfolder's stem that does not exist is an error too. */
    write_text("typos.txt", "Dataset 1/001\nDataset 2/999\n");
    CHECK(ls_dataset_add(&ds, tu_wbc(""), LS_SPLIT_ALL, list, &err) == LS_ERR_ARG);
    CHECK(strstr(err.msg, "typos.txt:2: 'Dataset 2/999'") != NULL);
    ls_dataset_free(&ds);
}

/* images/ + masks/ in a folder whose name has spaces; numeric stems 1, 2, 3, 6, 7, 11. */
static void test_images_masks(void)
{
    mkdirs("my data");
    mkdirs("my data/images");
    mkdirs("my data/masks");
    static const char *const stems[] = {"1", "2", "3", "6", "7", "11"};
    char a[64], b[64];
    for (int i = 0; i < 6; i++) {
        snprintf(a, sizeof a, "my data/images/%s.png", stems[i]);
        snprintf(b, sizeof b, "my data/masks/%s.png", stems[i]);
        write_pair(a, 4, 3, b, 4, 3, i == 5 ? 130 : 128);
    }
    /* Without a classes.txt the folder as a whole must hold every segmentation_WBC level. */
    write_cycle_mask("my data/masks/1.png", 4, 3, wbc_levels, 3);
    ls_dataset ds = {0};
    ls_error err = {""};
    CHECK_OK(ls_dataset_add(&ds, tpath("my data"), LS_SPLIT_TEST, NULL, &err), err);
    CHECK(ds.n == 3);
    if (ds.n == 3) {
        /* Numeric order, not text order: 1, 6, 11. */
        CHECK(ds.samples[0].id == 1 && ds.samples[1].id == 6 && ds.samples[2].id == 11);
        CHECK(ds.samples[0].cell_type == 0 && ds.samples[0].source == 0);
    }
    /* Default levels are segmentation_WBC's, snapping on. */
    CHECK(ds.num_classes == 3 && ds.levels.levels[1] == 128 && ds.levels.snap == 1);
    ls_image img;
    ls_mask m;
    long snapped = -1;
    CHECK_OK(ls_dataset_load(&ds, 2, &img, &m, &snapped, &err), err);
    CHECK(m.data && m.data[0] == 1 && snapped == 12);
    ls_image_free(&img);
    ls_mask_free(&m);
    CHECK(ls_dataset_load(&ds, 3, &img, &m, &snapped, &err) == LS_ERR_ARG);
    ls_dataset_free(&ds);
    CHECK_OK(ls_dataset_add(&ds, tpath("my data"), LS_SPLIT_VAL, NULL, &err), err);
    CHECK(ds.n == 2 && ds.samples[0].id == 2 && ds.samples[1].id == 7);
    ls_dataset_free(&ds);
    CHECK(count_split(tpath("my data"), LS_SPLIT_TRAIN) == 1);

    /* Input case 6: a 300x400 image with a 301x402 mask names both files and sizes. */
    write_pair("my data/images/16.png", 300, 400, "my data/masks/16.png", 301, 402, 0);
    CHECK_OK(ls_dataset_add(&ds, tpath("my data"), LS_SPLIT_TEST, NULL, &err), err);
    CHECK(ds.n == 4 && strcmp(ds.samples[3].stem, "16") == 0);
    CHECK(ls_dataset_load(&ds, 3, &img, &m, &snapped, &err) == LS_ERR_SHAPE);
    CHECK(strstr(err.msg, "images/16.png") && strstr(err.msg, "masks/16.png"));
    CHECK(strstr(err.msg, "300x400") && strstr(err.msg, "301x402"));
    CHECK(img.data == NULL && m.data == NULL);
    ls_dataset_free(&ds);

    /* A stem that is no number cannot take part in the fixed split... */
    write_pair("my data/images/abc.png", 2, 2, "my data/masks/abc.png", 2, 2, 0);
    CHECK(ls_dataset_add(&ds, tpath("my data"), LS_SPLIT_TRAIN, NULL, &err) == LS_ERR_ARG);
    CHECK(strstr(err.msg, "abc") && strstr(err.msg, "split file") && ds.n == 0);
    /* ...but is fine with "all" or a split file (which may name stems or folder/stem). */
    CHECK(count_split(tpath("my data"), LS_SPLIT_ALL) == 8);
    /* A name that matches no image is an error naming the list, the line and the name. */
    write_text("split list.txt", "abc\n\n7\r\nno-such\n");
    char list[512];
    snprintf(list, sizeof list, "%s", tpath("split list.txt"));
    CHECK(ls_dataset_add(&ds, tpath("my data"), LS_SPLIT_TRAIN, list, &err) == LS_ERR_ARG);
    CHECK(strstr(err.msg, "split list.txt:4: 'no-such' matches no image") && ds.n == 0);
    /* Comments and blank lines name nothing; the folder's own name may prefix a stem; a line for
     * another folder (of another --data in the same run) is left to that folder. */
    write_text("split list.txt", "abc\n\n# picked by hand\n7\r\nmy data/2\nother data/5\n");
    CHECK_OK(ls_dataset_add(&ds, tpath("my data"), LS_SPLIT_TRAIN, list, &err), err);
    CHECK(ds.n == 3 && ds.samples[0].id == 2 && ds.samples[1].id == 7);
    CHECK(ds.n == 3 && strcmp(ds.samples[2].stem, "abc") == 0);
    ls_dataset_free(&ds);

    /* An image without a mask is kept without one; a mask without an image is an error. */
    write_pair("my data/images/21.png", 2, 2, NULL, 2, 2, 0);
    CHECK_OK(ls_dataset_add(&ds, tpath("my data"), LS_SPLIT_ALL, NULL, &err), err);
    CHECK(ds.n == 9);
    for (int i = 0; i < ds.n; i++) {
        if (strcmp(ds.samples[i].stem, "21") != 0) continue;
        CHECK(ds.samples[i].mask_path == NULL);
        CHECK_OK(ls_dataset_load(&ds, i, &img, &m, &snapped, &err), err);
        CHECK(img.w == 2 && m.data == NULL);
        ls_image_free(&img);
    }
    ls_dataset_free(&ds);
    write_pair("my data/masks/99.png", 2, 2, NULL, 2, 2, 0);
    CHECK(ls_dataset_add(&ds, tpath("my data"), LS_SPLIT_ALL, NULL, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "99.png") != NULL);
    remove(tpath("my data/masks/99.png"));

    /* classes.txt declares levels (exact, no snapping), names and an ignore value. */
    write_text("my data/classes.txt", "# binary masks\n0 background\n128 cell\nignore 255\n");
    CHECK_OK(ls_dataset_add(&ds, tpath("my data"), LS_SPLIT_ALL, NULL, &err), err);
    CHECK(ds.num_classes == 2 && ds.levels.levels[1] == 128 && ds.levels.snap == 0);
    CHECK(ds.levels.ignore_value == 255 && strcmp(ds.class_names[1], "cell") == 0);
    /* Sample "11" holds 130, which is no level now: an error naming file, value and count. */
    int i11 = -1;
    for (int i = 0; i < ds.n; i++) i11 = strcmp(ds.samples[i].stem, "11") == 0 ? i : i11;
    CHECK(i11 >= 0);
    if (i11 >= 0) {
        CHECK(ls_dataset_load(&ds, i11, &img, &m, &snapped, &err) == LS_ERR_FORMAT);
        CHECK(strstr(err.msg, "masks/11.png") && strstr(err.msg, "12 pixel(s) hold 1 value(s)")
              && strstr(err.msg, "130 (12 px)") && strstr(err.msg, "ignore value 255"));
    }
    ls_dataset_free(&ds);
}

/* Roboflow png-mask-semantic export. */
static void test_roboflow(void)
{
    static const char *const dirs[] = {"rf", "rf/train", "rf/valid", "rf/test"};
    for (int i = 0; i < 4; i++) mkdirs(dirs[i]);
    static const char *const classes = "Pixel Value, Class\n0, background\n1, cell\n";
    char a[96], b[96];
    for (int i = 1; i < 4; i++) {
        snprintf(a, sizeof a, "%s/_classes.csv", dirs[i]);
        write_text(a, classes);
        for (int k = 0; k < i; k++) {
            snprintf(a, sizeof a, "%s/img%d_jpg.rf.%d.png", dirs[i], k, i);
            snprintf(b, sizeof b, "%s/img%d_jpg.rf.%d_mask.png", dirs[i], k, i);
            write_pair(a, 3, 3, b, 3, 3, 1);
        }
    }
    ls_dataset ds = {0};
    ls_error err = {""};
    CHECK_OK(ls_dataset_add(&ds, tpath("rf"), LS_SPLIT_VAL, NULL, &err), err);
    CHECK(ds.n == 2 && ds.num_classes == 2 && ds.levels.snap == 0);
    CHECK(ds.levels.levels[0] == 0 && ds.levels.levels[1] == 1);
    CHECK(strcmp(ds.class_names[1], "cell") == 0);
    CHECK(ds.n == 2 && strstr(ds.samples[0].image_path, "rf/valid/img0_jpg.rf.2.png"));
    CHECK(ds.n == 2 && strstr(ds.samples[0].mask_path, "rf/valid/img0_jpg.rf.2_mask.png"));
    CHECK(ds.n == 2 && ds.samples[0].id == -1);
    ls_image img;
    ls_mask m;
    CHECK_OK(ls_dataset_load(&ds, 1, &img, &m, NULL, &err), err);
    CHECK(m.data && m.data[4] == 1);
    ls_image_free(&img);
    ls_mask_free(&m);
    /* A dataset keeps one level map: folders with other classes cannot join it. */
    struct stat st;
    if (stat(tu_wbc(""), &st) == 0) {
        CHECK(ls_dataset_add(&ds, tu_wbc(""), LS_SPLIT_TEST, NULL, &err) == LS_ERR_ARG);
        CHECK(strstr(err.msg, "3 classes") && ds.n == 2);
    }
    ls_dataset_free(&ds);
    CHECK(count_split(tpath("rf"), LS_SPLIT_TRAIN) == 1);
    CHECK(count_split(tpath("rf"), LS_SPLIT_TEST) == 3);
    CHECK(count_split(tpath("rf"), LS_SPLIT_ALL) == 6);
    /* Disagreeing class lists are an error. */
    write_text("rf/test/_classes.csv", "Pixel Value, Class\n0, background\n2, cell\n");
    CHECK(ls_dataset_add(&ds, tpath("rf"), LS_SPLIT_ALL, NULL, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "_classes.csv") != NULL);
}

/* Input case 1 at the dataset level: a folder of binary 0/255 masks with no classes.txt. */
static void test_binary_masks(void)
{
    mkdirs("bin");
    mkdirs("bin/images");
    mkdirs("bin/masks");
    char a[64], b[64];
    for (int i = 1; i <= 3; i++) {
        snprintf(a, sizeof a, "bin/images/%d.png", i);
        snprintf(b, sizeof b, "bin/masks/%d.png", i);
        write_pair(a, 4, 3, NULL, 4, 3, 0);
        write_cycle_mask(b, 4, 3, binary_levels, 2);
    }
    ls_dataset ds = {0};
    ls_error err = {""};
    CHECK(ls_dataset_add(&ds, tpath("bin"), LS_SPLIT_ALL, NULL, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "bin/masks: none of its 3 mask(s) holds cytoplasm (mask value 128)")
          && strstr(err.msg, "only the values 0 (18 px), 255 (18 px)")
          && strstr(err.msg, "bin/classes.txt") && strstr(err.msg, "'255 cell'"));
    CHECK(ds.n == 0);
    /* The folder is judged whole, whatever the split: the test split alone (image 1) fails... */
    CHECK(ls_dataset_add(&ds, tpath("bin"), LS_SPLIT_TEST, NULL, &err) == LS_ERR_FORMAT);
    /* ...and passes once another image of the folder holds cytoplasm, though image 1 has none. */
    write_cycle_mask("bin/masks/2.png", 4, 3, wbc_levels, 3);
    CHECK_OK(ls_dataset_add(&ds, tpath("bin"), LS_SPLIT_TEST, NULL, &err), err);
    CHECK(ds.n == 1 && ds.num_classes == 3 && ds.samples[0].id == 1);
    ls_dataset_free(&ds);
    /* Declared levels are taken as they stand. */
    write_cycle_mask("bin/masks/2.png", 4, 3, binary_levels, 2);
    write_text("bin/classes.txt", "0 background\n255 cell\n");
    CHECK_OK(ls_dataset_add(&ds, tpath("bin"), LS_SPLIT_ALL, NULL, &err), err);
    CHECK(ds.n == 3 && ds.num_classes == 2 && ds.levels.levels[1] == 255);
    ls_image img;
    ls_mask m;
    CHECK_OK(ls_dataset_load(&ds, 0, &img, &m, NULL, &err), err);
    CHECK(m.data && m.data[0] == 0 && m.data[1] == 1 && m.data[11] == 1);
    ls_image_free(&img);
    ls_mask_free(&m);
    /* Defect 5: a model of another class count; the message says what to do. */
    CHECK_OK(ls_dataset_check_classes(&ds, 2, "m.safetensors", &err), err);
    CHECK(ls_dataset_check_classes(&ds, 3, "m.safetensors", &err) == LS_ERR_SHAPE);
    CHECK(strstr(err.msg, "has 2 classes (background = mask value 0, cell = mask value 255)")
          && strstr(err.msg, "m.safetensors predicts 3") && strstr(err.msg, "leukoseg train")
          && strstr(err.msg, "classes.txt"));
    ls_dataset_free(&ds);
}

/* Masks are PNG; a JPEG mask is named and refused, not skipped as "no mask". */
static void test_mask_formats(void)
{
    mkdirs("jm");
    mkdirs("jm/images");
    mkdirs("jm/masks");
    write_pair("jm/images/a.png", 3, 3, NULL, 3, 3, 0);
    write_text("jm/masks/a.jpg", "not really a jpeg");
    ls_dataset ds = {0};
    ls_error err = {""};
    CHECK(ls_dataset_add(&ds, tpath("jm"), LS_SPLIT_ALL, NULL, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "jm/masks/a.jpg") && strstr(err.msg, "JPEG masks are not read")
          && strstr(err.msg, "lossy") && strstr(err.msg, "PNG"));
    remove(tpath("jm/masks/a.jpg"));
    write_text("jm/masks/a.tif", "tiff");
    CHECK(ls_dataset_add(&ds, tpath("jm"), LS_SPLIT_ALL, NULL, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "jm/masks/a.tif is not a PNG") != NULL);
    CHECK(ds.n == 0);
}

/* Writes "wbc/Dataset 7" with images 001..004 (masks of all three levels) once. */
static void make_dataset7(void)
{
    mkdirs("wbc");
    mkdirs("wbc/Dataset 7");
    char a[64], b[64];
    for (int i = 1; i <= 4; i++) {
        snprintf(a, sizeof a, "wbc/Dataset 7/%03d.bmp", i);
        snprintf(b, sizeof b, "wbc/Dataset 7/%03d.png", i);
        write_bmp(a, 3, 2);
        write_cycle_mask(b, 3, 2, wbc_levels, 3);
    }
}

/* Class-label CSVs: contradictions are errors, gaps and absences are notes naming the file. */
static void test_label_csv(void)
{
    make_dataset7();
    const char *csv = "wbc/Class Labels of Dataset 7.csv";
    ls_dataset ds = {0};
    ls_error err = {""};
    write_text(csv, "image ID,class label\n1,2\n3,1\n3,2\n");
    CHECK(ls_dataset_add(&ds, tpath("wbc"), LS_SPLIT_ALL, NULL, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "Class Labels of Dataset 7.csv:4: image ID 3 has type 2 here but type "
                 "1 on line 3"));
    write_text(csv, "image ID,class label\n1,2\n3,1\n3,1\n4,6\n");
    CHECK(ls_dataset_add(&ds, tpath("wbc"), LS_SPLIT_ALL, NULL, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "Dataset 7.csv:5: expected '<image id>,<cell type 1..5>', found '4,6'"));
    /* The same row twice is harmless; images 2 and 4 have no row: a note names them. */
    write_text(csv, "image ID,class label\r\n1,2\r\n3,1\r\n3,1\r\n");
    CHECK_OK(ls_dataset_add(&ds, tpath("wbc"), LS_SPLIT_ALL, NULL, &err), err);
    CHECK(ds.n == 4 && ds.num_classes == 3);
    if (ds.n == 4) {
        CHECK(ds.samples[0].cell_type == 2 && ds.samples[1].cell_type == 0);
        CHECK(ds.samples[2].cell_type == 1 && ds.samples[3].cell_type == 0);
    }
    CHECK(strstr(ds.notes, "Class Labels of Dataset 7.csv has no row for 2 of the 4 images "
                 "(002, 004)"));
    ls_dataset_free(&ds);
    /* A header alone: a note names the file and the format it should have. */
    write_text(csv, "image ID,class label\n");
    CHECK_OK(ls_dataset_add(&ds, tpath("wbc/Dataset 7"), LS_SPLIT_ALL, NULL, &err), err);
    CHECK(strstr(ds.notes, "Class Labels of Dataset 7.csv holds no label rows")
          && strstr(ds.notes, "'<image id>,<type>'") && strstr(ds.notes, "5 basophil"));
    ls_dataset_free(&ds);
    /* No CSV at all: the note names the path expected. */
    remove(tpath(csv));
    CHECK_OK(ls_dataset_add(&ds, tpath("wbc/Dataset 7"), LS_SPLIT_ALL, NULL, &err), err);
    CHECK(strstr(ds.notes, "wbc/Class Labels of Dataset 7.csv does not exist") != NULL);
    CHECK(ds.n == 4 && ds.samples[0].cell_type == 0);
    ls_dataset_free(&ds);
}

static void test_errors(void)
{
    ls_split s = LS_SPLIT_ALL;
    ls_error err = {""};
    CHECK_OK(ls_split_parse("valid", &s, &err), err);
    CHECK(s == LS_SPLIT_VAL);
    CHECK_OK(ls_split_parse("test", &s, &err), err);
    CHECK(s == LS_SPLIT_TEST);
    CHECK_OK(ls_split_parse("all", &s, &err), err);
    CHECK(s == LS_SPLIT_ALL);
    CHECK_OK(ls_split_parse("train", &s, &err), err);
    CHECK(s == LS_SPLIT_TRAIN);
    CHECK(ls_split_parse("validation", &s, &err) == LS_ERR_ARG);
    CHECK(strstr(err.msg, "validation") && strstr(err.msg, "train, val"));

    ls_dataset ds = {0};
    CHECK(ls_dataset_add(&ds, tpath("absent folder"), LS_SPLIT_ALL, NULL, &err) == LS_ERR_IO);
    CHECK(strstr(err.msg, "absent folder") != NULL);
    mkdirs("empty");
    CHECK(ls_dataset_add(&ds, tpath("empty"), LS_SPLIT_ALL, NULL, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "empty") && strstr(err.msg, "images/"));
    /* A plain folder of NNN.bmp + NNN.png without a CSV: cell types unknown. */
    mkdirs("plain");
    uint8_t bmp[58] = {'B', 'M', 58, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0, 40, 0, 0, 0, 1, 0, 0, 0,
                       1, 0, 0, 0, 1, 0, 24, 0};
    bmp[54] = 9;
    FILE *f = fopen(tpath("plain/011.bmp"), "wb");
    CHECK(f && fwrite(bmp, 1, sizeof bmp, f) == sizeof bmp);
    if (f) fclose(f);
    uint8_t zero = 0;
    CHECK_OK(ls_png_write_gray(tpath("plain/011.png"), &zero, 1, 1, &err), err);
    /* Its one mask holds only 0: read with segmentation_WBC's levels, two classes would vanish. */
    CHECK(ls_dataset_add(&ds, tpath("plain"), LS_SPLIT_TEST, NULL, &err) == LS_ERR_FORMAT);
    CHECK(strstr(err.msg, "cytoplasm (mask value 128)") && strstr(err.msg, "0 (1 px)"));
    /* A classes.txt declares its levels (this layout reads one too). */
    write_text("plain/classes.txt", "0 background\n255 cell\n");
    CHECK_OK(ls_dataset_add(&ds, tpath("plain"), LS_SPLIT_TEST, NULL, &err), err);
    CHECK(ds.n == 1 && ds.samples[0].cell_type == 0 && ds.samples[0].id == 11);
    CHECK(ds.num_classes == 2 && strcmp(ds.class_names[1], "cell") == 0);
    /* No CSV can belong to a folder not named "Dataset N": a note says where labels come from. */
    CHECK(strstr(ds.notes, "plain: no cell-type labels")
          && strstr(ds.notes, "'Class Labels of Dataset N.csv'"));
    /* No test samples with a val split: an error rather than an empty dataset. */
    ls_dataset_free(&ds);
    CHECK(ls_dataset_add(&ds, tpath("plain"), LS_SPLIT_VAL, NULL, &err) == LS_ERR_ARG);
    CHECK(strstr(err.msg, "plain") && strstr(err.msg, "val"));
    char none[512];
    snprintf(none, sizeof none, "%s", tpath("none.txt"));
    CHECK(ls_dataset_add(&ds, tpath("plain"), LS_SPLIT_ALL, none, &err) == LS_ERR_IO);
    CHECK(strstr(err.msg, "none.txt") != NULL);
    CHECK(ds.n == 0);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/leukoseg_dataset_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_real_dataset();
    test_real_split_lists();
    test_images_masks();
    test_roboflow();
    test_binary_masks();
    test_mask_formats();
    test_label_csv();
    test_errors();
    remove_tree(tmpdir, 0);
    TEST_DONE();
}
