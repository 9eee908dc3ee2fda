/* Metrics conventions with hand-computed values (input-cases.md, cases 14 and 15). */
#include "leukoseg.h"
#include "testutil.h"

#include <string.h>

static void compute(int k, const uint8_t *gt, const uint8_t *pred, size_t n, ls_metrics *m)
{
    ls_error err = {{0}};
    ls_confusion cm;
    CHECK_OK(ls_confusion_init(&cm, k, &err), err);
    CHECK_OK(ls_confusion_add(&cm, gt, pred, n, &err), err);
    ls_metrics_compute(&cm, m);
    ls_confusion_free(&cm);
}

/* Case 14: the ignore pixel is dropped with its prediction. */
static void test_miou_conventions(void)
{
    ls_metrics m;
    const uint8_t gt[] = {1, 1, 1, 0, 0, 255}, pred[] = {1, 1, 0, 1, 0, 1};
    compute(2, gt, pred, 6, &m);
    CHECK(m.k == 2 && m.pixels == 5);
    CHECK_NEAR(m.iou[1], 0.5, 1e-12);
    CHECK_NEAR(m.iou[0], 1.0 / 3.0, 1e-12);
    CHECK_NEAR(m.miou, 0.416667, 1e-6);
    CHECK_NEAR(m.pixel_accuracy, 0.6, 1e-12);
    CHECK_NEAR(m.dice[1], 2.0 * 2 / (2 * 2 + 1 + 1), 1e-12);
    CHECK_NEAR(m.dice[0], 2.0 / (2 + 1 + 1), 1e-12);
    CHECK_NEAR(m.precision[1], 2.0 / 3.0, 1e-12);
    CHECK_NEAR(m.recall[1], 2.0 / 3.0, 1e-12);
    CHECK_NEAR(m.precision[0], 0.5, 1e-12);
    CHECK_NEAR(m.recall[0], 0.5, 1e-12);
    CHECK_NEAR(m.mean_accuracy, (2.0 / 3.0 + 0.5) / 2, 1e-12);
    CHECK(m.present[0] && m.present[1]);

    /* A class absent from both is excluded: 3 classes, only 0 and 1 occur. */
    const uint8_t g2[] = {0, 0, 1, 1};
    compute(3, g2, g2, 4, &m);
    CHECK_NEAR(m.miou, 1.0, 0);
    CHECK_NEAR(m.mean_accuracy, 1.0, 0);
    CHECK(m.present[0] && m.present[1] && !m.present[2]);
    CHECK(isnan(m.iou[2]) && isnan(m.dice[2]) && isnan(m.precision[2]) && isnan(m.recall[2]));

    /* A class that is only predicted scores IoU 0, counts in mIoU, but not in mean accuracy. */
    const uint8_t g3[] = {0, 0, 0, 0}, p3[] = {0, 0, 0, 2};
    compute(3, g3, p3, 4, &m);
    CHECK(m.present[2] && !m.present[1]);
    CHECK_NEAR(m.iou[2], 0, 0);
    CHECK(isnan(m.recall[2]));
    CHECK_NEAR(m.precision[2], 0, 0);
    CHECK_NEAR(m.iou[0], 0.75, 1e-12);
    CHECK_NEAR(m.miou, 0.375, 1e-12);
    CHECK_NEAR(m.mean_accuracy, 0.75, 1e-12);
}

/* Case 15: a 100x100 mask with a 10x10 foreground predicted as all background. */
static void test_imbalance(void)
{
    static uint8_t gt[100 * 100], pred[100 * 100];
    for (int y = 0; y < 100; y++)
        for (int x = 0; x < 100; x++) gt[y * 100 + x] = (x >= 40 && x < 50 && y >= 20 && y < 30);
    ls_metrics m;
    compute(2, gt, pred, sizeof gt, &m);
    CHECK_NEAR(m.pixel_accuracy, 0.99, 1e-12);
    CHECK_NEAR(m.iou[1], 0, 0);
    CHECK_NEAR(m.iou[0], 0.99, 1e-12);
    CHECK_NEAR(m.miou, 0.495, 1e-12);
    CHECK_NEAR(m.dice[1], 0, 0);
    CHECK_NEAR(m.whole_cell_dice, 0, 0);
    CHECK_NEAR(m.mean_accuracy, 0.5, 1e-12);
}

