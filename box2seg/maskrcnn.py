"""``box2seg train-maskrcnn``: detectron2's stock Mask R-CNN trained on Box2Seg pseudo-masks.

The paper's downstream use of Box2Seg: its box-conditioned masks replace the true masks of a box dataset,
and an ordinary instance-segmentation model is trained on them. Here that model is detectron2's own
``GeneralizedRCNN`` (nothing Box2Seg-specific in it), trained by a ``DefaultTrainer`` and evaluated with
``COCOEvaluator`` (segm and bbox AP) against a JSON holding the *true* masks.

    box2seg train-maskrcnn --config-file configs/maskrcnn/mask_rcnn_lite0_FPN_pseudo.yaml \\
        --train-json pseudo/instances.json --image-root images/train \\
        [--eval-json gt/instances_val.json --eval-image-root images/val] [--num-gpus 8] [KEY VALUE ...]

The JSONs are registered with detectron2's ``register_coco_instances`` as ``box2seg_pseudo_train`` and
``box2seg_eval``; MODEL.ROI_HEADS.NUM_CLASSES is set from the training JSON's categories. Multi-process
training goes through detectron2's ``launch`` (each worker re-registers the datasets in ``setup``).
The final metrics are also written to OUTPUT_DIR/maskrcnn_results.json.
"""
import argparse
import json
import logging
import os
import sys

from . import compat

__all__ = ["TRAIN_NAME", "EVAL_NAME", "MaskRCNNTrainer", "register_json", "setup", "add_arguments", "main"]

logger = logging.getLogger(__name__)

TRAIN_NAME = "box2seg_pseudo_train"
EVAL_NAME = "box2seg_eval"
RESULTS_FILE = "maskrcnn_results.json"


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


def _build_trainer_class():
    from detectron2.engine import DefaultTrainer

    class MaskRCNNTrainer(DefaultTrainer):
        """DefaultTrainer with a checked pseudo-mask training set and COCOEvaluator (segm + bbox)."""

        @classmethod
        def build_train_loader(cls, cfg):
            from detectron2.data import MetadataCatalog, build_detection_train_loader, get_detection_dataset_dicts

            dicts = get_detection_dataset_dicts(
                cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS, proposal_files=None
            )
            check_pseudo_masks(dicts, [MetadataCatalog.get(n).json_file for n in cfg.DATASETS.TRAIN],
                               cfg.INPUT.MASK_FORMAT)
            return build_detection_train_loader(cfg, dataset=dicts)

        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            from detectron2.evaluation import COCOEvaluator

            output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
            # The fast COCOeval needs detectron2's C++ ops; pycocotools gives the same numbers, slower.
            return COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=compat.has_cpp_ops())

    MaskRCNNTrainer.__module__ = __name__
    MaskRCNNTrainer.__qualname__ = "MaskRCNNTrainer"
    return MaskRCNNTrainer


