#!/usr/bin/env python
"""Boxes in, Mask R-CNN out, on coco_tiny: export -> score -> Mask R-CNN on pseudo-masks vs ellipses vs boxes.

The whole downstream path of the labelling use case, each stage timed:

1. ``box2seg export`` of a Box2Seg model trained on the folder's boxes (e.g. by bench/coco_tiny_box2seg.py)
   over all images of ``annotations/instances_all.json``;
2. ``box2seg score`` of the exported pseudo-masks against the true masks;
3. ``box2seg train-maskrcnn`` (the EfficientNet-Lite0-FPN config) for the same budget three times: on the
   pseudo-masks, on filled ellipses and on filled boxes (the box-only baselines, drawn from the same JSON as
   the unified scorer draws them, ``maskrcnn.write_baseline_mask_json``); each evaluated by COCOEvaluator
   against the true masks of the same 160 images (the labelling use case:
   the detector is scored on the images whose boxes it was given, so this measures what the mask head
   learned from each kind of mask, not generalisation to new photos), and the mask head scored given the
   true boxes (train-maskrcnn's ``given_boxes``: per box and painted, the one scorer), the figure that stays
   informative while box AP is under 10.

    python bench/coco_tiny_maskrcnn.py --coco-root ../shared/data/coco_tiny \\
        --box2seg-config configs/cpu/box2seg_lite0_coco_chips.yaml \\
        --weights output/coco_tiny_chips/transductive_seed0/model_final.pth \\
        --output output/coco_tiny_maskrcnn --iters 300 [--export-opts MODEL.BOX2SEG.TEST.BOX_RULE foreground] \
        [--maskrcnn-opts INPUT.MIN_SIZE_TRAIN "(256, 320)" ...]

The folder is read in place (evaluation-only licence: never copied). Stages whose output exists are reused.
Prints one markdown table (mask and box AP, minutes per stage).
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse
import json
import os
import subprocess
import sys
import time

from box2seg.maskrcnn import GIVEN_BOXES, box_ap_note, write_baseline_mask_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET = "coco_tiny_all"


def box2seg(*argv):
    """Runs one box2seg subcommand in a child process (as a user would) and returns its wall time."""
    start = time.time()
    subprocess.run([sys.executable, "-m", "box2seg.cli", *argv], check=True, cwd=REPO)
    return time.time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco-root", required=True, help="folder with annotations/instances_all.json")
    parser.add_argument("--box2seg-config", required=True, help="the trained Box2Seg model's config")
    parser.add_argument("--weights", required=True, help="the trained Box2Seg model")
    parser.add_argument("--output", default="output/coco_tiny_maskrcnn")
    parser.add_argument("--maskrcnn-config", default="configs/maskrcnn/mask_rcnn_lite0_FPN_pseudo.yaml")
    parser.add_argument("--iters", type=int, default=300, help="Mask R-CNN SOLVER.MAX_ITER (both runs)")
    parser.add_argument("--export-opts", nargs="*", default=[], metavar="KEY VALUE",
                        help="Box2Seg config overrides for the export, e.g. MODEL.BOX2SEG.TEST.BOX_RULE foreground")
    parser.add_argument("--runs", nargs="+", default=["pseudo", "ellipse", "boxes"],
                        choices=["pseudo", "ellipse", "boxes"],
                        help="which Mask R-CNN trainings this invocation may run (separate invocations can run "
                             "them in parallel; the table needs both results)")
    parser.add_argument("--maskrcnn-opts", nargs="*", default=[], metavar="KEY VALUE",
                        help="Mask R-CNN config overrides for both runs, e.g. INPUT.MIN_SIZE_TRAIN (256,)")
    args = parser.parse_args()
    out = os.path.abspath(args.output)
    os.makedirs(out, exist_ok=True)
    gt_json = os.path.abspath(os.path.join(args.coco_root, "annotations", "instances_all.json"))
    root = os.path.abspath(args.coco_root)
    coco = ["--coco-dataset", f"{DATASET}={gt_json}:{root}"]
    minutes = {}

    export_dir = os.path.join(out, "export")
    pseudo_json = os.path.join(export_dir, "pseudo_masks.json")
    if not os.path.exists(pseudo_json):
        minutes["export"] = box2seg("export", *coco, "--config-file", os.path.abspath(args.box2seg_config),
                                    "--dataset", DATASET, "--output", export_dir, "--resume",
                                    "MODEL.WEIGHTS", os.path.abspath(args.weights), *args.export_opts) / 60
    start = time.time()
    box2seg("score", "--gt", gt_json, "--pred", pseudo_json, "--json-out", os.path.join(out, "score.json"))
    minutes["score"] = (time.time() - start) / 60

    # The baselines' masks as the unified scorer draws them (pixel centres).
    ellipse_json = write_baseline_mask_json(gt_json, os.path.join(out, "filled_ellipses.json"), "ellipse")
    boxes_json = write_baseline_mask_json(gt_json, os.path.join(out, "filled_boxes.json"), "box")
    table = {}
    for key, name, train_json in (("pseudo", "Box2Seg pseudo-masks", pseudo_json),
                                  ("ellipse", "filled ellipses", ellipse_json), ("boxes", "filled boxes", boxes_json)):
        run_dir = os.path.join(out, "maskrcnn_" + key)
        results_path = os.path.join(run_dir, "maskrcnn_results.json")
        if not os.path.exists(results_path):
            if key not in args.runs:
                print(f"{name}: no results yet in {run_dir} (not in --runs); leaving it out of the table")
                continue
            minutes[f"Mask R-CNN on {name}"] = box2seg(
                "train-maskrcnn", "--config-file", args.maskrcnn_config, "--train-json", train_json,
                "--image-root", root, "--eval-json", gt_json, "--eval-image-root", root,
                "SOLVER.MAX_ITER", str(args.iters), "SOLVER.WARMUP_ITERS", str(min(100, args.iters // 3)),
                "SOLVER.STEPS", f"({int(args.iters * 0.8)},)", "OUTPUT_DIR", run_dir, *args.maskrcnn_opts) / 60
        with open(results_path) as f:
            table[name] = json.load(f)["results"]

    print(f"\ncoco_tiny (160 images), Mask R-CNN Lite0-FPN, {args.iters} iterations "
          f"{' '.join(args.maskrcnn_opts)}, evaluated on the same images:\n")
    print("| training masks | mask AP | mask AP50 | mask AP75 | box AP | given-box mask IoU per box | painted |\n"
          "|---|---|---|---|---|---|---|")
    for name, r in table.items():
        segm, bbox = r.get("segm", {}), r.get("bbox", {})
        given = r.get(GIVEN_BOXES, {})  # the mask head on the true boxes (box2seg.maskrcnn.given_box_scores)
        print(f"| {name} | {segm.get('AP', float('nan')):.1f} | {segm.get('AP50', float('nan')):.1f} | "
              f"{segm.get('AP75', float('nan')):.1f} | {bbox.get('AP', float('nan')):.1f} | "
              f"{given.get('per_box', float('nan')):.3f} | {given.get('painted', float('nan')):.3f} |")
    notes = {name: box_ap_note(r) for name, r in table.items()}
    for name, note in notes.items():
        if note:
            print(f"{name}: mask AP {note}")
    with open(os.path.join(out, "score.json")) as f:
        print(f"\npseudo-mask score: {json.dumps(json.load(f))[:600]}")
    print("\nminutes per stage (stages reused from an earlier run are not listed):")
    for stage, m in minutes.items():
        print(f"- {stage}: {m:.1f}")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"maskrcnn": table, "minutes": minutes, "iters": args.iters}, f, indent=1)


if __name__ == "__main__":
    main()
