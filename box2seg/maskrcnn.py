"""detectron2's stock Mask R-CNN trained on Box2Seg pseudo-masks (``box2seg train-maskrcnn``).

The paper's downstream use of Box2Seg: its box-conditioned masks replace the true masks of a box dataset,
and an ordinary instance-segmentation model is trained on them. Here that model is detectron2's own
``GeneralizedRCNN`` (nothing Box2Seg-specific in it), trained by a ``DefaultTrainer`` and evaluated with
``COCOEvaluator`` (segm and bbox AP) against a JSON holding the *true* masks.

    box2seg train-maskrcnn --config-file configs/maskrcnn/mask_rcnn_lite0_FPN_pseudo.yaml \\
        --train-json pseudo/instances.json --image-root images/train \\
        [--eval-json gt/instances_val.json --eval-image-root images/val] [--num-gpus 8] [KEY VALUE ...]

The JSONs are registered with detectron2's ``register_coco_instances`` as ``box2seg_pseudo_train`` and
``box2seg_eval``; MODEL.ROI_HEADS.NUM_CLASSES is set from the training JSON's categories. Multi-process
training goes through detectron2's ``launch`` (each worker builds its config, and so registers the
datasets, with :func:`setup_maskrcnn_cfg`). The final metrics are also written to
OUTPUT_DIR/maskrcnn_results.json (:func:`write_results`).

Beside mask AP and box AP, the mask head is scored *given the true boxes* (:func:`given_box_scores`,
``results["given_boxes"]``): detectron2's ``detected_instances`` path runs the mask head on each evaluation
box with its true class, and the one per-box scorer (:mod:`box2seg.evaluation.box_scorer`) compares each
mask with that box's true mask. A briefly trained CPU detector finds few objects (box AP under
:data:`INFORMATIVE_BOX_AP` makes its mask AP mostly a detection figure); the given-box score isolates what
the mask head learned from its training masks.
"""
import json
import logging
import os

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import (
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import compat
from .data.cache import atomic_write_json
from .data.datasets.coco import coco_metadata
from .engine import setup_cfg
from .evaluation.box_scorer import BoxScorer, baseline_masks
from .export.shards import is_indexed, pseudo_mask_classes, pseudo_mask_dataset, register_pseudo_masks
from .structures import decode_segmentation, encode_rle, record_boxes
from .utils.processes import run_side_by_side

__all__ = ["TRAIN_NAME", "EVAL_NAME", "RESULTS_FILE", "GIVEN_BOXES", "INFORMATIVE_BOX_AP", "MaskRCNNTrainer",
           "check_pseudo_masks", "register_json", "setup_maskrcnn_cfg", "given_box_scores", "train_and_evaluate",
           "run_maskrcnn", "run_maskrcnn_side_by_side",
           "write_results", "read_results", "box_ap_note", "write_filled_box_json",
           "write_baseline_mask_json"]

logger = logging.getLogger(__name__)

TRAIN_NAME = "box2seg_pseudo_train"
EVAL_NAME = "box2seg_eval"
RESULTS_FILE = "maskrcnn_results.json"
GIVEN_BOXES = "given_boxes"  # results key of given_box_scores' figures
INFORMATIVE_BOX_AP = 10.0  # box AP (detectron2's percent) below which mask AP says little about the masks


def check_pseudo_masks(dataset_dicts, json_files, mask_format):
    """Every non-crowd training box needs a mask, and RLE masks need INPUT.MASK_FORMAT 'bitmask'
    (detectron2 reads 'polygon' masks by default and fails deep inside the mapper otherwise)."""
    has_rle = False
    for record in dataset_dicts:
        for k, ann in enumerate(record["annotations"]):
            if ann.get("iscrowd", 0):
                continue
            segm = ann.get("segmentation")
            if not segm:
                raise ValueError(
                    f"pseudo-mask file {', '.join(json_files)}: annotation #{k} of image {record['file_name']} "
                    f"(bbox {ann.get('bbox')}) has no 'segmentation'; every box needs its pseudo-mask"
                )
            has_rle |= isinstance(segm, dict)
    if has_rle and mask_format != "bitmask":
        raise ValueError(f"pseudo-mask file {', '.join(json_files)} has RLE masks: set INPUT.MASK_FORMAT bitmask "
                         f"(it is {mask_format!r})")


class MaskRCNNTrainer(DefaultTrainer):
    """DefaultTrainer with a checked pseudo-mask training set and COCOEvaluator (segm + bbox)."""

    @classmethod
    def build_train_loader(cls, cfg):
        if MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("pseudo_mask_files", None):
            # Indexed pseudo-masks (shard files, an export folder): read lazily, entry by entry, so no process
            # holds or parses the whole set (box2seg.export.shards; every exported box has its mask).
            dataset = pseudo_mask_dataset(cfg.DATASETS.TRAIN[0], filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
            return build_detection_train_loader(cfg, dataset=dataset)
        dicts = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS, proposal_files=None
        )
        check_pseudo_masks(dicts, [MetadataCatalog.get(n).json_file for n in cfg.DATASETS.TRAIN],
                           cfg.INPUT.MASK_FORMAT)
        return build_detection_train_loader(cfg, dataset=dicts)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        # The fast COCOeval needs detectron2's C++ ops; pycocotools gives the same numbers, slower.
        return COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=compat.has_cpp_ops())


