"""GrabCut pseudo-masks on real photos against the box-only baselines, under the project's one scorer.

Input: coco_tiny (or any COCO folder with its layout: ``annotations/instances_all.json`` with ``coco_split``
per image, ``file_name`` relative to the folder). Every method gets only the ``bbox`` of the ``iscrowd == 0``
annotations; each box's mask is scored against the annotation's true mask by
:mod:`box2seg.evaluation.box_scorer` (pixel-centre rule for boxes and ellipses, IoU on RLEs through
pycocotools, size buckets by the true mask's area), under both protocols: ``per_box`` (each box's own mask,
overlaps allowed: the headline) and ``painted`` (all boxes of the image painted, the smaller box wins).

Methods: ``box`` (filled boxes), ``ellipse`` (the inscribed ellipse), GrabCut ``shipped``
(``GrabCutSettings(fallback_fill=0.05, upscale_to=0, core=0)``, the settings of 0e10efa) and ``improved``
(``GrabCutSettings()``, the defaults). For GrabCut also ``fallback_rate`` (share of boxes given the ellipse
fallback) and ``ms_per_box`` (single-thread CPU time per box: OpenCV limited to one thread, process time, so
machine load does not inflate it). Writes ``bench/results/grabcut_coco_tiny.json``:
``{"val2017": {"shipped": S, "improved": S, "ellipse": S, "box": S}, "all": {...}}``.

    .venv/bin/python bench/grabcut_quality.py --coco-root ../shared/data/coco_tiny [--workers 2] [--limit N]
"""
import argparse
import json
import multiprocessing
import os
import sys
import time

import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import cv2
import numpy as np

from box2seg.data import grabcut as G
from box2seg.data.images import read_image
from box2seg.evaluation.box_scorer import BoxScorer, baseline_masks
from box2seg.structures import decode_segmentation, paste_in_image

BASELINES = ("ellipse", "box")
SPLITS = ("val2017", "all")
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "grabcut_coco_tiny.json")


def grabcut_variants():
    """The two GrabCut settings compared: 0e10efa's (5% fallback, no upscaling, rect init) and the defaults."""
    return {"shipped": G.GrabCutSettings(fallback_fill=0.05, upscale_to=0, core=0), "improved": G.GrabCutSettings()}


def _init_worker():
    cv2.setNumThreads(1)


def score_image(task):
    """Every method on one image: {method: (BoxScorer, fallback flags, CPU ms per box)}."""
    file_name, image_id, anns, variants = task
    image = read_image(file_name, format="BGR")  # the one reader (the model's pixels), as prepare-grabcut
    h, w = image.shape[:2]
    boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                      for a in anns], np.float64)
    gt = np.stack([decode_segmentation(a["segmentation"], h, w) for a in anns])
    out = {}
    for method in BASELINES:
        scorer = BoxScorer()
        scorer.add(baseline_masks(method, boxes, h, w), boxes, gt)
        out[method] = (scorer, [], [])
    for name, settings in variants.items():
        masks, fell, ms = [], [], []
        for i, box in enumerate(boxes):
            seed = G.annotation_seed(settings.seed, image_id, i)
            t = time.process_time()
            mask, extent, fell_back = G.grabcut_box(image, box, settings, seed)
            ms.append(1000 * (time.process_time() - t))
            masks.append(paste_in_image(mask, extent, h, w))
            fell.append(bool(fell_back))
        scorer = BoxScorer()
        scorer.add(np.stack(masks), boxes, gt)  # per box before painting, and painted (smaller box wins)
        out[name] = (scorer, fell, ms)
    return out


