#!/usr/bin/env python
"""Box2Seg training and evaluation script, in the shape of detectron2's projects/*/train_net.py.

    python projects/Box2Seg/train_net.py --config-file configs/cpu/box2seg_lite0_shapes.yaml
    python projects/Box2Seg/train_net.py --config-file ... --eval-only MODEL.WEIGHTS out/model_final.pth
    python projects/Box2Seg/train_net.py --config-file ... --num-gpus 8 [--num-machines 2 --machine-rank 0 \
        --dist-url tcp://HOST:PORT]

``--coco-dataset NAME=JSON:IMAGE_ROOT`` (repeatable) registers a COCO-format box dataset; it is stored in
the config (BOX2SEG.COCO_DATASETS), so every launched worker registers it too.
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes before any detectron2 import)

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, hooks, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from box2seg import engine


class Trainer(DefaultTrainer):
    """DefaultTrainer with Box2Seg's data (boxes + GrabCut labels) and evaluators."""

    @classmethod
    def build_train_loader(cls, cfg):
        return engine.build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return engine.build_test_loader(cfg, dataset_name)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return engine.build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return engine.build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return engine.build_evaluator(cfg, dataset_name)


class TrainOnlyTrainer(Trainer):
    """The Trainer without its end-of-training evaluation, for scripts that score the model themselves
    (the demo, the benchmarks) and would otherwise run inference over the test set twice."""

    def build_hooks(self):
        return [h for h in super().build_hooks() if not isinstance(h, hooks.EvalHook)]


def argument_parser():
    parser = default_argument_parser()
    parser.add_argument(
        "--coco-dataset", action="append", default=[], metavar="NAME=JSON:IMAGE_ROOT",
        help="register a COCO-format box dataset under NAME (repeatable)",
    )
    return parser


def setup(args):
    cfg = engine.get_box2seg_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.BOX2SEG.COCO_DATASETS = list(cfg.BOX2SEG.COCO_DATASETS) + list(getattr(args, "coco_dataset", []))
    cfg.freeze()
    default_setup(cfg, args)
    engine.register_config_datasets(cfg)
    engine.check_num_classes(cfg, list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        engine.prepare_caches(cfg, cfg.DATASETS.TEST, grabcut=False)
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    engine.prepare_caches(cfg, cfg.DATASETS.TRAIN, grabcut=True)
    engine.prepare_caches(cfg, cfg.DATASETS.TEST, grabcut=False)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
