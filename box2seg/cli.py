"""The ``box2seg`` command. Each subcommand lives next to the feature it drives.

A subcommand module defines ``add_arguments(parser)`` and ``main(args) -> int``, and keeps its heavy
imports inside ``main`` so building the parser stays fast. Every subcommand accepts the repeatable
``--coco-dataset NAME=JSON:IMAGE_ROOT`` flag, registering a user's own COCO-format box dataset first.
"""
import argparse
import importlib
import logging
import sys

import box2seg  # noqa: F401  (compat fixes before any detectron2 import)

# name -> (module, one-line help)
COMMANDS = {
    "prepare-grabcut": ("box2seg.data.grabcut_job", "precompute GrabCut pseudo-labels for a dataset (parallel, cached, resumable)"),
    "export": ("box2seg.export", "export one pseudo-mask per box (COCO JSON, RLE) and semantic label PNGs from a trained model (resumable, shardable)"),
    "score": ("box2seg.evaluation.score", "score a pseudo-mask COCO file against ground-truth masks of the same boxes (instance IoU, semantic mIoU)"),
    "predict": ("box2seg.predict", "segment images with a trained Box2Seg model: semantic label PNGs and overlays"),
    "visualize": ("box2seg.visualize", "one PNG grid per dataset image: boxes, pseudo-masks, prediction, attention maps"),
    "train-maskrcnn": ("box2seg.maskrcnn", "train detectron2's Mask R-CNN on pseudo-masks; segm/bbox AP on true masks"),
}


def add_coco_dataset_argument(parser):
    parser.add_argument(
        "--coco-dataset",
        action="append",
        default=[],
        metavar="NAME=JSON:IMAGE_ROOT",
        help="register a COCO-format box dataset under NAME before running (repeatable)",
    )


def register_cli_datasets(specs):
    """Register the datasets given by ``--coco-dataset`` flags (or the BOX2SEG.COCO_DATASETS config key)."""
    from box2seg.data.datasets.coco import register_coco_spec

    for spec in specs:
        register_coco_spec(spec)


def build_parser():
    parser = argparse.ArgumentParser(prog="box2seg", description="Box2Seg: segmentation from bounding boxes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_coco_dataset_argument(p)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    register_cli_datasets(args.coco_dataset)
    return importlib.import_module(args._module).main(args) or 0


if __name__ == "__main__":
    sys.exit(main())
