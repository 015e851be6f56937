"""How good are GrabCut pseudo-masks on real photos, and what do the crop, the margin and ``max_side`` cost?

Input: coco_tiny (or any COCO folder with the same layout). The tool gets only ``bbox`` of the
``iscrowd == 0`` annotations; each produced per-box mask is scored against the annotation's true mask
(pycocotools decoding) by mask IoU, averaged over instances, overall and by COCO size bucket of the
*true mask's pixel area* (small < 32^2 <= medium < 96^2 <= large, as the project's evaluator does).

Two readings per method:
- "per box": the box's own mask, scored independently of the other boxes;
- "painted": the mask the instance map gives that box (pixels == k after painting all boxes of the image in
  descending box area, smaller box wins) - what training actually sees.

Methods: filled boxes (the pixels the box touches), filled ellipses (the inscribed ellipse, GrabCut's
fallback), stock GrabCut (rect init on the whole image, no crop), the default (crop with margin), and the
default with ``max_side`` 384 / 256. GrabCut rows use the project's fallback (ellipse for a degenerate box or
a result under 5% of the box); "raw" is GrabCut's own result without it (empty counts as IoU 0), and
"fallback" the share of boxes that fell back. "ms/box" is single-thread CPU time per box (OpenCV limited to
one thread; process time, so machine load does not inflate it).

    .venv/bin/python bench/grabcut_quality.py --coco-root /work/shared/data/coco_tiny [--split all] \
        [--limit N] [--workers 2] [--json out.json]
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
from box2seg.evaluation.instance_iou import SIZE_BUCKETS, mask_ious
from box2seg.structures import PIXELS_TOUCHED, decode_segmentation, pixel_extents

GRABCUT_METHODS = {
    "GrabCut stock (whole image, no crop)": G.GrabCutSettings(margin=0.0, min_margin=10**6),
    "GrabCut default (crop, margin 0.5 / 32 px)": G.GrabCutSettings(),
    "GrabCut default, max_side 384": G.GrabCutSettings(max_side=384),
    "GrabCut default, max_side 256": G.GrabCutSettings(max_side=256),
}
SIMPLE_METHODS = ("filled boxes", "filled ellipses")


def _init_worker():
    cv2.setNumThreads(1)


def _full(masks, extents, h, w):
    out = np.zeros((len(masks), h, w), bool)
    for j, (m, (x0, y0, x1, y1)) in enumerate(zip(masks, extents)):
        out[j, y0:y1, x0:x1] = m
    return out


def score_image(task):
    """All methods on one image: per box, the IoUs (per box, painted, raw), fallback flags and CPU ms."""
    file_name, image_id, anns = task
    image = cv2.imread(file_name, cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {file_name}")
    h, w = image.shape[:2]
    boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                      for a in anns], np.float64)
    gt = np.stack([decode_segmentation(a["segmentation"], h, w) for a in anns])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    indices = list(range(len(anns)))
    extents = [tuple(e) for e in pixel_extents(boxes, h, w, PIXELS_TOUCHED).tolist()]
    out = {"gt_area": gt.reshape(len(gt), -1).sum(1).tolist(), "methods": {}}

    def record(name, masks, raw=None, fallback=None, cpu_ms=None):
        painted = G.paint_instance_map(h, w, masks, extents, areas, indices)
        painted_stack = painted[None] == np.arange(1, len(anns) + 1, dtype=np.uint16)[:, None, None]
        out["methods"][name] = {
            "per_box": mask_ious(_full(masks, extents, h, w), gt).tolist(),
            "painted": mask_ious(painted_stack, gt).tolist(),
            "raw": None if raw is None else mask_ious(_full(raw, extents, h, w), gt).tolist(),
            "fallback": fallback,
            "cpu_ms": cpu_ms,
        }

    record("filled boxes", [np.ones((e[3] - e[1], e[2] - e[0]), bool) for e in extents])
    record("filled ellipses", [G.ellipse_mask(e[3] - e[1], e[2] - e[0]) for e in extents])
    for name, settings in GRABCUT_METHODS.items():
        masks, raws, fell, ms = [], [], [], []
        for i, box in enumerate(boxes):
            seed = G.annotation_seed(settings.seed, image_id, i)
            t = time.process_time()
            raw, extent, fell_back = G.grabcut_box(image, box, settings, seed, fallback=False)
            ms.append(1000 * (time.process_time() - t))
            raws.append(raw)
            masks.append(G.ellipse_mask(*raw.shape) if fell_back else raw)
            fell.append(bool(fell_back))
        record(name, masks, raws, fell, ms)
    return out


def load_split(coco_root, split):
    if split == "all":
        json_file, image_root = os.path.join(coco_root, "annotations", "instances_all.json"), coco_root
    else:
        json_file = os.path.join(coco_root, "annotations", f"instances_{split}.json")
        image_root = os.path.join(coco_root, split)
    with open(json_file) as f:
        data = json.load(f)
    by_image = {}
    for a in data["annotations"]:
        if not a.get("iscrowd", 0):
            by_image.setdefault(a["image_id"], []).append(a)
    tasks = [(os.path.join(image_root, img["file_name"]), img["id"], by_image[img["id"]])
             for img in sorted(data["images"], key=lambda i: i["id"]) if img["id"] in by_image]
    return json_file, tasks


def summarize(results):
    areas = np.concatenate([r["gt_area"] for r in results])
    rows = {}
    for name in results[0]["methods"]:
        row = {"boxes": len(areas)}
        for reading in ("per_box", "painted", "raw"):
            if results[0]["methods"][name][reading] is None:
                continue
            ious = np.concatenate([r["methods"][name][reading] for r in results])
            row[reading] = float(ious.mean())
            for bucket, low, high in SIZE_BUCKETS:
                keep = (areas >= low) & (areas < high)
                row[f"{reading}-{bucket}"] = float(ious[keep].mean()) if keep.any() else float("nan")
        if results[0]["methods"][name]["fallback"] is not None:
            row["fallback"] = float(np.mean(np.concatenate([r["methods"][name]["fallback"] for r in results])))
            row["ms_per_box"] = float(np.mean(np.concatenate([r["methods"][name]["cpu_ms"] for r in results])))
        rows[name] = row
    counts = {b: int(((areas >= lo) & (areas < hi)).sum()) for b, lo, hi in SIZE_BUCKETS}
    return rows, counts


def markdown(rows, counts):
    def f(v):
        return "-" if v is None or v != v else f"{v:.3f}"

    head = (f"| method | per box mIoU | small ({counts['small']}) | medium ({counts['medium']}) | "
            f"large ({counts['large']}) | painted mIoU | painted small | painted medium | painted large | "
            "raw (no fallback) | fallback | ms/box |")
    lines = [head, "|" + "---|" * 12]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {f(r['per_box'])} | {f(r['per_box-small'])} | {f(r['per_box-medium'])} | "
            f"{f(r['per_box-large'])} | {f(r['painted'])} | {f(r['painted-small'])} | {f(r['painted-medium'])} | "
            f"{f(r['painted-large'])} | {f(r.get('raw'))} | "
            f"{'-' if 'fallback' not in r else format(r['fallback'], '.1%')} | "
            f"{'-' if 'ms_per_box' not in r else format(r['ms_per_box'], '.1f')} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coco-root", required=True, help="folder with annotations/ and the image folders")
    parser.add_argument("--split", default="all", choices=["all", "train2017", "val2017"])
    parser.add_argument("--limit", type=int, default=0, help="first N images (by id) only; 0 = all")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", default="", help="also write the numbers here")
    args = parser.parse_args(argv)

    json_file, tasks = load_split(args.coco_root, args.split)
    if args.limit:
        tasks = tasks[: args.limit]
    start = time.time()
    if args.workers > 1:
        ctx = multiprocessing.get_context("forkserver")
        with ctx.Pool(args.workers, initializer=_init_worker) as pool:
            results = []
            for k, r in enumerate(pool.imap(score_image, tasks, chunksize=1)):
                results.append(r)
                if (k + 1) % 10 == 0:
                    print(f"{k + 1}/{len(tasks)} images, {time.time() - start:.0f} s", file=sys.stderr, flush=True)
    else:
        _init_worker()
        results = [score_image(t) for t in tasks]
    rows, counts = summarize(results)
    table = markdown(rows, counts)
    print(f"{json_file}: {len(tasks)} images, {sum(counts.values())} boxes (iscrowd=0); "
          f"{time.time() - start:.0f} s wall with {args.workers} workers\n")
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"json_file": json_file, "images": len(tasks), "counts": counts, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
