"""Box-only baselines on box2seg_shapes: filled box, filled ellipse and GrabCut, against the true masks.

These are the numbers a model trained from the boxes must beat (the demo's target is the best of them + 2
points). Scored by the one scorer (:mod:`box2seg.evaluation.box_scorer`, docs/scoring.md): filled boxes and
ellipses drawn by pixel centres; GrabCut read back from its cache (the painted instance map, so its per-box
masks before painting are not available and both its protocols are painted).

Metrics:
- semantic mIoU over background + the 6 classes, from one confusion matrix accumulated over the split,
  against the painted ground truth ``sem_seg_file_name`` (ignore pixels excluded), of the label map each
  method's masks paint (descending box area, the smaller box wins);
- per-instance IoU (RLE IoU by pycocotools), per box (each box's own mask, the headline) and painted.

GrabCut runs through ``box2seg.data.grabcut_job.prepare_dataset`` (the real cached job, same settings as
training's defaults), so its wall time is the time ``box2seg prepare-grabcut`` takes.

    .venv/bin/python bench/shapes_baselines.py [--split val] [--workers 2] [--force] [--write-results]
"""
import argparse
import os
import platform
import sys
import time
from pathlib import Path

import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import cv2
import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog

from box2seg.data import grabcut
from box2seg.data.datasets import shapes
from box2seg.data.grabcut_job import prepare_dataset
from box2seg.evaluation.box_scorer import BoxScorer, baseline_masks
from box2seg.evaluation.mask_scoring import paint_box_masks
from box2seg.structures import record_boxes

METHODS = ("filled box", "filled ellipse", "GrabCut")


def _true_masks(record):
    h, w = record["height"], record["width"]
    out = []
    for ann in record["annotations"]:
        rle = dict(ann["segmentation"])
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode()
        out.append(mask_util.decode(rle).astype(bool) if ann.get("segmentation") else np.zeros((h, w), bool))
    return out


def _method_masks(record, method, normal):
    """(N, H, W) masks of the record's normal boxes ``normal``: filled boxes and ellipses as drawn, GrabCut's
    as its cached instance map paints them."""
    h, w = record["height"], record["width"]
    if method == "GrabCut":
        return grabcut.load_instance_map(record)[None] == (normal + 1)[:, None, None]
    boxes, _, _ = record_boxes(record)
    return baseline_masks("box" if method == "filled box" else "ellipse", boxes[normal], h, w)


def evaluate(dicts, method, num_classes, ignore_label):
    """(mIoU, per-class IoU (L+1,), per-instance IoU per box, per-instance IoU painted, number of instances)."""
    n = num_classes + 1
    conf = np.zeros((n, n), np.int64)
    scorer = BoxScorer()
    for record in dicts:
        boxes, classes, crowd = record_boxes(record)
        normal = np.flatnonzero(~crowd)
        masks = _method_masks(record, method, normal)
        true = _true_masks(record)
        scorer.add(masks, boxes[normal], np.stack([true[i] for i in normal]).reshape(len(normal), *masks.shape[1:]))
        pred = paint_box_masks(masks, classes[normal], boxes[normal], record["height"], record["width"])
        truth = cv2.imread(record["sem_seg_file_name"], cv2.IMREAD_UNCHANGED).astype(np.int64)
        valid = truth != ignore_label
        conf += np.bincount(truth[valid] * n + pred[valid], minlength=n * n).reshape(n, n)
    tp = np.diag(conf).astype(np.float64)
    iou = tp / np.maximum(conf.sum(0) + conf.sum(1) - tp, 1)
    return (float(iou.mean()), iou, scorer.summary("per_box")["mIoU"], scorer.summary("painted")["mIoU"],
            len(scorer))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="val", choices=sorted(shapes.PARAMS["splits"]))
    parser.add_argument("--workers", type=int, default=2, help="GrabCut worker processes")
    parser.add_argument("--force", action="store_true", help="recompute cached GrabCut maps (honest timing)")
    parser.add_argument("--write-results", action="store_true", help="append the table to bench/RESULTS.md")
    args = parser.parse_args(argv)

    name = f"box2seg_shapes_{args.split}"
    meta = MetadataCatalog.get(name)
    t0 = time.perf_counter()
    dicts = DatasetCatalog.get(name)
    load_s = time.perf_counter() - t0
    settings = grabcut.GrabCutSettings()
    job = prepare_dataset(name, dicts, settings, workers=args.workers, force=args.force)
    grabcut.attach_grabcut_files(name, dicts, settings)

    results = {m: evaluate(dicts, m, len(meta.thing_classes), meta.ignore_label) for m in METHODS}

    classes = list(meta.stuff_classes)
    lines = [
        "",
        f"## box2seg_shapes baselines ({name})",
        "",
        f"`.venv/bin/python bench/shapes_baselines.py --split {args.split} --workers {args.workers}"
        f"{' --force' if args.force else ''}` on {platform.machine()} with {os.cpu_count()} CPU cores "
        f"(shared), {time.strftime('%Y-%m-%d')}.",
        "",
        f"Dataset: generator params hash `{shapes.params_hash()}` (frozen), {len(dicts)} images of "
        f"{shapes.PARAMS['image_size'][1]}x{shapes.PARAMS['image_size'][0]} px, "
        f"{results['GrabCut'][4]} objects, classes {', '.join(meta.thing_classes)}; loading / generating took "
        f"{load_s:.1f} s. GrabCut settings: defaults ({settings}); {job['computed']} maps computed, "
        f"{job['reused']} reused, {job['fallbacks']} ellipse fallbacks, {job['seconds']:.1f} s wall with "
        f"{args.workers} workers.",
        "",
        "Semantic mIoU over background + classes (one confusion matrix over the split, against the painted "
        "true masks) of each method's painted map (the smaller box wins overlaps). Per-instance IoU by the one "
        "scorer (docs/scoring.md): per box (each box's own mask; GrabCut's cache holds painted masks only) and "
        "painted.",
        "",
        "| method | mIoU | per-instance IoU per box | painted | " + " | ".join(classes) + " |",
        "|---|---|---|---|" + "---|" * len(classes),
    ]
    for m in METHODS:
        miou, iou, inst, painted, _ = results[m]
        lines.append(f"| {m} | {100 * miou:.1f} | {100 * inst:.1f} | {100 * painted:.1f} | "
                     + " | ".join(f"{100 * v:.1f}" for v in iou) + " |")
    best = max(METHODS, key=lambda m: results[m][0])
    lines += ["", f"Best box-only baseline: {best}, {100 * results[best][0]:.1f} mIoU; a model trained on "
              f"box2seg_shapes_train should reach at least {100 * results[best][0] + 2:.1f}.", ""]
    text = "\n".join(lines)
    print(text)
    if args.write_results:
        path = Path(__file__).resolve().parent / "RESULTS.md"
        # One append of the whole section (O_APPEND): concurrent writers of other sections lose nothing.
        try:
            with open(path, "x") as f:
                f.write("# Benchmark results\n" + text)
        except FileExistsError:
            with open(path, "a") as f:
                f.write(text)
        print(f"appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
