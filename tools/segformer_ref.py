#!/usr/bin/python3
"""Independent pure-PyTorch SegFormer reference (HF SegformerForSemanticSegmentation semantics).

Written from docs/design spec (/work/shared/design/segformer-spec.md, sections 2 and 7) and the
module layout of HF modeling_segformer.py (late v4). No `transformers` import: the module tree is
rebuilt here so that state_dict() keys and registration order equal HF's exactly.

Semantics that matter for the C port (spec section 7):
  * every LayerNorm uses eps 1e-5 (HF never reads config.layer_norm_eps);
  * exact erf GELU;
  * attention scores: (q @ k^T) / sqrt(head_dim), matmul first;
  * sequence reduction: conv(k=s=sr) on LN1 output, then its own LayerNorm; absent when sr == 1;
  * decode head concatenates [c4, c3, c2, c1]; every upsample is bilinear, align_corners=False;
  * BatchNorm2d eps 1e-5 momentum 0.1; element-wise Dropout; DropPath per sample;
  * loss: logits upsampled (bilinear, align_corners=False) to label size, then
    CrossEntropy(ignore_index=255), mean over the valid pixels.

Config is a plain dict with keys hidden_sizes, depths, num_attention_heads, sr_ratios, patch_sizes,
strides, mlp_ratio, decoder_hidden_size, num_labels, drop_path_rate, classifier_dropout_prob.

Run directly (`python3 tools/segformer_ref.py`) to check the b0/3-label state_dict against
/work/shared/design/segformer-b0-tensors.txt (names, shapes, order, parameter count).
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

LN_EPS = 1e-5
IGNORE_INDEX = 255


def b0_config(num_labels=3, drop_path_rate=0.1, classifier_dropout_prob=0.1):
    """MiT-b0 + all-MLP head (spec section 1.1; HF SegformerConfig defaults)."""
    return {
        "hidden_sizes": [32, 64, 160, 256],
        "depths": [2, 2, 2, 2],
        "num_attention_heads": [1, 2, 5, 8],
        "sr_ratios": [8, 4, 2, 1],
        "patch_sizes": [7, 3, 3, 3],
        "strides": [4, 2, 2, 2],
        "mlp_ratio": 4,
        "decoder_hidden_size": 256,
        "num_labels": num_labels,
        "drop_path_rate": drop_path_rate,
        "classifier_dropout_prob": classifier_dropout_prob,
    }


class DropPath(nn.Module):
    """Stochastic depth, one Bernoulli draw per sample (timm / HF drop_path)."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = (keep + torch.rand(shape, dtype=x.dtype, device=x.device)).floor_()
        return x.div(keep) * mask


class OverlapPatchEmbeddings(nn.Module):
    def __init__(self, patch_size, stride, cin, cout):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, kernel_size=patch_size, stride=stride,
                              padding=patch_size // 2)
        self.layer_norm = nn.LayerNorm(cout, eps=LN_EPS)

    def forward(self, x):
        x = self.proj(x)
        _, _, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, N, C), n = y*W + x
        return self.layer_norm(x), h, w


class EfficientSelfAttention(nn.Module):
    def __init__(self, hidden, heads, sr):
        super().__init__()
        assert hidden % heads == 0
        self.heads = heads
        self.head_dim = hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.sr_ratio = sr
        if sr > 1:
            self.sr = nn.Conv2d(hidden, hidden, kernel_size=sr, stride=sr)
            self.layer_norm = nn.LayerNorm(hidden, eps=LN_EPS)

    def _split(self, t):
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, u, h, w):
        b, n, c = u.shape
        q = self._split(self.query(u))
        m = u
        if self.sr_ratio > 1:
            m = u.permute(0, 2, 1).reshape(b, c, h, w)
            m = self.sr(m)
            m = m.reshape(b, c, -1).permute(0, 2, 1)
            m = self.layer_norm(m)
        k = self._split(self.key(m))
        v = self._split(self.value(m))
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        p = torch.softmax(s, dim=-1)
        o = torch.matmul(p, v)
        return o.permute(0, 2, 1, 3).contiguous().view(b, n, c)


class SelfOutput(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, x):
        return self.dense(x)


class Attention(nn.Module):
    def __init__(self, hidden, heads, sr):
        super().__init__()
        self.self = EfficientSelfAttention(hidden, heads, sr)
        self.output = SelfOutput(hidden)

    def forward(self, u, h, w):
        return self.output(self.self(u, h, w))


class DWConv(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x, h, w):
        b, n, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, h, w)
        return self.dwconv(x).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    def __init__(self, hidden, ffn):
        super().__init__()
        self.dense1 = nn.Linear(hidden, ffn)
        self.dwconv = DWConv(ffn)
        self.dense2 = nn.Linear(ffn, hidden)

    def forward(self, x, h, w):
        x = self.dense1(x)
        x = self.dwconv(x, h, w)
        x = F.gelu(x)  # exact erf GELU
        return self.dense2(x)