def register_json(name, json_file, image_root):
    """``register_coco_instances(name, ...)``; re-registering our own name with other files replaces it."""
    json_file = os.path.abspath(os.path.expanduser(json_file))
    image_root = os.path.abspath(os.path.expanduser(image_root))
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"{name}: annotation file {json_file} does not exist")
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"{name}: image folder {image_root} does not exist")
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if meta.get("json_file", None) == json_file and meta.get("image_root", None) == image_root:
            return name
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, {}, json_file, image_root)
    return name


def _json_classes(json_file):
    """(thing_classes, has_masks) of a COCO JSON (cached by path, size and mtime: big files parse slowly)."""
    meta = coco_metadata(json_file)
    return list(meta["thing_classes"]), bool(meta["has_masks"])


def setup_maskrcnn_cfg(config_file, opts=(), *, train_json, image_root, eval_json="", eval_image_root="",
                       eval_only=False, coco_datasets=()):
    """The frozen Mask R-CNN config with the datasets registered in this process (every launch worker):
    ``setup_cfg`` (detectron2's defaults plus MODEL.EFFICIENTNET for the Lite0 backbone), the training
    JSON as DATASETS.TRAIN, the evaluation JSON (true masks) as DATASETS.TEST, ROI_HEADS.NUM_CLASSES from
    the training JSON's categories. ``train_json``: one COCO JSON, or box2seg's indexed pseudo-masks (a list of
    shard files, an export folder, or a merged export with its index), read lazily for training."""
    cfg = setup_cfg(config_file, opts or (), coco_datasets=coco_datasets, freeze=False)
    if cfg.MODEL.META_ARCHITECTURE != "GeneralizedRCNN" or not cfg.MODEL.MASK_ON:
        raise ValueError(f"{config_file}: train-maskrcnn needs a Mask R-CNN config (MODEL.META_ARCHITECTURE "
                         f"'GeneralizedRCNN', MODEL.MASK_ON True), got {cfg.MODEL.META_ARCHITECTURE!r}, "
                         f"MASK_ON {cfg.MODEL.MASK_ON}")

    indexed = is_indexed(train_json)
    if not indexed and not isinstance(train_json, (str, os.PathLike)):
        (train_json,) = train_json  # one plain JSON given as a list
    classes, has_masks = pseudo_mask_classes(train_json) if indexed else _json_classes(train_json)
    if not has_masks:
        raise ValueError(f"--train-json {train_json} has no 'segmentation' in any annotation: it is a box "
                         "file, not pseudo-masks (write them with Box2Seg first)")
    cfg.DATASETS.TRAIN = ((register_pseudo_masks if indexed else register_json)(TRAIN_NAME, train_json, image_root),)
    cfg.DATASETS.TEST = ()
    if eval_json:
        eval_classes, eval_masks = _json_classes(eval_json)
        if eval_classes != classes:
            raise ValueError(f"--eval-json {eval_json} has classes {eval_classes}, but --train-json "
                             f"{train_json} has {classes} (same names, same category-id order needed)")
        if not eval_masks:
            raise ValueError(f"--eval-json {eval_json} has no true masks ('segmentation'): segm AP needs them")
        cfg.DATASETS.TEST = (register_json(EVAL_NAME, eval_json, eval_image_root or image_root),)
    elif eval_only:
        raise ValueError("--eval-only needs --eval-json (the true masks to evaluate against)")
    if cfg.MODEL.ROI_HEADS.NUM_CLASSES != len(classes):
        logger.info(f"MODEL.ROI_HEADS.NUM_CLASSES: {cfg.MODEL.ROI_HEADS.NUM_CLASSES} -> {len(classes)} "
                    f"(the classes of {train_json})")
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(classes)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(f"MODEL.DEVICE={cfg.MODEL.DEVICE} but no GPU is available: training on the CPU (slow)")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def _true_masks(record, indices):
    """(len(indices), H, W) bool true masks of the record's annotations ``indices``; an annotation without
    a usable mask is an error naming the image and the box (the given-box score needs every mask)."""
    h, w = record["height"], record["width"]
    out = np.zeros((len(indices), h, w), bool)
    for k, i in enumerate(indices):
        ann = record["annotations"][i]
        try:
            out[k] = decode_segmentation(ann["segmentation"], h, w)
        except (KeyError, ValueError) as e:
            raise ValueError(f"given-box score: annotation #{i} of image {record['file_name']} (bbox "
                             f"{ann.get('bbox')}) has no usable true mask: {e}") from None
    return out


