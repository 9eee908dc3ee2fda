#!/usr/bin/python3
"""PyTorch peer for tools/bench_peers.sh: times the reference SegFormer (tools/segformer_ref.py).

  bench_torch.py train  --size S --batch B --threads T --steps N [--warmup W]
  bench_torch.py infer  --size S --batch B --threads T --steps N [--warmup W]
  bench_torch.py export --size S --batch B --out FILE.onnx

train: forward in train mode, loss = CrossEntropy(ignore 255) on logits upsampled to label size
(as the reference does), backward and an AdamW step, all inside the timed region.
infer: eval mode under torch.inference_mode(), logits only (H/4 x W/4, like leukoseg bench).
Prints one JSON line: {"peer": "pytorch", "mode", "size", "batch", "threads", "steps", "img_s",
"peak_rss_mib"}. peak_rss_mib is the process's ru_maxrss (includes the Python/torch runtime,
model, optimizer state and activations). export writes an ONNX file (opset 13, static shape) of
the eval-mode model for the ONNX Runtime peer, plus FILE.in.f32 / FILE.out.f32 (a sample input
and PyTorch's logits, little-endian float32) for `bench_ort.mjs --check`, and prints {"onnx": FILE}.
torch.onnx.export needs no `onnx` Python package (checked with torch 1.13).
Inputs are random (seeded); weights are the reference's default init.
"""
import argparse
import json
import os
import resource
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import segformer_ref as ref  # noqa: E402


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["train", "infer", "export"])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--labels", type=int, default=3)
    p.add_argument("--out", help="ONNX path for export")
    return p.parse_args()


def main():
    a = parse()
    torch.set_num_threads(a.threads)
    torch.manual_seed(7)
    model = ref.SegformerForSemanticSegmentation(ref.b0_config(a.labels))
    x = torch.randn(a.batch, 3, a.size, a.size)

    if a.mode == "export":
        if not a.out:
            sys.exit("bench_torch.py export: --out FILE.onnx is required")
        model.eval()

        class LogitsOnly(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, pixel_values):
                return self.m(pixel_values)[0]

        warnings.filterwarnings("ignore", category=UserWarning)  # shape-inference chatter
        # eval() on the wrapper too: export restores the wrapper's own mode afterwards, which
        # would otherwise flip the inner model back to training mode.
        wrapped = LogitsOnly(model).eval()
        with torch.no_grad():
            # Reference input/output so bench_ort.mjs --check can confirm ORT computes the same.
            y = wrapped(x)
            torch.onnx.export(wrapped, (x,), a.out, opset_version=13,
                              input_names=["pixel_values"], output_names=["logits"],
                              do_constant_folding=True)
        x.numpy().astype("<f4").tofile(a.out + ".in.f32")
        y.numpy().astype("<f4").tofile(a.out + ".out.f32")
        print(json.dumps({"onnx": a.out, "size": a.size, "batch": a.batch,
                          "logits_shape": list(y.shape)}))
        return

    if a.mode == "train":
        model.train()
        labels = torch.randint(0, a.labels, (a.batch, a.size, a.size))
        opt = torch.optim.AdamW(model.parameters(), lr=6e-5)

        def step():
            opt.zero_grad(set_to_none=True)
            _, loss = model(x, labels)
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                model(x)

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "mode": a.mode,
                      "size": a.size, "batch": a.batch, "threads": torch.get_num_threads(),
                      "steps": a.steps, "img_s": a.batch * a.steps / dt,
                      "peak_rss_mib": round(peak, 1)}))


if __name__ == "__main__":
    main()
