"""``box2seg predict``: semantic label PNGs and overlays of plain images from a trained model; see
:mod:`box2seg.predict`. Config overrides come last, bare, as for the other commands
(``... --output pred/ MODEL.WEIGHTS out/model_final.pth``); ``--opts KEY VALUE ...`` is a deprecated alias."""
import argparse
import re
import warnings

from ..data.datasets.openimages import register_openimages_spec
from ..predict import Box2SegPredictor, expand_inputs, predict_images, setup_predict_cfg

__all__ = ["add_arguments", "main", "split_overrides"]

_CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+")


def add_arguments(parser):
    parser.add_argument("--config-file", required=True, metavar="FILE", help="Box2Seg config of the model")
    parser.add_argument("--input", required=True, nargs="+", metavar="IMAGES",
                        help="image files, folders or glob patterns (quote the patterns)")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="writes DIR/labels/NAME.png and DIR/overlays/NAME.png")
    parser.add_argument("--opacity", type=float, default=0.5, help="of the prediction in the overlays")
    parser.add_argument("--allow-partial-weights", action="store_true",
                        help="run even if MODEL.WEIGHTS leaves parts of the model (e.g. its heads) randomly "
                             "initialised; refused by default, naming the keys")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="deprecated: put the overrides last without --opts")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides, last on the line, e.g. MODEL.WEIGHTS out/model_final.pth")


def split_overrides(inputs):
    """``--input a.png b/ MODEL.WEIGHTS w.pth``: argparse hands the overrides to ``--input`` (nargs='+');
    they start at the first word shaped like a config key (``SECTION.KEY``)."""
    for i, word in enumerate(inputs):
        if _CONFIG_KEY.fullmatch(word):
            return list(inputs[:i]), list(inputs[i:])
    return list(inputs), []


def main(args):
    inputs, overrides = split_overrides(args.input)
    if not inputs:
        raise SystemExit("box2seg predict: --input needs at least one image, folder or glob before the overrides")
    if args.opts:
        warnings.warn("box2seg predict --opts is deprecated: put the KEY VALUE overrides last, without --opts",
                      FutureWarning, stacklevel=1)
    opts = overrides + list(args.overrides) + list(args.opts)
    for spec in getattr(args, "openimages_dataset", ()):  # before the config reads their class names
        register_openimages_spec(spec)
    cfg = setup_predict_cfg(args.config_file, opts, coco_datasets=args.coco_dataset)
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit("box2seg predict: MODEL.WEIGHTS is empty; pass the trained model, e.g. "
                         "box2seg predict ... --output pred/ MODEL.WEIGHTS output/model_final.pth")
    paths = expand_inputs(inputs)
    failed = predict_images(Box2SegPredictor(cfg, allow_partial_weights=args.allow_partial_weights), paths,
                            args.output, args.opacity)
    return 1 if failed else 0
