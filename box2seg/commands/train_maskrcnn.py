"""``box2seg train-maskrcnn``: detectron2's Mask R-CNN trained on pseudo-masks, segm / bbox AP on true
masks and the mask head's score given the true boxes; see :mod:`box2seg.maskrcnn`. Without the entry point: ``python -m box2seg.cli train-maskrcnn ...``."""
import argparse
import logging
import os

from detectron2.engine import default_setup, launch
from detectron2.utils import comm

from .. import maskrcnn
from ..engine import setup_cfg

__all__ = ["add_arguments", "main", "format_results"]

logger = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="detectron2 Mask R-CNN config, e.g. configs/maskrcnn/mask_rcnn_lite0_FPN_pseudo.yaml")
    parser.add_argument("--train-json", required=True, nargs="+", metavar="JSON",
                        help="pseudo-masks: a COCO instances JSON, or box2seg export's shard files / export folder "
                             "(read lazily: no process holds the whole set)")
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


def setup(args):
    """The frozen config of this process, set up the detectron2 way (``default_setup``: logging, the
    config saved to OUTPUT_DIR, seeding)."""
    cfg = maskrcnn.setup_maskrcnn_cfg(
        args.config_file, args.opts, train_json=args.train_json, image_root=args.image_root,
        eval_json=args.eval_json, eval_image_root=args.eval_image_root, eval_only=args.eval_only,
        coco_datasets=args.coco_dataset)
    default_setup(cfg, args)
    return cfg


def _worker(args):
    """One process's job (called directly, or by detectron2's ``launch`` in each worker)."""
    cfg = setup(args)
    results = maskrcnn.train_and_evaluate(cfg, resume=args.resume, eval_only=args.eval_only)
    if comm.is_main_process():
        maskrcnn.write_results(cfg.OUTPUT_DIR, results, args.config_file, args.train_json, args.eval_json)
    return results


def main(args):
    # OUTPUT_DIR as setup() will see it, without building the model or registering the JSONs.
    output_dir = setup_cfg(args.config_file, args.opts, openimages_datasets=getattr(args, "openimages_dataset", ()),
                           freeze=False).OUTPUT_DIR
    results_path = os.path.join(output_dir, maskrcnn.RESULTS_FILE)
    if os.path.exists(results_path):
        os.remove(results_path)  # a stale file must not pass for this run's results
    launch(_worker, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
    if args.machine_rank != 0:
        return 0
    if not os.path.exists(results_path):
        raise RuntimeError(f"training finished without writing {results_path}")
    results = maskrcnn.read_results(output_dir)
    for line in format_results(results):
        logger.info(line)
    if args.eval_json and "segm" not in results:
        logger.warning("no segm result: the model produced no detections on the evaluation images")
    logger.info(f"results: {results_path}")
    return 0



def format_results(results):
    """Report lines: mask AP and box AP (flagged when box AP makes them uninformative) and the mask head's
    score given the true boxes (per box and painted, the one scorer)."""
    lines = []
    for task in ("segm", "bbox"):
        if task in results:
            m = results[task]
            lines.append(f"{task}: AP {m.get('AP', float('nan')):.1f}  AP50 {m.get('AP50', float('nan')):.1f}  "
                         f"AP75 {m.get('AP75', float('nan')):.1f}")
    note = maskrcnn.box_ap_note(results) if "bbox" in results else ""
    if note:
        lines.append(f"mask AP / box AP {note}")
    given = results.get(maskrcnn.GIVEN_BOXES)
    if given:
        lines.append(f"mask head given the true boxes ({given['count']} boxes): per box {given['per_box']:.3f} "
                     f"(small {given['small']:.3f}, medium {given['medium']:.3f}, large {given['large']:.3f}), "
                     f"painted {given['painted']:.3f}")
    return lines