class Layer(nn.Module):
    def __init__(self, hidden, heads, dpr, sr, mlp_ratio):
        super().__init__()
        self.layer_norm_1 = nn.LayerNorm(hidden, eps=LN_EPS)
        self.attention = Attention(hidden, heads, sr)
        self.drop_path = DropPath(dpr) if dpr > 0.0 else nn.Identity()
        self.layer_norm_2 = nn.LayerNorm(hidden, eps=LN_EPS)
        self.mlp = MixFFN(hidden, int(hidden * mlp_ratio))

    def forward(self, x, h, w):
        x = x + self.drop_path(self.attention(self.layer_norm_1(x), h, w))
        x = x + self.drop_path(self.mlp(self.layer_norm_2(x), h, w))
        return x


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        hs, depths = cfg["hidden_sizes"], cfg["depths"]
        dpr = [t.item() for t in torch.linspace(0, cfg["drop_path_rate"], sum(depths))]
        self.patch_embeddings = nn.ModuleList([
            OverlapPatchEmbeddings(cfg["patch_sizes"][i], cfg["strides"][i],
                                   3 if i == 0 else hs[i - 1], hs[i])
            for i in range(4)])
        blocks, cur = [], 0
        for i in range(4):
            blocks.append(nn.ModuleList([
                Layer(hs[i], cfg["num_attention_heads"][i], dpr[cur + j], cfg["sr_ratios"][i],
                      cfg["mlp_ratio"])
                for j in range(depths[i])]))
            cur += depths[i]
        self.block = nn.ModuleList(blocks)
        self.layer_norm = nn.ModuleList([nn.LayerNorm(hs[i], eps=LN_EPS) for i in range(4)])

    def forward(self, x):
        b = x.shape[0]
        feats = []
        for emb, blk, norm in zip(self.patch_embeddings, self.block, self.layer_norm):
            x, h, w = emb(x)
            for layer in blk:
                x = layer(x, h, w)
            x = norm(x)
            x = x.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
            feats.append(x)
        return feats


class SegformerModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.encoder = Encoder(cfg)

    def forward(self, x):
        return self.encoder(x)


class MLP(nn.Module):
    def __init__(self, cin, d):
        super().__init__()
        self.proj = nn.Linear(cin, d)

    def forward(self, x):
        return self.proj(x.flatten(2).transpose(1, 2))


class DecodeHead(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["decoder_hidden_size"]
        self.linear_c = nn.ModuleList([MLP(c, d) for c in cfg["hidden_sizes"]])
        self.linear_fuse = nn.Conv2d(4 * d, d, kernel_size=1, bias=False)
        self.batch_norm = nn.BatchNorm2d(d, eps=1e-5, momentum=0.1)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(cfg["classifier_dropout_prob"])  # element-wise, as HF
        self.classifier = nn.Conv2d(d, cfg["num_labels"], kernel_size=1)

    def forward(self, feats):
        b = feats[0].shape[0]
        size = feats[0].shape[2:]
        outs = []
        for f, mlp in zip(feats, self.linear_c):
            h, w = f.shape[2], f.shape[3]
            y = mlp(f).permute(0, 2, 1).reshape(b, -1, h, w)
            y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            outs.append(y)
        x = self.linear_fuse(torch.cat(outs[::-1], dim=1))  # [c4, c3, c2, c1]
        x = self.dropout(self.activation(self.batch_norm(x)))
        return self.classifier(x)


class SegformerForSemanticSegmentation(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = dict(cfg)
        self.segformer = SegformerModel(cfg)
        self.decode_head = DecodeHead(cfg)

    def forward(self, pixel_values, labels=None):
        """Returns (logits [B,K,ceil(H/4),ceil(W/4)], loss or None)."""
        logits = self.decode_head(self.segformer(pixel_values))
        loss = None
        if labels is not None:
            up = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear",
                               align_corners=False)
            assert self.cfg["num_labels"] > 1, "only the CE (num_labels > 1) path is implemented"
            loss = F.cross_entropy(up, labels.long(), ignore_index=IGNORE_INDEX)
        return logits, loss


# --------------------------------------------------------------------------------------------
# self-check against the shared b0 tensor list

TENSOR_LIST = "/work/shared/design/segformer-b0-tensors.txt"


def _parse_tensor_list(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, shape = line.split(" ", 1)
            shape = shape.strip().strip("[]")
            dims = [int(s) for s in shape.split(",")] if shape.strip() else []
            out.append((name, dims))
    return out


def check_b0(path=TENSOR_LIST, verbose=True):
    model = SegformerForSemanticSegmentation(b0_config(3))
    sd = model.state_dict()
    got = [(k, list(v.shape)) for k, v in sd.items()]
    nparams = sum(p.numel() for p in model.parameters())
    ok = True
    if os.path.exists(path):
        want = _parse_tensor_list(path)
        if got != want:
            ok = False
            for i, (g, w) in enumerate(zip(got, want)):
                if g != w:
                    print(f"  first mismatch at {i}: got {g} want {w}")
                    break
            if len(got) != len(want):
                print(f"  count: got {len(got)} want {len(want)}")
        if verbose:
            print(f"b0/3-label state_dict vs {path}: {len(got)} entries, "
                  f"names+shapes+order {'MATCH' if ok else 'MISMATCH'}")
    else:
        print(f"(tensor list {path} not found; name check skipped)")
    if nparams != 3714915:
        ok = False
    if verbose:
        print(f"b0/3-label trainable params: {nparams:,} "
              f"({'OK' if nparams == 3714915 else 'expected 3,714,915'}); "
              f"state_dict entries {len(sd)} (expected 208)")
    return ok and len(sd) == 208


if __name__ == "__main__":
    sys.exit(0 if check_b0() else 1)