/* Whole-cell Dice merges nucleus (2) and cytoplasm (1) against background (0): confusing the two
 * cell classes costs nothing there. gt = [0 0 1 1 2 2 1 0], pred = [0 1 2 1 2 1 0 0]:
 * cell TP = 4 (pixels 2..5), FP = 1 (pixel 1), FN = 1 (pixel 6) -> Dice 8/10. */
static void test_whole_cell_dice(void)
{
    const uint8_t gt[] = {0, 0, 1, 1, 2, 2, 1, 0}, pred[] = {0, 1, 2, 1, 2, 1, 0, 0};
    ls_metrics m;
    compute(3, gt, pred, 8, &m);
    CHECK_NEAR(m.whole_cell_dice, 0.8, 1e-12);
    CHECK_NEAR(m.pixel_accuracy, 4.0 / 8.0, 1e-12);
    /* Class 1: TP 1 (px 3), FP 2 (px 1, 5), FN 2 (px 2, 6). Class 2: TP 1, FP 1, FN 1. */
    CHECK_NEAR(m.iou[1], 1.0 / 5.0, 1e-12);
    CHECK_NEAR(m.dice[2], 2.0 / 4.0, 1e-12);
    CHECK_NEAR(m.iou[0], 2.0 / 4.0, 1e-12);

    /* No cell anywhere: Dice undefined (NaN), not 0 or 1. */
    const uint8_t z[] = {0, 0};
    compute(3, z, z, 2, &m);
    CHECK(isnan(m.whole_cell_dice));
}

static void test_accumulation_and_errors(void)
{
    ls_error err = {{0}};
    ls_confusion cm;
    CHECK(ls_confusion_init(&cm, 0, &err) == LS_ERR_ARG);
    CHECK(ls_confusion_init(&cm, 17, &err) == LS_ERR_ARG);
    CHECK_OK(ls_confusion_init(&cm, 2, &err), err);
    const uint8_t gt[] = {1, 1, 1, 0, 0, 255}, pred[] = {1, 1, 0, 1, 0, 1};
    /* Adding in two parts equals adding at once. */
    CHECK_OK(ls_confusion_add(&cm, gt, pred, 3, &err), err);
    CHECK_OK(ls_confusion_add(&cm, gt + 3, pred + 3, 3, &err), err);
    CHECK(cm.counts[0] == 1 && cm.counts[1] == 1 && cm.counts[2] == 1 && cm.counts[3] == 2);
    /* Out-of-range labels are errors that leave the matrix unchanged; pred at ignore is free. */
    const uint8_t bad_gt[] = {0, 2}, bad_pred[] = {0, 0}, ig_gt[] = {255}, ig_pred[] = {7};
    CHECK(ls_confusion_add(&cm, bad_gt, bad_pred, 2, &err) == LS_ERR_ARG);
    CHECK(strstr(err.msg, "pixel 1") != NULL);
    const uint8_t ok_gt[] = {0}, pred255[] = {255};
    CHECK(ls_confusion_add(&cm, ok_gt, pred255, 1, &err) == LS_ERR_ARG);
    CHECK_OK(ls_confusion_add(&cm, ig_gt, ig_pred, 1, &err), err);
    ls_metrics m;
    ls_metrics_compute(&cm, &m);
    CHECK(m.pixels == 5);
    CHECK_NEAR(m.miou, 5.0 / 12.0, 1e-12);
    ls_confusion_free(&cm);

    /* An empty matrix gives NaN means rather than a division by zero crash or 0. */
    CHECK_OK(ls_confusion_init(&cm, 3, &err), err);
    ls_metrics_compute(&cm, &m);
    CHECK(m.pixels == 0 && isnan(m.miou) && isnan(m.pixel_accuracy) && isnan(m.mean_accuracy));
    CHECK(!m.present[0] && !m.present[1] && !m.present[2]);
    ls_confusion_free(&cm);
}

int main(void)
{
    test_miou_conventions();
    test_imbalance();
    test_whole_cell_dice();
    test_accumulation_and_errors();
    TEST_DONE();
}
