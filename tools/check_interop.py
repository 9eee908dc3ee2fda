#!/usr/bin/python3
"""Moves a leukoseg model into PyTorch and back, and checks both give the same logits.

Usage: /usr/bin/python3 tools/check_interop.py MODEL.safetensors [build/leukoseg]

1. Loads MODEL (written by `leukoseg train`) into the independent PyTorch SegFormer of
   tools/segformer_ref.py with load_state_dict(strict=True), by HF tensor name, using the
   configuration in the file's metadata.
2. Runs both on the same random NCHW input (`leukoseg forward`) and compares eval logits.
3. Saves the PyTorch state_dict as safetensors and checks leukoseg runs it to the same logits.
Needs Debian's python3-torch and numpy; not part of CI.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden  # noqa: E402  (safetensors reader/writer)
import segformer_ref as ref  # noqa: E402


def main():
    model_path = sys.argv[1]
    binary = sys.argv[2] if len(sys.argv) > 2 else "build/leukoseg"
    tensors, meta = golden.st_read(model_path)
    cfg = json.loads(meta["config"])
    net = ref.SegformerForSemanticSegmentation(cfg)
    state = {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()
             if not k.startswith("cell_classifier.")}
    net.load_state_dict(state, strict=True)
    net.eval()
    size = [int(v) for v in meta.get("input_size", "128x128").split("x")]
    torch.manual_seed(0)
    x = torch.randn(2, 3, size[1], size[0])
    with torch.no_grad():
        want = net(x)[0].numpy()
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/x.npy", x.numpy())
        for label, path in (("leukoseg file", model_path), ("PyTorch-written file", None)):
            if path is None:
                path = f"{tmp}/from_torch.safetensors"
                out = {k: v.detach().numpy() for k, v in net.state_dict().items()}
                golden.st_write(path, out, {"format": "pt", "config": meta["config"]})
            subprocess.run([binary, "forward", "--model", path, "--input", f"{tmp}/x.npy",
                            "--output", f"{tmp}/y.npy"], check=True)
            got = np.load(f"{tmp}/y.npy")
            diff = float(np.abs(got - want).max())
            worst = max(worst, diff)
            print(f"{label}: logits {got.shape}, max |leukoseg - PyTorch| = {diff:.3g}")
    sys.exit(0 if worst < 1e-3 else 1)


if __name__ == "__main__":
    main()