@torch.no_grad()
def given_box_scores(cfg, model, dataset_name=None, progress=True):
    """The mask head scored given the true boxes of ``dataset_name`` (default DATASETS.TEST[0]).

    Each image goes through the test-time resize (detectron2's ``DatasetMapper``), and
    ``model.inference(..., detected_instances=...)`` predicts one mask per non-crowd true box with its true
    class; the masks, pasted back at the image's size, are scored against the true masks by the one
    scorer: :meth:`BoxScorer.figures` ({"per_box", "small", "medium", "large", "painted"}, fractions).
    """
    dataset_name = dataset_name or cfg.DATASETS.TEST[0]
    if isinstance(model, DistributedDataParallel):
        model = model.module
    dicts = DatasetCatalog.get(dataset_name)
    loader = build_detection_test_loader(dicts, mapper=DatasetMapper(cfg, is_train=False),
                                         num_workers=cfg.DATALOADER.NUM_WORKERS)
    scorer = BoxScorer()
    was_training = model.training
    model.eval()
    try:
        for record, (inp,) in tqdm(zip(dicts, loader), total=len(dicts), desc=f"given-box masks {dataset_name}",
                                   unit="img", disable=not progress, mininterval=2.0):
            boxes, classes, crowd = record_boxes(record)
            normal = np.flatnonzero(~crowd)
            if len(normal) == 0:
                continue
            h, w = record["height"], record["width"]
            th, tw = inp["image"].shape[-2:]
            scale = np.array([tw / w, th / h, tw / w, th / h])
            given = Instances((th, tw))
            given.pred_boxes = Boxes(torch.as_tensor(boxes[normal] * scale, dtype=torch.float32))
            given.pred_classes = torch.as_tensor(classes[normal], dtype=torch.int64)
            (out,) = model.inference([inp], detected_instances=[given])
            masks = out["instances"].pred_masks.cpu().numpy().astype(bool)
            scorer.add(masks, boxes[normal], _true_masks(record, normal))
    finally:
        model.train(was_training)
    return dict(scorer.figures(), count=len(scorer))


