#!/usr/bin/env python
"""Does GrabCut, seeded with Box2Seg's exported per-box masks, refine them? (session 12: no, not adopted.)

Each box's pseudo-mask seeds ``cv2.grabCut`` (GC_INIT_WITH_MASK) on a crop of the box plus half its size of
margin: outside the box definite background, inside it probable foreground where the mask is and probable
background elsewhere; ``--variant core`` also marks the mask eroded by a tenth of the box's shorter side as
definite foreground. 5 iterations, one RNG seed. Scores the exported and the refined masks on one
box2seg_scenes split with the one scorer (per box and painted).

    python bench/grabcut_refinement.py --split val --pseudo demo_output/export_val/pseudo_masks.json --variant core
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse
import copy
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np
from pycocotools import mask as mask_util

from box2seg.data.datasets import scenes
from box2seg.evaluation.score import score_files


def refine_image(job):
    path, anns, variant = job
    image = cv2.imread(path)
    height, width = image.shape[:2]
    out = []
    for ann in anns:
        mask = mask_util.decode(ann["segmentation"]).astype(bool)
        x, y, w, h = ann["bbox"]
        x0, y0 = max(int(math.floor(x)), 0), max(int(math.floor(y)), 0)
        x1, y1 = min(int(math.ceil(x + w)), width), min(int(math.ceil(y + h)), height)
        mx, my = max((x1 - x0) // 2, 8), max((y1 - y0) // 2, 8)
        cx0, cy0, cx1, cy1 = max(x0 - mx, 0), max(y0 - my, 0), min(x1 + mx, width), min(y1 + my, height)
        sub = mask[cy0:cy1, cx0:cx1]
        box = np.zeros_like(sub)
        box[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0] = True
        seed = np.full(sub.shape, cv2.GC_BGD, np.uint8)
        seed[box] = cv2.GC_PR_BGD
        seed[box & sub] = cv2.GC_PR_FGD
        if variant == "core":
            k = max(1, int(0.1 * min(x1 - x0, y1 - y0)))
            core = cv2.erode(sub.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8)) > 0
            seed[box & core] = cv2.GC_FGD
        if (seed == cv2.GC_BGD).sum() < 16 or not (box & sub).any():
            out.append(ann)  # no background to learn from, or nothing to refine
            continue
        cv2.setRNGSeed(0)
        try:
            cv2.grabCut(np.ascontiguousarray(image[cy0:cy1, cx0:cx1]), seed, None, np.zeros((1, 65)),
                        np.zeros((1, 65)), 5, cv2.GC_INIT_WITH_MASK)
        except cv2.error:
            out.append(ann)
            continue
        fg = ((seed == cv2.GC_FGD) | (seed == cv2.GC_PR_FGD)) & box
        if fg.sum() < 0.1 * sub[box].sum():
            out.append(ann)  # GrabCut lost the object: keep the model's mask
            continue
        full = np.zeros((height, width), np.uint8)
        full[cy0:cy1, cx0:cx1] = fg
        refined = copy.deepcopy(ann)
        rle = mask_util.encode(np.asfortranarray(full))
        rle["counts"] = rle["counts"].decode("ascii")
        refined["segmentation"] = rle
        out.append(refined)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="val", choices=["train", "val"])
    parser.add_argument("--pseudo", required=True, help="box2seg export's pseudo_masks.json for that split")
    parser.add_argument("--variant", default="plain", choices=["plain", "core"])
    parser.add_argument("--output", default=None, help="refined JSON (default: beside --pseudo)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    gt_json, image_root = scenes.ensure_scenes_split(args.split, params=scenes.PARAMS)
    with open(args.pseudo) as f:
        pseudo = json.load(f)
    by_image = {}
    for ann in pseudo["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    jobs = [(os.path.join(image_root, im["file_name"]), by_image.get(im["id"], []), args.variant)
            for im in pseudo["images"]]
    with ProcessPoolExecutor(args.workers) as pool:
        pseudo["annotations"] = [a for anns in pool.map(refine_image, jobs, chunksize=4) for a in anns]
    output = args.output or os.path.splitext(args.pseudo)[0] + f"_refined_{args.variant}.json"
    with open(output + ".tmp", "w") as f:
        json.dump(pseudo, f)
    os.replace(output + ".tmp", output)
    print(f"| masks | per box | painted | small | medium | large |\n|---|---|---|---|---|---|")
    for label, path in (("exported", args.pseudo), (f"refined ({args.variant})", output)):
        scores = score_files(gt_json, path)
        r = scores["instance"], scores["instance_painted"]
        print(f"| {label} | {r[0]['mIoU']:.4f} | {r[1]['mIoU']:.4f} | "
              + " | ".join(f"{r[0]['mIoU-' + k]:.4f}" for k in ("small", "medium", "large")) + " |")


if __name__ == "__main__":
    main()
