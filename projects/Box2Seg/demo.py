#!/usr/bin/env python
"""`make demo`: the whole Box2Seg job on generated photo-like scenes (box2seg_scenes), on a CPU, in minutes.

1. generates box2seg_scenes train and val (cached) and prepares their GrabCut labels (default settings);
2. trains Box2Seg in chip mode (configs/cpu/box2seg_lite0_scenes_chips.yaml) on the training boxes;
3. ``box2seg export``s a pseudo-mask per box for the training images (the labelling use case) and for the
   val images, and scores them against the true masks both ways (each box's own mask, and painted) beside the
   box-only baselines (filled boxes, filled ellipses, GrabCut), all by the one scorer;
4. trains a small CPU Mask R-CNN briefly on the pseudo-masks and, for the same budget, on filled boxes, and
   scores its mask head given the true val boxes (detectron2's ``detected_instances``) beside mask AP and
   box AP (flagged as not informative while box AP is under 10);
5. writes overlays (image, boxes, pseudo-masks, class names; detectron2's Visualizer) and a bar chart of the
   table to the output folder, prints the table and a one-line verdict.

Exits 0 when the run completed, whatever the verdict; non-zero only when something broke. Finished stages are
reused (the Box2Seg checkpoint, exported masks, Mask R-CNN results): delete the output folder to start over.
The target (issue 15): Box2Seg's pseudo-masks at least --margin above the best baseline per box on the
training and the val images, and the given-box mask score of Mask R-CNN higher on them than on filled boxes.
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse
import json
import os
import sys
import time

import cv2
import matplotlib
import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

from box2seg import engine, maskrcnn  # noqa: E402
from box2seg.data.datasets import scenes  # noqa: E402
from box2seg.data.images import read_image  # noqa: E402
from box2seg.engine.data import evaluation_records, prepare_caches  # noqa: E402
from box2seg.evaluation.compare import BASELINES, score_baselines  # noqa: E402
from box2seg.evaluation.score import score_files  # noqa: E402
from box2seg.export import export_config, export_dataset  # noqa: E402
from box2seg.structures import decode_segmentation  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "cpu", "box2seg_lite0_scenes_chips.yaml")
MASKRCNN_CONFIG = os.path.join(REPO, "configs", "maskrcnn", "mask_rcnn_lite0_FPN_pseudo.yaml")
OURS = "Box2Seg pseudo-masks"
SPLITS = ("train", "val")
# Mask R-CNN sized for the 256 px scenes and a few CPU minutes (both runs get exactly the same).
MASKRCNN_OPTS = ["INPUT.MIN_SIZE_TRAIN", "(256,)", "INPUT.MAX_SIZE_TRAIN", "256", "INPUT.MIN_SIZE_TEST", "256",
                 "INPUT.MAX_SIZE_TEST", "256", "DATALOADER.NUM_WORKERS", "1"]


def argument_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, help="the Box2Seg config (chip mode)")
    parser.add_argument("--output", default="demo_output")
    parser.add_argument("--seed", type=int, default=0, help="seeds Box2Seg's and Mask R-CNN's training")
    parser.add_argument("--margin", type=float, default=0.03, help="per-box IoU Box2Seg must win by (the target)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="images of box2seg_scenes train (default: the generator's 160; smaller: a quick look)")
    parser.add_argument("--val-images", type=int, default=None, help="images of box2seg_scenes val (default 64)")
    # 75 rather than 100: the demo inside 15 minutes on a slower day's 2 cores (bench/RESULTS.md, session 14)
    parser.add_argument("--maskrcnn-iters", type=int, default=75, help="Mask R-CNN iterations, each run")
    parser.add_argument("--maskrcnn-jobs", type=int, default=2,
                        help="Mask R-CNN runs side by side, the threads split between them (1: one after the other)")
    parser.add_argument("--maskrcnn-config", default=MASKRCNN_CONFIG)
    parser.add_argument("--maskrcnn-opts", nargs="*", default=[], metavar="KEY VALUE",
                        help="Mask R-CNN config overrides for both runs")
    parser.add_argument("--overlays", type=int, default=6, help="overlay pictures per split")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="Box2Seg config overrides KEY VALUE ... (last)")
    return parser


def scene_datasets(train_images, val_images):
    """({split: dataset name}, generator params): the shipped box2seg_scenes, or a shorter (prefix) version."""
    sizes = {s: n for s, n in (("train", train_images), ("val", val_images)) if n is not None}
    if not sizes:
        return {s: f"box2seg_scenes_{s}" for s in SPLITS}, scenes.PARAMS
    prefix = "demo_scenes_" + "_".join(f"{s}{n}" for s, n in sorted(sizes.items()))
    scenes.register_scenes(prefix=prefix, num_images=sizes)
    return {s: f"{prefix}_{s}" for s in SPLITS}, scenes.scene_params(sizes)


def box2seg_cfg(args, datasets):
    cfg = engine.setup_cfg(args.config_file, args.opts, freeze=False)
    cfg.DATASETS.TRAIN = (datasets["train"],)
    cfg.DATASETS.TEST = (datasets["val"],)
    cfg.SEED = args.seed
    cfg.OUTPUT_DIR = os.path.join(args.output, f"box2seg_seed{args.seed}")
    cfg.MODEL.DEVICE = "cpu" if not torch.cuda.is_available() else cfg.MODEL.DEVICE
    cfg.freeze()
    engine.check_num_classes(cfg, list(datasets.values()))
    return cfg


def score_split(cfg, dataset_name, gt_json, pseudo_json):
    """{method: {"per_box", "painted", "small", "medium", "large"}} on one split: the three baselines and
    Box2Seg's exported pseudo-masks, all by the one scorer."""
    rows = score_baselines(dataset_name, evaluation_records(cfg, dataset_name))
    out = {m: {"per_box": rows[m]["instance_mIoU"], "painted": rows[m]["painted_mIoU"],
               **{k: rows[m][f"instance_mIoU-{k}"] for k in ("small", "medium", "large")}} for m in BASELINES}
    ours = score_files(gt_json, pseudo_json)
    out[OURS] = {"per_box": ours["instance"]["mIoU"], "painted": ours["instance_painted"]["mIoU"],
                 **{k: ours["instance"][f"mIoU-{k}"] for k in ("small", "medium", "large")}}
    return out


