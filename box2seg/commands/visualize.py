"""``box2seg visualize``: one PNG grid per dataset image (boxes, pseudo-masks, prediction, attention maps);
see :mod:`box2seg.visualize`."""
import argparse

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..data.datasets import UnknownDatasetError, unknown_dataset_message
from ..data.datasets.openimages import register_openimages_spec
from ..engine import setup_cfg
from ..predict import Box2SegPredictor, setup_predict_cfg
from ..visualize import load_pseudo_masks, visualize_records

__all__ = ["add_arguments", "main"]


def add_arguments(parser):
    parser.add_argument("--dataset", required=True, metavar="NAME",
                        help="registered dataset (built-in, or --coco-dataset NAME=JSON:IMAGE_ROOT)")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the PNG grids")
    parser.add_argument("--pseudo-masks", default="", metavar="JSON",
                        help="pseudo-mask COCO JSON to show (e.g. written by box2seg export); without it "
                             "the model's box-conditioned masks are shown")
    parser.add_argument("--config-file", default="", metavar="FILE",
                        help="Box2Seg config of a trained model (set MODEL.WEIGHTS in the overrides): adds "
                             "its prediction and one attention map per boxed class")
    parser.add_argument("--max-images", type=int, default=16, metavar="K", help="first K images (0 = all)")
    parser.add_argument("--columns", type=int, default=4, help="panels per grid row")
    parser.add_argument("--scale", type=float, default=1.0, help="panel magnification (small images)")
    parser.add_argument("--allow-partial-weights", action="store_true",
                        help="run even if MODEL.WEIGHTS leaves parts of the model (e.g. its heads) randomly "
                             "initialised; refused by default, naming the keys")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides (last, as for box2seg export), e.g. MODEL.WEIGHTS out/model_final.pth")


def main(args):
    if not args.pseudo_masks and not args.config_file:
        raise SystemExit("box2seg visualize: give --pseudo-masks JSON and/or --config-file (with MODEL.WEIGHTS) "
                         "so there is something to show besides the boxes")
    openimages = getattr(args, "openimages_dataset", ())
    if args.config_file:
        for spec in openimages:  # before the config reads their class names
            register_openimages_spec(spec)
        cfg = setup_predict_cfg(args.config_file, args.opts, coco_datasets=args.coco_dataset)
    else:
        setup_cfg(coco_datasets=args.coco_dataset, openimages_datasets=openimages)  # registers them
    if args.dataset not in DatasetCatalog.list():  # cli prints it as one line, suggesting the flags
        raise UnknownDatasetError(unknown_dataset_message(args.dataset))
    records = DatasetCatalog.get(args.dataset)
    if args.max_images > 0:
        records = records[: args.max_images]
    thing_classes = list(MetadataCatalog.get(args.dataset).thing_classes)

    predictor = None
    if args.config_file:
        if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES != len(thing_classes) + 1:
            raise SystemExit(
                f"box2seg visualize: the model predicts MODEL.SEM_SEG_HEAD.NUM_CLASSES="
                f"{cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES} (background included) but dataset {args.dataset!r} "
                f"has {len(thing_classes)} classes plus background"
            )
        predictor = Box2SegPredictor(cfg, allow_partial_weights=args.allow_partial_weights)
    pseudo = load_pseudo_masks(args.pseudo_masks, thing_classes) if args.pseudo_masks else None
    written = visualize_records(records, thing_classes, args.output, pseudo, predictor, args.columns, args.scale)
    return 0 if written == len(records) else 1
