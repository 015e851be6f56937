"""What the inference-side benches share: coco_tiny (one split folder) or a registered dataset, a chip model,
and per image each box's foreground probability beside its own GrabCut mask, so that a rule applied to them is
scored without rerunning the model per setting (grabcut_fusion.py, guided_refinement.py); and one coco_tiny
split registered on its own with the model (chip_thresholds.py, chip_test_scales.py).

coco_tiny reads the GrabCut labels of ``coco_tiny_all`` (what bench/coco_tiny_chips.py's transductive run
computes) and scores the images of one split folder; labels missing from the cache are computed first.
"""
import argparse
import os

import numpy as np
import torch
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.utils.logger import setup_logger

import scenes_selection
from box2seg import engine
from box2seg.commands import overrides_after_separator
from box2seg.data.grabcut import load_instance_map, own_grabcut_masks, read_png_stats
from box2seg.data.mapper import Box2SegDatasetMapper
from box2seg.engine.data import evaluation_records, prepare_caches
from box2seg.engine.runs import load_model
from box2seg.modeling.box_conditioned import never_empty_masks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHIP_CONFIG = os.path.join(REPO, "configs", "cpu", "box2seg_lite0_coco_chips.yaml")
# coco_tiny's annotation file and image folder per split
COCO_SPLIT_FILES = {"all": ("instances_all.json", ""), "train": ("instances_train2017.json", "train2017"),
                    "val": ("instances_val2017.json", "val2017")}


def add_coco_split_arguments(parser, splits=("train", "val")):
    """--coco-root, --split, --weights and --config-file of a bench that scores one coco_tiny split."""
    parser.add_argument("--coco-root", required=True)
    parser.add_argument("--split", default="train", choices=list(splits))
    parser.add_argument("--weights", required=True)
    parser.add_argument("--config-file", default=CHIP_CONFIG)


def coco_split_setup(args, opts=()):
    """``(cfg, name, records, model)``: coco_tiny's ``args.split`` registered as ``coco_tiny_<split>`` and set
    as DATASETS.TEST, its records by file name, and the model with ``args.weights``."""
    json_file, folder = COCO_SPLIT_FILES[args.split]
    name = f"coco_tiny_{args.split}"
    spec = f"{name}={os.path.join(args.coco_root, 'annotations', json_file)}:{os.path.join(args.coco_root, folder)}"
    cfg = engine.setup_cfg(args.config_file, list(opts), [spec.rstrip("/")], freeze=False)
    cfg.DATASETS.TEST = (name,)
    cfg.freeze()
    records = {r["file_name"]: r for r in DatasetCatalog.get(name)}
    return cfg, name, records, load_model(cfg, args.weights)


def add_arguments(parser):
    parser.add_argument("--coco-root", help="coco_tiny's folder (with --split)")
    parser.add_argument("--split", default="train", choices=["train", "val"])
    parser.add_argument("--dataset", help="a registered dataset instead of coco_tiny (e.g. box2seg_scenes_val, or "
                        "box2seg_scenes_dev: bench/scenes_selection.py's split)")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--config-file", default=CHIP_CONFIG)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")


def setup(parser):
    """Parses ``parser``'s arguments (:func:`add_arguments` and the bench's own) and returns ``(args, cfg, title,
    records, model)``: the config on the chosen dataset (its GrabCut labels prepared), the records scored, a line
    naming them, and the model with ``--weights``."""
    args = parser.parse_args()
    setup_logger(name="box2seg")
    if bool(args.coco_root) == bool(args.dataset):
        parser.error("give --coco-root (with --split) or --dataset")
    specs = []
    if args.coco_root:
        name = "coco_tiny_all"
        specs = [f"{name}={os.path.join(args.coco_root, 'annotations', 'instances_all.json')}:{args.coco_root}"]
    else:
        name = args.dataset
        if name == scenes_selection.DEV_DATASET:  # the scenes' selection split (bench/scenes_selection.py)
            scenes_selection.register_dev()
    cfg = engine.setup_cfg(args.config_file, overrides_after_separator(args.opts), specs, freeze=False)
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATASETS.TEST = (name,)
    cfg.freeze()
    prepare_caches(cfg, [name])  # GrabCut labels computed where missing
    records = evaluation_records(cfg, name)
    if args.coco_root:
        folder = os.sep + COCO_SPLIT_FILES[args.split][1] + os.sep
        records = [r for r in records if folder in r["file_name"]]
    if not records:
        raise SystemExit(f"no images of {name} to score")
    title = (f"{name}" + (f" ({args.split})" if args.coco_root else "")
             + f": {len(records)} images, weights {args.weights}")
    return args, cfg, title, records, load_model(cfg, args.weights)


def box_probabilities(cfg, records, model):
    """Per record: ``(record, p, inside, keep, boxes, own)`` with p (K, H, W) the K non-crowd boxes' pasted
    foreground probabilities in [0, 1], inside their box masks, keep (N,) which of the N boxes they are, boxes
    (N, 4) in output pixels and own (N, H, W) each box's own GrabCut mask (bool)."""
    loader = build_detection_test_loader(records, mapper=Box2SegDatasetMapper(cfg, is_train=False),
                                         num_workers=cfg.DATALOADER.NUM_WORKERS)
    with torch.no_grad():
        for record, (x,) in zip(records, loader):
            probs, inside, keep, boxes, _ = model.chip_box_probs(x)
            lines_up = len(boxes) == len(record["annotations"])
            if tuple(inside.shape[-2:]) != (record["height"], record["width"]) or not lines_up:
                raise RuntimeError(f"{record['file_name']}: the model's output does not line up with the record")
            own = own_grabcut_masks(load_instance_map(record), read_png_stats(record["grabcut_file_name"]), len(boxes))
            yield record, probs.float() / 255.0, inside, keep, boxes, own


def add_thresholded(scorer, record, prob, inside, keep, threshold, fill):
    """Score one image's rule output: the K kept boxes' probabilities ``prob`` thresholded as the model does
    (never-empty fallback), the crowd boxes' masks left empty, added to ``scorer`` (a MaskScorer)."""
    kept, _, _ = never_empty_masks(prob, inside, threshold, fill)
    masks = np.zeros((len(keep), *inside.shape[-2:]), dtype=bool)
    masks[keep.numpy()] = kept.numpy()
    scorer.add(record, masks)


SCORE_HEADER = "per box | small | medium | large | painted"


def score_cells(summary):
    """A MaskScorer summary as the table cells of SCORE_HEADER."""
    keys = ("instance_mIoU", "instance_mIoU-small", "instance_mIoU-medium", "instance_mIoU-large", "painted_mIoU")
    return " | ".join(f"{summary[k]:.4f}" for k in keys)
