#!/usr/bin/env python
"""Box2Seg training and evaluation script, in the shape of detectron2's projects/*/train_net.py.

    python projects/Box2Seg/train_net.py --config-file configs/cpu/box2seg_lite0_shapes.yaml
    python projects/Box2Seg/train_net.py --config-file ... --eval-only MODEL.WEIGHTS out/model_final.pth
    python projects/Box2Seg/train_net.py --config-file ... --num-gpus 8 [--num-machines 2 --machine-rank 0 \
        --dist-url tcp://HOST:PORT]

``--coco-dataset NAME=JSON:IMAGE_ROOT`` and ``--openimages-dataset NAME=BOXES.csv:IMAGE_ROOT`` (repeatable)
register a COCO-format or Open Images box dataset; they are stored in the config (DATASETS.COCO_FORMAT,
DATASETS.OPENIMAGES_FORMAT), so every launched worker registers them too. The Trainer, data and solver
are box2seg.engine's. ``--eval-only`` refuses weights whose heads do not fit the config (naming the keys;
``--allow-partial-weights`` loads them anyway) and test datasets that give nothing to evaluate.
"""
import sys

import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes before any detectron2 import)

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from box2seg.commands import add_openimages_dataset_argument
from box2seg.data.mapper import fuses_grabcut
from box2seg.engine import (GrabCutNotPreparedError, NothingToEvaluateError, PartialWeightsError, Trainer,
                            check_evaluable, check_num_classes, default_setup, load_weights, prepare_caches,
                            setup_cfg)

USER_ERRORS = (GrabCutNotPreparedError, NothingToEvaluateError, PartialWeightsError)


def argument_parser():
    parser = default_argument_parser()
    parser.add_argument(
        "--coco-dataset", action="append", default=[], metavar="NAME=JSON:IMAGE_ROOT",
        help="register a COCO-format box dataset under NAME (repeatable)",
    )
    add_openimages_dataset_argument(parser)
    parser.add_argument(
        "--allow-partial-weights", action="store_true",
        help="--eval-only: evaluate even if MODEL.WEIGHTS leaves parts of the model (e.g. its heads) randomly "
             "initialised; refused by default, naming the keys",
    )
    return parser


def setup(args):
    cfg = setup_cfg(args.config_file, args.opts, getattr(args, "coco_dataset", []),
                    openimages_datasets=getattr(args, "openimages_dataset", ()))
    default_setup(cfg, args)
    check_num_classes(cfg, list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        check_evaluable(cfg)
        prepare_caches(cfg, cfg.DATASETS.TEST, grabcut=fuses_grabcut(cfg))
        model = Trainer.build_model(cfg)
        checkpointer = DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        weights = checkpointer.get_checkpoint_file() if args.resume and checkpointer.has_checkpoint() else cfg.MODEL.WEIGHTS
        load_weights(model, weights, allow_partial=getattr(args, "allow_partial_weights", False))
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    prepare_caches(cfg, cfg.DATASETS.TRAIN, grabcut=True)
    prepare_caches(cfg, cfg.DATASETS.TEST, grabcut=fuses_grabcut(cfg))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except USER_ERRORS as e:  # one line, not a traceback (launched workers report their own)
        sys.exit(f"train_net.py: error: {e}")
