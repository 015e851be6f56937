"""Join the shards of an export folder into one COCO JSON.

The merged file is byte-identical to an unsharded run's: both are assembled here, by the same writer, from
annotations sorted by their position in the source annotation list.
"""
import json
import time
from pathlib import Path

from ..data.cache import atomic_write_bytes, folder_lock
from .folder import (HEADER_FILE, OUTPUT_FILE, SUMMARY_FILE, ExportError, dumps, find_shards, fingerprint_diff,
                     read_json, remove_stale_temps)
from .masks import sum_stats

__all__ = ["SHARD_FORMAT", "merge_shards"]

SHARD_FORMAT = "box2seg-export-shard"  # the "format" field of a shard file


def merge_shards(output, num_shards=None):
    """Join ``output/shards/*`` into ``output/pseudo_masks.json`` (atomic) and ``summary.json``.

    Refuses a missing header, shard files of different N (unless ``num_shards`` picks one), missing shards
    and shards made with different inputs. Returns the summary dict.
    """
    start = time.perf_counter()
    output = Path(output).expanduser()
    header_path = output / HEADER_FILE
    with folder_lock(output):
        header = read_json(header_path) if header_path.is_file() else None
        if header is None:
            raise ExportError(f"{output} holds no export ({header_path} is missing or unreadable): run "
                              "`box2seg export --config-file ... --dataset ... --output DIR --shard I/N` first")
        found = find_shards(output / "shards")
        if num_shards is not None:
            found = {n: v for n, v in found.items() if n == num_shards}
        if not found:
            raise ExportError(f"no shard outputs in {output / 'shards'}: run the export jobs first")
        if len(found) > 1:
            listing = "; ".join(f"N={n}: {len(v)} file(s)" for n, v in sorted(found.items()))
            raise ExportError(f"{output / 'shards'} mixes shard outputs of different N ({listing}); remove the ones "
                              "of the other split")
        ((n, files),) = found.items()
        absent = [i for i in range(n) if i not in files]
        if absent:
            raise ExportError(f"cannot merge {output}: missing shard(s) {', '.join(map(str, absent))} of {n} "
                              f"(run `box2seg export ... --shard I/{n}` for them)")
        remove_stale_temps(output, {Path(OUTPUT_FILE).stem, Path(SUMMARY_FILE).stem})
        fingerprint = header["fingerprint"]
        annotations, stats, images = [], [], 0
        for i in range(n):
            data = read_json(files[i])
            if data is None or data.get("format") != SHARD_FORMAT:
                raise ExportError(f"shard file {files[i]} is unreadable or not a box2seg export shard")
            if data.get("fingerprint") != fingerprint or data.get("shard") != i or data.get("num_shards") != n:
                diff = fingerprint_diff(data.get("fingerprint") or {}, fingerprint)
                raise ExportError(f"shard file {files[i]} is inconsistent with {header_path}: "
                                  f"{diff or 'shard index / count differ from its name'} (re-run that shard)")
            annotations.extend(data["annotations"])
            stats.append(data["stats"])
            images += data["images"]
        if images != fingerprint["images"]:
            raise ExportError(f"shards of {output} cover {images} images but the dataset has {fingerprint['images']}")
        annotations.sort(key=lambda item: item[0])
        orders = [item[0] for item in annotations]
        if len(set(orders)) != len(orders):
            raise ExportError(f"shards of {output} export some annotation more than once")
        coco = dict(header["header"])
        coco["annotations"] = [item[1] for item in annotations]
        final = output / OUTPUT_FILE
        atomic_write_bytes(final, dumps(coco))
        totals = sum_stats(stats)
        source_count = header.get("source_annotations")
        not_exported = None if source_count is None else source_count - header["loaded_annotations"]
        summary = {"dataset": fingerprint["dataset"], "num_shards": n, "images": images, **totals,
                   "not_exported": not_exported, "annotations": len(annotations), "output": str(final)}
        atomic_write_bytes(output / SUMMARY_FILE, json.dumps(summary, indent=1, sort_keys=True).encode())
    summary["seconds"] = time.perf_counter() - start
    return summary
