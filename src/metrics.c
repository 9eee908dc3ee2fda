/* Segmentation metrics from a confusion matrix, with mmseg's conventions: ignored ground-truth
 * pixels are dropped together with their predictions, a class absent from both ground truth and
 * prediction is excluded from the means (its values are NAN, shown as n/a), and a class that is
 * only predicted scores IoU 0.
 */
#include "leukoseg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ls_metrics holds 16 classes per array. */
#define LS_MAX_CLASSES 16

ls_status ls_confusion_init(ls_confusion *cm, int k, ls_error *err)
{
    cm->k = 0;
    cm->counts = NULL;
    if (k < 1 || k > LS_MAX_CLASSES)
        return ls_fail(err, LS_ERR_ARG, "number of classes %d is outside 1..%d", k,
                       LS_MAX_CLASSES);
    cm->counts = calloc((size_t)k * (size_t)k, sizeof *cm->counts);
    if (!cm->counts) return ls_fail(err, LS_ERR_NOMEM, "out of memory for a confusion matrix");
    cm->k = k;
    return LS_OK;
}

ls_status ls_confusion_add(ls_confusion *cm, const uint8_t *gt, const uint8_t *pred, size_t n,
                           ls_error *err)
{
    int k = cm->k;
    if (!cm->counts || (n > 0 && (!gt || !pred)))
        return ls_fail(err, LS_ERR_ARG, "confusion matrix not initialised or no label data");
    /* Validate first so a bad pair leaves the matrix unchanged. */
    for (size_t i = 0; i < n; i++) {
        if (gt[i] == LS_IGNORE) continue;
        if (gt[i] >= k || pred[i] >= k)
            return ls_fail(err, LS_ERR_ARG, "pixel %zu has ground truth %d and prediction %d, "
                           "but only classes 0..%d (and %d = ignore in ground truth) are valid",
                           i, gt[i], pred[i], k - 1, LS_IGNORE);
    }
    for (size_t i = 0; i < n; i++)
        if (gt[i] != LS_IGNORE) cm->counts[gt[i] * k + pred[i]]++;
    return LS_OK;
}

void ls_confusion_free(ls_confusion *cm)
{
    if (!cm) return;
    free(cm->counts);
    cm->counts = NULL;
    cm->k = 0;
}

static double ratio(double num, double den) { return den > 0 ? num / den : NAN; }

void ls_metrics_compute(const ls_confusion *cm, ls_metrics *m)
{
    memset(m, 0, sizeof *m);
    int k = cm->counts && cm->k >= 1 && cm->k <= LS_MAX_CLASSES ? cm->k : 0;
    m->k = k;
    for (int c = 0; c < LS_MAX_CLASSES; c++)
        m->iou[c] = m->dice[c] = m->precision[c] = m->recall[c] = NAN;

    uint64_t total = 0, trace = 0;
    uint64_t fg_tp = 0, fg_fp = 0, fg_fn = 0;
    double iou_sum = 0, acc_sum = 0;
    int n_present = 0, n_in_gt = 0;
    for (int c = 0; c < k; c++) {
        uint64_t row = 0, col = 0;
        for (int j = 0; j < k; j++) {
            row += cm->counts[c * k + j];
            col += cm->counts[j * k + c];
        }
        uint64_t tp = cm->counts[c * k + c];
        double fp = (double)(col - tp), fn = (double)(row - tp), t = (double)tp;
        total += row;
        trace += tp;
        m->present[c] = row + col > 0;
        if (!m->present[c]) continue;
        m->iou[c] = t / (t + fp + fn);
        m->dice[c] = 2 * t / (2 * t + fp + fn);
        m->precision[c] = ratio(t, t + fp);
        m->recall[c] = ratio(t, t + fn);
        iou_sum += m->iou[c];
        n_present++;
        /* Accuracy is recall, defined only for classes that occur in the ground truth. */
        if (row > 0) {
            acc_sum += m->recall[c];
            n_in_gt++;
        }
    }
    /* Whole cell: every class >= 1 counts as foreground against background class 0. */
    for (int g = 0; g < k; g++)
        for (int p = 0; p < k; p++) {
            uint64_t v = cm->counts[g * k + p];
            if (g >= 1 && p >= 1) fg_tp += v;
            else if (g >= 1) fg_fn += v;
            else if (p >= 1) fg_fp += v;
        }
    m->pixels = total;
    m->miou = n_present ? iou_sum / n_present : NAN;
    m->mean_accuracy = n_in_gt ? acc_sum / n_in_gt : NAN;
    m->pixel_accuracy = ratio((double)trace, (double)total);
    m->whole_cell_dice = ratio(2.0 * (double)fg_tp, 2.0 * (double)fg_tp + (double)fg_fp +
                                                        (double)fg_fn);
}
