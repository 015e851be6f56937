"""``box2seg adapt``: fine-tune a trained model on the boxes of the images it will label (test-time
adaptation, :mod:`box2seg.engine.adaptation`, docs/adaptation.md), then hand its weights to ``box2seg export``."""
import argparse

from ..engine import AdaptationError, adapt_weights, adapts, setup_cfg

__all__ = ["add_arguments", "main"]


def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Fine-tune a trained Box2Seg model for ADAPT.MAX_ITER iterations on the boxes and GrabCut labels of the\n"
        "images it is about to label (never their masks); prints the adapted weights for box2seg export.\n\n"
        "  box2seg adapt --config-file CFG --dataset NAME --output DIR MODEL.WEIGHTS model_final.pth\n"
        "  box2seg export --config-file CFG --dataset NAME --output EXPORT MODEL.WEIGHTS <printed path>"
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the model's training config")
    parser.add_argument("--dataset", required=True, action="append", metavar="NAME",
                        help="registered dataset whose boxes to adapt to (repeatable)")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="folder for the adapted run (a subfolder named by what it was adapted from)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides: MODEL.WEIGHTS (required), ADAPT.MAX_ITER (if the config has 0)")


def main(args):
    cfg = setup_cfg(args.config_file, args.opts, coco_datasets=getattr(args, "coco_dataset", []),
                    openimages_datasets=getattr(args, "openimages_dataset", ()))
    if not adapts(cfg):
        raise AdaptationError(f"{args.config_file} sets ADAPT.MAX_ITER {cfg.ADAPT.MAX_ITER}: nothing to adapt "
                              "(add ADAPT.MAX_ITER 100 to the overrides)")
    adapted = adapt_weights(cfg, args.dataset, cfg.MODEL.WEIGHTS, args.output)
    print(f"adapted weights: {adapted}", flush=True)
    return 0
