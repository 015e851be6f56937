"""One module per ``box2seg`` subcommand, the only place (with ``box2seg/cli.py``) that argparse lives, as
detectron2 keeps it in ``engine/defaults.py``: ``add_arguments(parser)`` fills the subcommand's parser and
``main(args) -> int`` runs it on the library's functions. ``cli.py`` adds the repeatable
``--coco-dataset NAME=JSON:IMAGE_ROOT`` flag to every subcommand (:func:`add_coco_dataset_argument`);
``main`` hands it to ``box2seg.engine.setup_cfg(..., coco_datasets=args.coco_dataset)``, which registers
the datasets. This package imports nothing, so building the top-level parser stays fast."""

__all__ = ["add_coco_dataset_argument"]


def add_coco_dataset_argument(parser):
    parser.add_argument(
        "--coco-dataset",
        action="append",
        default=[],
        metavar="NAME=JSON:IMAGE_ROOT",
        help="register a COCO-format box dataset under NAME before running (repeatable)",
    )