def __getattr__(name):
    # ``MaskRCNNTrainer`` is built on first use: importing detectron2.engine here would slow down every
    # ``box2seg`` command's parser (cli.py imports all subcommand modules).
    if name == "MaskRCNNTrainer":
        cls = _build_trainer_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_json(name, json_file, image_root):
    """``register_coco_instances(name, ...)``; re-registering our own name with other files replaces it."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

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
    from .data.datasets.coco import coco_metadata

    meta = coco_metadata(json_file)
    return list(meta["thing_classes"]), bool(meta["has_masks"])


def setup(args):
    """The frozen Mask R-CNN config with the datasets registered in this process (every launch worker)."""
    import torch
    from detectron2.engine import default_setup

    from .engine import get_box2seg_cfg

    cfg = get_box2seg_cfg()  # detectron2's defaults plus MODEL.EFFICIENTNET for the Lite0 backbone
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts or []))
    if cfg.MODEL.META_ARCHITECTURE != "GeneralizedRCNN" or not cfg.MODEL.MASK_ON:
        raise ValueError(f"{args.config_file}: train-maskrcnn needs a Mask R-CNN config (MODEL.META_ARCHITECTURE "
                         f"'GeneralizedRCNN', MODEL.MASK_ON True), got {cfg.MODEL.META_ARCHITECTURE!r}, "
                         f"MASK_ON {cfg.MODEL.MASK_ON}")

    classes, has_masks = _json_classes(args.train_json)
    if not has_masks:
        raise ValueError(f"--train-json {args.train_json} has no 'segmentation' in any annotation: it is a box "
                         "file, not pseudo-masks (write them with Box2Seg first)")
    cfg.DATASETS.TRAIN = (register_json(TRAIN_NAME, args.train_json, args.image_root),)
    cfg.DATASETS.TEST = ()
    if args.eval_json:
        eval_classes, eval_masks = _json_classes(args.eval_json)
        if eval_classes != classes:
            raise ValueError(f"--eval-json {args.eval_json} has classes {eval_classes}, but --train-json "
                             f"{args.train_json} has {classes} (same names, same category-id order needed)")
        if not eval_masks:
            raise ValueError(f"--eval-json {args.eval_json} has no true masks ('segmentation'): segm AP needs them")
        cfg.DATASETS.TEST = (register_json(EVAL_NAME, args.eval_json, args.eval_image_root or args.image_root),)
    elif args.eval_only:
        raise ValueError("--eval-only needs --eval-json (the true masks to evaluate against)")
    if cfg.MODEL.ROI_HEADS.NUM_CLASSES != len(classes):
        logger.info(f"MODEL.ROI_HEADS.NUM_CLASSES: {cfg.MODEL.ROI_HEADS.NUM_CLASSES} -> {len(classes)} "
                    f"(the classes of {args.train_json})")
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(classes)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(f"MODEL.DEVICE={cfg.MODEL.DEVICE} but no GPU is available: training on the CPU (slow)")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def train_worker(args):
    """One process's job (called directly, or by detectron2's ``launch`` in each worker)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.utils import comm

    from .data.cache import atomic_write_json

    trainer_class = __getattr__("MaskRCNNTrainer")
    cfg = setup(args)
    if args.eval_only:
        model = trainer_class.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = trainer_class.test(cfg, model)
    else:
        trainer = trainer_class(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
        # DefaultTrainer's final EvalHook leaves its results here (train() returns them only with
        # TEST.EXPECTED_RESULTS set).
        results = getattr(trainer, "_last_eval_results", None) or {}
    if comm.is_main_process():
        atomic_write_json(os.path.join(cfg.OUTPUT_DIR, RESULTS_FILE),
                          {"config_file": os.path.abspath(args.config_file),
                           "train_json": os.path.abspath(args.train_json),
                           "eval_json": os.path.abspath(args.eval_json) if args.eval_json else None,
                           "results": {task: dict(metrics) for task, metrics in results.items()}})
    return results


def add_arguments(parser):
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="detectron2 Mask R-CNN config, e.g. configs/maskrcnn/mask_rcnn_lite0_FPN_pseudo.yaml")
    parser.add_argument("--train-json", required=True, metavar="JSON", help="COCO instances JSON of pseudo-masks")
    parser.add_argument("--image-root", required=True, metavar="DIR", help="folder of the training images")
    parser.add_argument("--eval-json", default="", metavar="JSON",
                        help="COCO instances JSON with the true masks to evaluate on (segm and bbox AP)")
    parser.add_argument("--eval-image-root", default="", metavar="DIR",
                        help="folder of the evaluation images (default: --image-root)")
    parser.add_argument("--resume", action="store_true", help="resume from OUTPUT_DIR's last checkpoint")
    parser.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS only")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes per machine (GPUs; CPU processes without)")
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0)
    parser.add_argument("--dist-url", default="auto", help="initialisation URL of torch.distributed ('auto': a free "
                                                           "local port, one machine only)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides, e.g. SOLVER.MAX_ITER 1000 OUTPUT_DIR out/maskrcnn")


def _output_dir(args):
    """OUTPUT_DIR as setup() will see it, without building the model or registering anything."""
    from .engine import get_box2seg_cfg

    cfg = get_box2seg_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts or []))
    return cfg.OUTPUT_DIR


def main(args):
    from detectron2.engine import launch

    results_path = os.path.join(_output_dir(args), RESULTS_FILE)
    if os.path.exists(results_path):
        os.remove(results_path)  # a stale file must not pass for this run's results
    launch(train_worker, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
    if args.machine_rank != 0:
        return 0
    if not os.path.exists(results_path):
        raise RuntimeError(f"training finished without writing {results_path}")
    with open(results_path) as f:
        results = json.load(f)["results"]
    for task in ("segm", "bbox"):
        if task in results:
            m = results[task]
            logger.info(f"{task}: AP {m.get('AP', float('nan')):.1f}  AP50 {m.get('AP50', float('nan')):.1f}  "
                        f"AP75 {m.get('AP75', float('nan')):.1f}")
    if args.eval_json and "segm" not in results:
        logger.warning("no segm result: the model produced no detections on the evaluation images")
    logger.info(f"results: {results_path}")
    return 0


if __name__ == "__main__":  # python -m box2seg.maskrcnn ... (same flags as the subcommand)
    logging.basicConfig(level=logging.INFO)
    _parser = argparse.ArgumentParser(prog="python -m box2seg.maskrcnn", description=__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
