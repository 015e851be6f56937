"""``box2seg export``: pseudo-masks (COCO JSON, RLE) and label PNGs from a trained model; see
:mod:`box2seg.export` and docs/export.md."""
import argparse

from ..distributed import ENGINES, export_engine
from ..engine import PartialWeightsError, setup_cfg
from ..export import ExportError, export_config, export_dataset, merge_shards, parse_shard

__all__ = ["add_arguments", "main", "format_summary"]


def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Export one mask per input box (COCO instances JSON with RLE masks) and a semantic label PNG per image\n"
        "from a trained Box2Seg model, for training Mask R-CNN. Resumable: re-run the same command after an\n"
        "interruption. Cluster arrays: run --shard I/N for I = 0..N-1 on a shared --output, then --merge DIR.\n\n"
        "  box2seg export --config-file CFG --dataset NAME --output DIR MODEL.WEIGHTS model_final.pth\n"
        "  box2seg export ... --shard 3/8      (one job of eight)\n"
        "  box2seg export --merge DIR          (-> DIR/pseudo_masks.json)"
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="the model's training config")
    parser.add_argument("--dataset", default="", metavar="NAME", help="registered dataset to export")
    parser.add_argument("--output", default="", metavar="DIR", help="output folder")
    parser.add_argument("--shard", default="0/1", metavar="I/N",
                        help="export only records i with i %% N == I (default 0/1: everything)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="reuse the images already exported to DIR (the default; the flag only documents it)")
    mode.add_argument("--force", action="store_true",
                      help="recompute this shard's images, replacing an export made with another model/config")
    parser.add_argument("--merge", default="", metavar="DIR",
                        help="join the shard outputs in DIR into DIR/pseudo_masks.json (no other option)")
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: the model in this process (default); ray: actors holding the model, one GPU "
                        "each where the cluster has GPUs (pip install -e '.[ray]')")
    parser.add_argument("--address", default=None, metavar="ADDR",
                        help="with --engine ray: the cluster to connect to (e.g. auto or HOST:6379); default: "
                        "start a local one")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="with --engine ray: model replicas (default: one per GPU, else one per CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--allow-partial-weights", action="store_true",
                        help="run even if MODEL.WEIGHTS leaves parts of the model (e.g. its heads) randomly "
                             "initialised; refused by default, naming the keys")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. MODEL.WEIGHTS out/model_final.pth MODEL.DEVICE cpu")


def main(args):
    try:
        if args.merge:
            extra = [flag for flag, value in (("--config-file", args.config_file), ("--dataset", args.dataset),
                                              ("--output", args.output), ("--force", args.force),
                                              ("--engine", args.engine != "local"), ("--address", args.address),
                                              ("--shard", args.shard != "0/1"), ("KEY VALUE", args.opts))
                     if value]
            if extra:
                raise ExportError(f"--merge DIR takes no other option (got {', '.join(extra)})")
            summary = merge_shards(args.merge)
            print(format_summary(summary), flush=True)
            return 0
        missing = [flag for flag, value in (("--config-file", args.config_file), ("--dataset", args.dataset),
                                            ("--output", args.output)) if not value]
        if missing:
            raise ExportError(f"missing {', '.join(missing)} (or use --merge DIR)")
        shard = parse_shard(args.shard)
        cfg = setup_cfg(args.config_file, args.opts, coco_datasets=getattr(args, "coco_dataset", []),
                        openimages_datasets=getattr(args, "openimages_dataset", ()))
        cfg = export_config(cfg, args.dataset)
        engine = export_engine(args.engine, args.address, args.workers, args.allow_partial_weights)
        summary = export_dataset(cfg, args.dataset, args.output, shard=shard, force=args.force,
                                 progress=not args.no_progress, allow_partial_weights=args.allow_partial_weights,
                                 engine=engine)
        print(format_summary(summary), flush=True)
        return 0
    except (ExportError, PartialWeightsError) as e:
        print(f"box2seg export: error: {e}", flush=True)
        return 2


def format_summary(s):
    """The closing line of an export (``shard`` in ``s``) or a merge."""
    where = f"shard {s['shard']}/{s['num_shards']}" if "shard" in s else f"{s['num_shards']} shard(s) merged"
    line = (f"export {s['dataset']} ({where}): {s['images']} images"
            + (f" ({s['computed']} computed, {s['reused']} reused)" if "computed" in s else "")
            + f", {s['boxes']} boxes: {s['box2seg']} box-conditioned masks, {s['grabcut']} empty -> GrabCut, "
            f"{s['ellipse']} empty -> ellipse; {s['crowd']} crowd copied")
    if s.get("not_exported"):
        line += f"; {s['not_exported']} source annotations not exported (skipped by the dataset loader)"
    line += f"; {s['seconds']:.1f} s"
    if s.get("output"):
        line += f" -> {s['output']}"
    return line
