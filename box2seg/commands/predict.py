"""``box2seg predict``: semantic label PNGs and overlays of plain images from a trained model; see
:mod:`box2seg.predict`."""
import argparse

from ..predict import Box2SegPredictor, expand_inputs, predict_images, setup_predict_cfg

__all__ = ["add_arguments", "main"]


def add_arguments(parser):
    parser.add_argument("--config-file", required=True, metavar="FILE", help="Box2Seg config of the model")
    parser.add_argument("--input", required=True, nargs="+", metavar="IMAGES",
                        help="image files, folders or glob patterns (quote the patterns)")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="writes DIR/labels/NAME.png and DIR/overlays/NAME.png")
    parser.add_argument("--opacity", type=float, default=0.5, help="of the prediction in the overlays")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides, last on the line, e.g. --opts MODEL.WEIGHTS out/model_final.pth")


def main(args):
    cfg = setup_predict_cfg(args.config_file, args.opts, coco_datasets=args.coco_dataset)
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit("box2seg predict: MODEL.WEIGHTS is empty; pass the trained model, e.g. "
                         "--opts MODEL.WEIGHTS output/model_final.pth")
    paths = expand_inputs(args.input)
    failed = predict_images(Box2SegPredictor(cfg), paths, args.output, args.opacity)
    return 1 if failed else 0
