#!/usr/bin/python3
"""Trial, not part of leukoseg: does fine-tuning the encoder on cell types help the classifier?

leukoseg's cell-type classifier is a softmax regression on encoder features pooled over each cell
(plus hand-crafted ones); the encoder itself learned only segmentation. This script asks whether
training the encoder on the types as well (segmentation loss + a linear type head on the pooled
features, backpropagated into the encoder) makes the pooled features better for the classifier.

It loads the shipped model into the independent PyTorch reference (tools/segformer_ref.py),
trains on the train split of both datasets (id % 5 not in {1, 2}; Dataset 2 drawn as often as
Dataset 1; random flips and quarter turns), and scores a softmax regression on the pooled
features alone (per-dataset standardisation, L-BFGS, three L2 weights) on the validation split
(id % 5 == 2), before fine-tuning and every 5 epochs. The test split is never read.

Usage: /usr/bin/python3 tools/trial_celltype_finetune.py [LAMBDA [EPOCHS]]  (defaults 1.0, 15;
about 8 minutes on 2 cores). Data: $LEUKOSEG_DATA or ../shared/data/segmentation_WBC.
"""
import csv
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import golden  # noqa: E402  (safetensors reader)
import segformer_ref as ref  # noqa: E402

ROOT = os.environ.get("LEUKOSEG_DATA",
                      os.path.join(HERE, "..", "..", "shared", "data", "segmentation_WBC"))
MODEL = os.path.join(HERE, "..", "models", "leukoseg-b0.safetensors")
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
SIZE = 128


def load(ds):
    """Labelled images of Dataset ds at SIZE: x [3,S,S] normalised, lab [S,S] 0/1/2, type 0..4."""
    labels = {}
    with open(f"{ROOT}/Class Labels of Dataset {ds}.csv") as f:
        rows = csv.reader(f)
        next(rows)
        for row in rows:
            if row and row[0].strip():
                labels[int(row[0])] = int(row[1]) - 1
    out = []
    folder = f"{ROOT}/Dataset {ds}"
    for fn in sorted(os.listdir(folder)):
        if not fn.endswith(".bmp") or int(fn[:-4]) not in labels:
            continue
        i = int(fn[:-4])
        im = Image.open(f"{folder}/{fn}").convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
        m = np.array(Image.open(f"{folder}/{fn[:-4]}.png").convert("L")
                     .resize((SIZE, SIZE), Image.NEAREST))
        lab = np.where(m > 191, 2, np.where(m > 64, 1, 0)).astype(np.int64)
        x = ((np.asarray(im, np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1)
        out.append(dict(ds=ds, id=i, x=x, lab=lab, t=labels[i]))
    return out


def make_model():
    m = ref.SegformerForSemanticSegmentation(ref.b0_config())
    w, _ = golden.st_read(MODEL)
    sd = {k: torch.from_numpy(np.array(v)) for k, v in w.items() if not k.startswith("cell_")}
    m.load_state_dict(sd, strict=False)
    return m


def view(x, lab, k):
    """Dihedral view k (0..7) of x [C,H,W] and lab [H,W]."""
    xt, lt = torch.as_tensor(x), torch.as_tensor(lab)
    if k & 4:
        xt, lt = xt.flip(-1), lt.flip(-1)
    return torch.rot90(xt, k & 3, (-2, -1)), torch.rot90(lt, k & 3, (-2, -1))


def pooled(feats, cell):
    """Masked average of each stage's features [B,C,h,w] over cell [B,H,W] -> [B, 512]."""
    out = []
    for f in feats:
        wgt = F.adaptive_avg_pool2d(cell[:, None], f.shape[-2:])
        out.append((f * wgt).sum((2, 3)) / wgt.sum((2, 3)).clamp_min(1e-6))
    return torch.cat(out, 1)


def extract(m, items, nviews):
    m.eval()
    feats, types, dss = [], [], []
    with torch.no_grad():
        for k in range(nviews):
            xs, cs = zip(*[view(e["x"], e["lab"], k) for e in items])
            xb, cb = torch.stack(xs), (torch.stack(cs) > 0).float()
            for s in range(0, len(items), 32):
                feats.append(pooled(m.segformer(xb[s:s + 32]), cb[s:s + 32]).numpy())
            types += [e["t"] for e in items]
            dss += [e["ds"] for e in items]
    return np.concatenate(feats), np.array(types), np.array(dss)


def fit_score(xtr, ttr, dtr, xva, tva, dva, l2):
    """Softmax regression on per-dataset standardised features; validation accuracy per dataset."""
    xtr, xva = xtr.copy(), xva.copy()
    for d in (1, 2):
        mu, sd = xtr[dtr == d].mean(0), xtr[dtr == d].std(0) + 1e-6
        xtr[dtr == d] = (xtr[dtr == d] - mu) / sd
        xva[dva == d] = (xva[dva == d] - mu) / sd
    x, t = torch.tensor(xtr, dtype=torch.float64), torch.tensor(ttr)
    w = torch.zeros(x.shape[1], 5, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, t) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    p = (torch.tensor(xva, dtype=torch.float64) @ w + b).detach().numpy()
    return {f"Dataset {d}": round(float((p[dva == d].argmax(1) == tva[dva == d]).mean()), 3)
            for d in (1, 2)}


def report(m, tag, train, val):
    xtr, ttr, dtr = extract(m, train, 8)
    xva, tva, dva = extract(m, val, 1)
    for l2 in (1e-3, 1e-2, 1e-1):
        print(tag, "l2", l2, "val accuracy", fit_score(xtr, ttr, dtr, xva, tva, dva, l2),
              flush=True)


def main():
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(2)
    lam = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    data = load(1) + load(2)
    train = [e for e in data if e["id"] % 5 not in (1, 2)]
    val = [e for e in data if e["id"] % 5 == 2]
    print(len(train), "training and", len(val), "validation images", flush=True)
    m = make_model()
    report(m, "before fine-tuning", train, val)
    head = nn.Linear(512, 5)
    opt = torch.optim.AdamW([{"params": list(m.parameters()), "lr": 6e-5},
                             {"params": head.parameters(), "lr": 1e-3}], weight_decay=0.01)
    draw = np.array([1.0 if e["ds"] == 1 else 180 / 40 for e in train])
    draw /= draw.sum()
    batch, steps, t0 = 8, len(train) // 8, time.time()
    for ep in range(epochs):
        m.train()
        seg_sum = cls_sum = 0.0
        for _ in range(steps):
            idx = np.random.choice(len(train), batch, p=draw)
            xs, ls = zip(*[view(train[i]["x"], train[i]["lab"], np.random.randint(8))
                           for i in idx])
            xb, lb = torch.stack(xs), torch.stack(ls)
            tb = torch.tensor([train[i]["t"] for i in idx])
            feats = m.segformer(xb)
            up = F.interpolate(m.decode_head(feats), size=lb.shape[-2:], mode="bilinear",
                               align_corners=False)
            seg = F.cross_entropy(up, lb)
            z = pooled(feats, (lb > 0).float())
            cls = F.cross_entropy(head(F.layer_norm(z, z.shape[1:])), tb)
            opt.zero_grad()
            (seg + lam * cls).backward()
            opt.step()
            seg_sum += seg.item()
            cls_sum += cls.item()
        print(f"epoch {ep + 1} seg loss {seg_sum / steps:.4f} type loss {cls_sum / steps:.4f} "
              f"{time.time() - t0:.0f} s", flush=True)
        if ep % 5 == 4 or ep == epochs - 1:
            report(m, f"after {ep + 1} epochs (lambda {lam})", train, val)


if __name__ == "__main__":
    main()
