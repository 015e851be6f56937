"""``box2seg score``: a pseudo-mask COCO file against the ground truth of the same boxes; see
:mod:`box2seg.evaluation.score`."""
from ..data.cache import atomic_write_json
from ..engine import setup_cfg
from ..evaluation.score import ScoreError, format_table, json_ready, score_files

__all__ = ["add_arguments", "main"]


def add_arguments(parser):
    parser.description = ("Score per-box masks (a COCO instances JSON such as box2seg export's pseudo_masks.json) "
                          "against ground-truth masks of the same boxes: per-instance mask IoU and semantic mIoU.")
    parser.add_argument("--gt", required=True, metavar="GT.json", help="ground-truth COCO instances JSON")
    parser.add_argument("--pred", required=True, metavar="PRED.json",
                        help="predicted masks: same image ids and annotation ids as --gt")
    parser.add_argument("--json-out", default="", metavar="FILE", help="also write the results as JSON")


def main(args):
    # Registers them, as every subcommand does.
    setup_cfg(coco_datasets=args.coco_dataset, openimages_datasets=getattr(args, "openimages_dataset", ()))
    try:
        results = score_files(args.gt, args.pred)
    except ScoreError as e:
        print(f"box2seg score: error: {e}", flush=True)
        return 2
    print(format_table(results), flush=True)
    if args.json_out:
        atomic_write_json(args.json_out, json_ready(results))
    return 0