def load_tasks(coco_root, variants, limit=0):
    """[(split, task)] of ``instances_all.json``'s images with normal boxes, val2017 first (the split the
    settings are judged on), then by split and id; ``limit``: the first N images of each split."""
    json_file = os.path.join(coco_root, "annotations", "instances_all.json")
    with open(json_file) as f:
        data = json.load(f)
    by_image = {}
    for a in data["annotations"]:
        if not a.get("iscrowd", 0):
            by_image.setdefault(a["image_id"], []).append(a)
    tasks, per_split = [], {}
    for img in sorted(data["images"], key=lambda i: (i["coco_split"] != "val2017", i["coco_split"], i["id"])):
        if img["id"] not in by_image or (limit and per_split.get(img["coco_split"], 0) >= limit):
            continue
        per_split[img["coco_split"]] = per_split.get(img["coco_split"], 0) + 1
        tasks.append((img["coco_split"],
                      (os.path.join(coco_root, img["file_name"]), img["id"], by_image[img["id"]], variants)))
    return json_file, tasks


def summarize(splits, results, variants):
    """{split: {method: S}} in the bench schema, for ``SPLITS`` ("all" = every image)."""
    out = {}
    for split in SPLITS:
        chosen = [r for s, r in zip(splits, results) if split == "all" or s == split]
        if not chosen:
            continue
        out[split] = {}
        for method in list(variants) + list(BASELINES):
            scorer = BoxScorer()
            fell, ms = [], []
            for r in chosen:
                scorer.merge(r[method][0])
                fell.extend(r[method][1])
                ms.extend(r[method][2])
            row = dict(scorer.figures())
            if method in variants:
                row["fallback_rate"] = float(np.mean(fell))
                row["ms_per_box"] = float(np.mean(ms))
            out[split][method] = {k: round(v, 4) for k, v in row.items()}
    return out


def format_rows(summary):
    lines = ["| split | method | per box | small | medium | large | painted | fallback | ms/box |", "|" + "---|" * 9]
    for split, rows in summary.items():
        for method, r in rows.items():
            extra = (f"{r['fallback_rate']:.1%} | {r['ms_per_box']:.1f}" if "fallback_rate" in r else "- | -")
            lines.append(f"| {split} | {method} | {r['per_box']:.3f} | {r['small']:.3f} | {r['medium']:.3f} | "
                         f"{r['large']:.3f} | {r['painted']:.3f} | {extra} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coco-root", required=True, help="folder with annotations/instances_all.json and images")
    parser.add_argument("--limit", type=int, default=0, help="first N images (by id) of each split only; 0 = all")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json-out", default=DEFAULT_OUT, help="where the figures go (default: %(default)s)")
    parser.add_argument("--partial-out", default="",
                        help="also write the figures of the images done so far here every 10 images (long runs)")
    args = parser.parse_args(argv)

    variants = grabcut_variants()
    json_file, tagged = load_tasks(args.coco_root, variants, args.limit)
    splits, tasks = [s for s, _ in tagged], [t for _, t in tagged]
    start = time.time()

    def progress(results):
        if len(results) % 10 and len(results) != len(tasks):
            return
        print(f"{len(results)}/{len(tasks)} images, {time.time() - start:.0f} s", file=sys.stderr, flush=True)
        if args.partial_out:
            with open(args.partial_out, "w") as f:
                json.dump({"images_done": len(results), "of": len(tasks),
                           "figures": summarize(splits[:len(results)], results, variants)}, f, indent=1)

    results = []
    if args.workers > 1:
        ctx = multiprocessing.get_context("forkserver")
        with ctx.Pool(args.workers, initializer=_init_worker) as pool:
            for r in pool.imap(score_image, tasks, chunksize=1):
                results.append(r)
                progress(results)
    else:
        _init_worker()
        for t in tasks:
            results.append(score_image(t))
            progress(results)
    summary = summarize(splits, results, variants)
    print(f"{len(tasks)} images of {os.path.basename(json_file)}, {time.time() - start:.0f} s wall with "
          f"{args.workers} worker(s); settings: " + "; ".join(f"{k} {v}" for k, v in variants.items()) + "\n")
    print(format_rows(summary))
    for split, rows in summary.items():
        if "shipped" in rows and "improved" in rows:
            print(f"{split}: improved - ellipse per box {rows['improved']['per_box'] - rows['ellipse']['per_box']:+.4f}"
                  f", CPU time improved / shipped {rows['improved']['ms_per_box'] / rows['shipped']['ms_per_box']:.2f}x")
    os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
    with open(args.json_out, "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