def train_maskrcnn(args, runs, image_root, eval_json, eval_root):
    """The Mask R-CNN runs ``runs`` ([(folder key, name, training JSON)], each reused when its results exist),
    ``--maskrcnn-jobs`` side by side: {name: {"segm", "bbox", "given_boxes"}}."""
    iters = args.maskrcnn_iters
    pending = []
    for key, _, train_json in runs:
        out_dir = os.path.join(args.output, f"maskrcnn_{key}")
        if os.path.exists(os.path.join(out_dir, maskrcnn.RESULTS_FILE)):
            continue
        opts = MASKRCNN_OPTS + ["SOLVER.MAX_ITER", str(iters), "SOLVER.WARMUP_ITERS", str(max(1, min(50, iters // 3))),
                                "SOLVER.STEPS", f"({int(iters * 0.8)},)" if iters >= 5 else "()",
                                "SOLVER.CHECKPOINT_PERIOD", "100000", "SEED", str(args.seed), "OUTPUT_DIR", out_dir]
        pending.append({"config_file": args.maskrcnn_config, "opts": opts + list(args.maskrcnn_opts),
                        "train_json": train_json, "image_root": image_root, "eval_json": eval_json,
                        "eval_image_root": eval_root, "seed": args.seed})
    maskrcnn.run_maskrcnn_side_by_side(pending, jobs=args.maskrcnn_jobs)
    return {name: maskrcnn.read_results(os.path.join(args.output, f"maskrcnn_{key}")) for key, name, _ in runs}


def write_overlays(folder, dataset_name, image_root, pseudo_json, count):
    """The first ``count`` images: true boxes, pseudo-masks and class names (detectron2's Visualizer), beside
    the plain image."""
    os.makedirs(folder, exist_ok=True)
    meta = MetadataCatalog.get(dataset_name)
    with open(pseudo_json) as f:
        pseudo = json.load(f)
    by_image = {}
    for ann in pseudo["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    contiguous = {c["id"]: i for i, c in enumerate(sorted(pseudo["categories"], key=lambda c: c["id"]))}
    paths = []
    for image in sorted(pseudo["images"], key=lambda im: im["id"])[:count]:
        rgb = read_image(os.path.join(image_root, image["file_name"]), "RGB")
        anns = by_image.get(image["id"], [])
        vis = Visualizer(rgb, metadata=meta, scale=2.0)
        if anns:
            masks = [decode_segmentation(a["segmentation"], image["height"], image["width"]) for a in anns]
            boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
            labels = [meta.thing_classes[contiguous[a["category_id"]]] for a in anns]
            vis = vis.overlay_instances(masks=masks, boxes=boxes, labels=labels)
        else:
            vis = vis.get_output()
        plain = cv2.resize(rgb, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_NEAREST)
        picture = np.concatenate([plain, np.full((plain.shape[0], 8, 3), 255, np.uint8), vis.get_image()], 1)
        path = os.path.join(folder, f"{image['id']:04d}.png")
        if not cv2.imwrite(path, picture[:, :, ::-1]):
            raise OSError(f"could not write {path}")
        paths.append(path)
    return paths


def write_bar_chart(path, scores, given):
    """Per-box and painted IoU of every method on both splits; Mask R-CNN's given-box score per training set."""
    methods = list(BASELINES) + [OURS]
    colours = dict(zip(methods, ("#7f7f7f", "#ff7f0e", "#2ca02c", "#d62728")))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.2
    groups = [(s, p) for s in SPLITS for p in ("per_box", "painted")]
    for i, m in enumerate(methods):
        bars = ax.bar(np.arange(len(groups)) + (i - 1.5) * width, [scores[s][m][p] for s, p in groups], width,
                      label=m, color=colours[m])
        ax.bar_label(bars, fmt="%.2f", fontsize=6)
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels([f"{s} images\n{p.replace('_', ' ')}" for s, p in groups])
    ax.set_ylabel("mean mask IoU with the true masks")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8, ncol=4)
    ax.set_title("box2seg_scenes: one mask per box")
    names = list(given)
    bars = ax2.bar(np.arange(len(names)), [given[n]["per_box"] for n in names], 0.6,
                   color=[colours[OURS], colours["filled boxes"]][:len(names)])
    ax2.bar_label(bars, fmt="%.3f", fontsize=8)
    ax2.set_xticks(np.arange(len(names)))
    ax2.set_xticklabels([f"trained on\n{n}" for n in names], fontsize=8)
    ax2.set_ylim(0, 1)
    ax2.set_title("Mask R-CNN, true val boxes given", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_tables(scores, mrcnn):
    lines = ["| method | train per box | train painted | val per box | val painted |", "|---|---|---|---|---|"]
    for m in list(BASELINES) + [OURS]:
        lines.append(f"| {m} | " + " | ".join(f"{scores[s][m][p]:.3f}" for s in SPLITS for p in ("per_box", "painted"))
                     + " |")
    lines += ["", "| Mask R-CNN trained on | given-box mask IoU per box | painted | mask AP | box AP |",
              "|---|---|---|---|---|"]
    for name, r in mrcnn.items():
        g = r.get(maskrcnn.GIVEN_BOXES, {})
        lines.append(f"| {name} | {g.get('per_box', float('nan')):.3f} | {g.get('painted', float('nan')):.3f} | "
                     f"{r.get('segm', {}).get('AP', float('nan')):.1f} | {r.get('bbox', {}).get('AP', float('nan')):.1f} |")
    notes = sorted({maskrcnn.box_ap_note(r) for r in mrcnn.values()} - {""})
    if notes:
        lines.append(f"\nMask AP / box AP: {'; '.join(notes)}")
    return "\n".join(lines)


def verdict(scores, mrcnn, margin):
    """(met, one line): the issue's target on this run."""
    parts, met = [], True
    for s in SPLITS:
        best = max(BASELINES, key=lambda m: scores[s][m]["per_box"])
        gain = scores[s][OURS]["per_box"] - scores[s][best]["per_box"]
        met &= gain >= margin
        parts.append(f"{s} {scores[s][OURS]['per_box']:.3f} vs {best} {scores[s][best]['per_box']:.3f} ({gain:+.3f})")
    ours, boxes = (mrcnn[k][maskrcnn.GIVEN_BOXES]["per_box"] for k in ("pseudo-masks", "filled boxes"))
    met &= ours > boxes
    parts.append(f"Mask R-CNN given boxes {ours:.3f} on pseudo-masks vs {boxes:.3f} on filled boxes")
    return met, (f"{'TARGET MET' if met else 'TARGET MISSED'} (+{margin:.2f} per box over the best baseline, "
                 f"Mask R-CNN above filled boxes): " + "; ".join(parts))


def main(argv=None):
    args = argument_parser().parse_args(argv)
    setup_logger(name="box2seg")
    setup_logger(name="detectron2", abbrev_name="d2")
    os.makedirs(args.output, exist_ok=True)
    start = time.time()
    minutes = {}

    def stage(name, since):
        minutes[name] = (time.time() - since) / 60
        return time.time()

    datasets, params = scene_datasets(args.train_images, args.val_images)
    cfg = box2seg_cfg(args, datasets)
    t = time.time()
    prepare_caches(cfg, list(datasets.values()), grabcut=True)  # generation + GrabCut labels of both splits
    files = {s: scenes.ensure_scenes_split(s, params=params) for s in SPLITS}  # (true-mask JSON, images)
    t = stage("scenes and GrabCut labels", t)
    weights = engine.train_unless_finished(cfg)
    t = stage("Box2Seg training", t)

    pseudo, scores = {}, {}
    for split, name in datasets.items():
        ecfg = cfg.clone()
        ecfg.defrost()
        ecfg.MODEL.WEIGHTS = weights
        folder = os.path.join(args.output, f"export_{split}")
        export_dataset(export_config(ecfg, name), name, folder, progress=False)
        pseudo[split] = os.path.join(folder, "pseudo_masks.json")
    t = stage("export (train and val)", t)
    for split, name in datasets.items():
        scores[split] = score_split(cfg, name, files[split][0], pseudo[split])
    with open(os.path.join(args.output, "scores.json"), "w") as f:  # before the long Mask R-CNN stage
        json.dump(scores, f, indent=1)
    t = stage("scoring", t)

    (train_json, train_root), (val_json, val_root) = files["train"], files["val"]
    boxes_json = maskrcnn.write_filled_box_json(train_json, os.path.join(args.output, "filled_boxes_train.json"))
    mrcnn = train_maskrcnn(args, [("pseudo", "pseudo-masks", pseudo["train"]), ("boxes", "filled boxes", boxes_json)],
                           train_root, val_json, val_root)
    t = stage("Mask R-CNN (two runs)", t)

    overlays = {s: write_overlays(os.path.join(args.output, f"overlays_{s}"), datasets[s], files[s][1], pseudo[s],
                                  args.overlays) for s in SPLITS}
    chart = os.path.join(args.output, "scores.png")
    write_bar_chart(chart, scores, {k: v[maskrcnn.GIVEN_BOXES] for k, v in mrcnn.items()})
    stage("pictures", t)
    elapsed = time.time() - start

    table = format_tables(scores, mrcnn)
    met, line = verdict(scores, mrcnn, args.margin)
    n_train, n_val = (params["splits"][s]["num_images"] for s in SPLITS)
    print(f"\nbox2seg_scenes (params {scenes.params_hash(params)}): {n_train} training and {n_val} val images, "
          f"{os.path.relpath(args.config_file, REPO)}, seed {args.seed}, {elapsed / 60:.1f} min in all "
          f"({', '.join(f'{k} {v:.1f}' for k, v in minutes.items())})\n")
    print(table)
    print(f"\noverlays: {os.path.join(args.output, 'overlays_{train,val}')}; bar chart: {chart}")
    print(line)
    results = {"scores": scores, "maskrcnn": mrcnn, "minutes": minutes, "seconds": elapsed, "seed": args.seed,
               "params_hash": scenes.params_hash(params), "datasets": datasets, "table": table, "verdict": line,
               "target_met": bool(met), "overlays": overlays, "chart": chart}
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
