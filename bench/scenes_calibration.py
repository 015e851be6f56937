#!/usr/bin/env python
"""Calibration of box2seg_scenes from the box-only baselines alone (issue 15).

The generator's parameters are chosen so that the baselines score on these scenes as on COCO photos, under
the one scorer (evaluation/box_scorer.py, each box's own mask): GrabCut with the default settings
(GrabCutSettings(), the labels issue's) between 0.55 and 0.70, the filled ellipse between 0.55 and 0.65.
Nothing trained is looked at. Also printed: the small / medium / large shares of the true masks (COCO's
area thresholds; coco_tiny: 43 / 37 / 20%), generation and GrabCut wall time, and the parameters' hash.

    .venv/bin/python bench/scenes_calibration.py [--split val] [--images 64] [--workers 2] \\
        [--set colour_overlap=0.7 --set noise_sigma=8 ...]

``--set KEY=JSON`` changes one generator parameter (a candidate; its hash names its own cache folder); without
it the frozen ``scenes.PARAMS`` are measured. Prints one markdown row per run, ready for bench/RESULTS.md.
"""
import box2seg  # noqa: F401  (compat fixes before any detectron2 import)

import argparse
import json
import os
import sys
import time

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog

from box2seg.data.datasets import scenes
from box2seg.data.grabcut import GrabCutSettings, attach_grabcut_files
from box2seg.data.grabcut_job import prepare_dataset
from box2seg.evaluation.box_scorer import SIZE_BUCKETS
from box2seg.evaluation.compare import score_baselines

TARGETS = {"GrabCut": (0.55, 0.70), "filled ellipses": (0.55, 0.65)}


def candidate_params(settings, split, images):
    params = scenes.scene_params({split: images})
    for item in settings:
        key, _, value = item.partition("=")
        if key not in params or not value:
            raise SystemExit(f"--set {item!r}: expected KEY=JSON with KEY one of {sorted(params)}")
        params[key] = json.loads(value)
    return params


def _rle(segmentation):
    rle = dict(segmentation)
    rle["counts"] = rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]
    return rle


def size_shares(records):
    """Shares of the true masks in COCO's small / medium / large buckets (by mask area)."""
    areas = np.array([float(mask_util.area(_rle(a["segmentation"]))) for r in records for a in r["annotations"]
                      if not a.get("iscrowd", 0)])
    return {name: float(((areas >= lo) & (areas < hi)).mean()) for name, lo, hi in SIZE_BUCKETS}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="val", choices=sorted(scenes.PARAMS["splits"]))
    parser.add_argument("--images", type=int, default=None, help="images of the split (default: PARAMS')")
    parser.add_argument("--workers", type=int, default=2, help="GrabCut worker processes")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="a generator parameter")
    args = parser.parse_args(argv)

    images = args.images or scenes.PARAMS["splits"][args.split]["num_images"]
    params = candidate_params(args.set, args.split, images)
    digest = scenes.params_hash(params)
    prefix = f"scenes_calib_{digest}"
    scenes.register_scenes(prefix=prefix, params=params)
    name = f"{prefix}_{args.split}"

    start = time.perf_counter()
    records = DatasetCatalog.get(name)
    generate_s = time.perf_counter() - start
    settings = GrabCutSettings()
    job = prepare_dataset(name, records, settings, workers=args.workers)
    attach_grabcut_files(name, records, settings)
    rows = score_baselines(name, records)
    shares = size_shares(records)

    within = {m: lo <= rows[m]["instance_mIoU"] <= hi for m, (lo, hi) in TARGETS.items()}
    changes = " ".join(args.set) or "PARAMS (frozen)"
    print(f"\nbox2seg_scenes {args.split}, {len(records)} images, "
          f"{sum(len(r['annotations']) for r in records)} boxes, params hash {digest} ({changes}); generation "
          f"{generate_s:.1f} s, GrabCut {job['seconds']:.1f} s wall with {args.workers} workers "
          f"({job['computed']} computed, {job['reused']} reused, {job['fallbacks']} ellipse fallbacks), "
          f"{os.cpu_count()} cores (shared)\n")
    print("| params hash | changes | filled boxes | filled ellipses | GrabCut | GrabCut painted | small / medium / "
          "large | in range |\n|---|---|---|---|---|---|---|---|")
    print(f"| `{digest}` | {changes} | {rows['filled boxes']['instance_mIoU']:.3f} | "
          f"{rows['filled ellipses']['instance_mIoU']:.3f} | {rows['GrabCut']['instance_mIoU']:.3f} | "
          f"{rows['GrabCut']['painted_mIoU']:.3f} | "
          f"{' / '.join(f'{100 * shares[k]:.0f}' for k in ('small', 'medium', 'large'))}% | "
          f"{'yes' if all(within.values()) else 'no'} |")
    for method in ("filled boxes", "filled ellipses", "GrabCut"):
        r = rows[method]
        print(f"  {method}: per box {r['instance_mIoU']:.3f} (small {r['instance_mIoU-small']:.3f}, medium "
              f"{r['instance_mIoU-medium']:.3f}, large {r['instance_mIoU-large']:.3f}), painted "
              f"{r['painted_mIoU']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