def _with_given_boxes(cfg, model, results):
    """``results`` plus the given-box score of DATASETS.TEST[0] (main process; nothing without a test set)."""
    if cfg.DATASETS.TEST and comm.is_main_process():
        results = dict(results)
        results[GIVEN_BOXES] = given_box_scores(cfg, model)
        logger.info(f"mask head given the true boxes of {cfg.DATASETS.TEST[0]}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in results[GIVEN_BOXES].items() if k != "count"))
    return results


def train_and_evaluate(cfg, resume=False, eval_only=False):
    """Trains ``cfg`` (or only evaluates MODEL.WEIGHTS) in this process; returns the final evaluation
    results ({task: metrics}, empty without DATASETS.TEST), with the mask head's given-box score
    (``results["given_boxes"]``, :func:`given_box_scores`) on the main process."""
    if eval_only:
        model = MaskRCNNTrainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
        return _with_given_boxes(cfg, model, MaskRCNNTrainer.test(cfg, model))
    trainer = MaskRCNNTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    # DefaultTrainer's final EvalHook leaves its results here (train() returns them only with
    # TEST.EXPECTED_RESULTS set).
    return _with_given_boxes(cfg, trainer.model, getattr(trainer, "_last_eval_results", None) or {})


def run_maskrcnn(config_file, opts=(), *, train_json, image_root, eval_json="", eval_image_root="", seed=None,
                 threads=None):
    """One run from start to end in this process: its config (:func:`setup_maskrcnn_cfg`, which registers its
    datasets here, as a spawned process needs), RNGs seeded with ``seed``, ``threads`` torch threads, training,
    evaluation and OUTPUT_DIR's results file (:func:`write_results`). Returns the results."""
    if threads:
        torch.set_num_threads(threads)
    cfg = setup_maskrcnn_cfg(config_file, opts, train_json=train_json, image_root=image_root, eval_json=eval_json,
                             eval_image_root=eval_image_root)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    if seed is not None:
        seed_all_rng(seed)
    results = train_and_evaluate(cfg)
    write_results(cfg.OUTPUT_DIR, results, config_file, train_json, eval_json)
    return results


def _run_in_process(kwargs):
    setup_logger(name="detectron2", abbrev_name="d2")
    setup_logger(name="box2seg")
    run_maskrcnn(**kwargs)


def run_maskrcnn_side_by_side(runs, jobs=2):
    """Each of ``runs`` (:func:`run_maskrcnn` keyword arguments, their own OUTPUT_DIRs) to the end, ``jobs``
    spawned processes at a time with the torch threads split between them (``utils.processes``); ``jobs`` 1:
    one after the other in this process."""
    if jobs <= 1 or len(runs) <= 1:
        for kwargs in runs:
            run_maskrcnn(**kwargs)
        return
    threads = max(1, torch.get_num_threads() // jobs)
    run_side_by_side(_run_in_process, [(dict(kwargs, threads=threads),) for kwargs in runs], jobs,
                     describe=lambda args: f"Mask R-CNN on {args[0]['train_json']} (its log is above)")


def box_ap_note(results):
    """'' or why mask AP is not informative here (box AP under :data:`INFORMATIVE_BOX_AP`)."""
    box_ap = results.get("bbox", {}).get("AP", float("nan"))
    if not np.isfinite(box_ap) or box_ap < INFORMATIVE_BOX_AP:
        return (f"not informative: box AP {box_ap:.1f} < {INFORMATIVE_BOX_AP:.0f} (the detector finds few objects; "
                "read the given-box score)")
    return ""


def write_baseline_mask_json(gt_json, out_json, method="box"):
    """``gt_json`` with each non-crowd mask replaced by a box-only baseline's mask, RLE: ``method`` "box" (the
    filled box) or "ellipse" (the inscribed ellipse), drawn as the unified scorer draws them (pixel centres,
    :func:`~box2seg.evaluation.box_scorer.baseline_masks`); crowd annotations kept. The same-budget controls
    for pseudo-masks in a Mask R-CNN comparison."""
    with open(gt_json) as f:
        data = json.load(f)
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        h, w = sizes[ann["image_id"]]
        x, y, bw, bh = ann["bbox"]
        mask = baseline_masks(method, [[x, y, x + bw, y + bh]], h, w)
        (ann["segmentation"],) = encode_rle(mask)
        ann["area"] = float(mask.sum())
    atomic_write_json(out_json, data)
    return out_json


def write_filled_box_json(gt_json, out_json):
    """``gt_json`` with each non-crowd mask replaced by its filled box (:func:`write_baseline_mask_json`)."""
    return write_baseline_mask_json(gt_json, out_json, "box")


def write_results(output_dir, results, config_file, train_json, eval_json=""):
    """OUTPUT_DIR/maskrcnn_results.json: the final metrics and the files they came from."""
    atomic_write_json(os.path.join(output_dir, RESULTS_FILE),
                      {"config_file": os.path.abspath(config_file),
                       "train_json": ([os.path.abspath(p) for p in train_json]
                                      if isinstance(train_json, (list, tuple)) else os.path.abspath(train_json)),
                       "eval_json": os.path.abspath(eval_json) if eval_json else None,
                       "results": {task: dict(metrics) for task, metrics in results.items()}})


def read_results(output_dir):
    """The metrics :func:`write_results` wrote ({task: metrics})."""
    with open(os.path.join(output_dir, RESULTS_FILE)) as f:
        return json.load(f)["results"]
