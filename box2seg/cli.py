"""The ``box2seg`` command: dispatch to one module of :mod:`box2seg.commands` per subcommand.

The top-level parser is built from the static table below, and only the chosen subcommand's module is
imported (its ``add_arguments`` fills its parser, its ``main`` runs), so ``box2seg --help`` imports no
command module. Every subcommand accepts the repeatable ``--coco-dataset NAME=JSON:IMAGE_ROOT`` flag.
"""
import argparse
import importlib
import logging
import sys

from .commands import add_coco_dataset_argument

__all__ = ["COMMANDS", "build_parser", "main", "add_coco_dataset_argument"]

# (name, module, one-line help)
COMMANDS = (
    ("prepare-grabcut", "box2seg.commands.prepare_grabcut",
     "precompute GrabCut pseudo-labels for a dataset (parallel, cached, resumable)"),
    ("export", "box2seg.commands.export",
     "export one pseudo-mask per box (COCO JSON, RLE) and semantic label PNGs from a trained model "
     "(resumable, shardable)"),
    ("score", "box2seg.commands.score",
     "score a pseudo-mask COCO file against ground-truth masks of the same boxes (instance IoU, semantic mIoU)"),
    ("predict", "box2seg.commands.predict",
     "segment images with a trained Box2Seg model: semantic label PNGs and overlays"),
    ("visualize", "box2seg.commands.visualize",
     "one PNG grid per dataset image: boxes, pseudo-masks, prediction, attention maps"),
    ("train-maskrcnn", "box2seg.commands.train_maskrcnn",
     "train detectron2's Mask R-CNN on pseudo-masks; segm/bbox AP on true masks"),
)


def _chosen_command(argv):
    """The subcommand named on the line: the first word that is not an option (the top-level parser has
    no option taking a value), or None."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(command=None):
    """The ``box2seg`` parser; only ``command``'s subparser gets its arguments (and its module imported)."""
    parser = argparse.ArgumentParser(prog="box2seg", description="Box2Seg: segmentation from bounding boxes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == command:
            add_coco_dataset_argument(p)
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    args = build_parser(_chosen_command(argv)).parse_args(argv)
    return importlib.import_module(args._module).main(args) or 0


if __name__ == "__main__":
    sys.exit(main())
