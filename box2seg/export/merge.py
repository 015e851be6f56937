"""Join the shards of an export folder into one COCO JSON, by streaming.

The merged file is byte-identical to an unsharded run's: both are assembled here, by the same writer, from
annotations sorted by their position in the source annotation list. Nothing is parsed whole: the image
list is copied line by line from ``header_images.jsonl``; the annotations are a k-way merge (``heapq``) of
the shards' entries, each read by offset from its shard's indexed COCO JSON (:mod:`.indexed`) and copied
as bytes. Memory is the shards' indexes (about 24 bytes per annotation) and one entry per shard.
"""
import heapq
import json
import time
from pathlib import Path

from ..data.cache import atomic_write_bytes, folder_lock
from .folder import (HEADER_FILE, HEADER_IMAGES_FILE, OUTPUT_FILE, SUMMARY_FILE, ExportError, find_shards,
                     fingerprint_diff, read_json, remove_stale_temps)
from .indexed import CocoIndex, index_path, write_indexed_coco
from .masks import sum_stats

__all__ = ["SHARD_FORMAT", "MERGED_FORMAT", "merge_shards"]

SHARD_FORMAT = "box2seg-export-shard"  # the "format" field of a shard file's index
MERGED_FORMAT = "box2seg-export"  # the "format" field of the merged file's index


def _header_images(path):
    """``(position, entry bytes)`` of the header's image list, one line each."""
    with open(path, "rb") as f:
        for position, line in enumerate(f):
            yield position, line.rstrip(b"\n")


def _shard_annotations(index, chunk=1 << 12):
    """``(sort key, image position in the export, iscrowd, entry bytes)`` of a shard, in its (source) order.
    The index columns are turned into Python values a chunk at a time (180 bytes an annotation as Python
    values: whole, they were the bulk of the merge's memory; 4096 of them per shard cost 0.7 MB)."""
    header_pos = index.image_header_pos
    with open(index.json_file, "rb", buffering=1 << 20) as f:
        for start in range(0, index.num_annotations, chunk):
            rows = slice(start, start + chunk)
            for offset, length, order, image, crowd in zip(
                    index.ann_offset[rows].tolist(), index.ann_length[rows].tolist(), index.ann_order[rows].tolist(),
                    header_pos[index.ann_image[rows]].tolist(), index.ann_crowd[rows].tolist()):
                f.seek(offset)  # entries follow each other (one comma apart): the buffer serves most seeks
                yield order, image, crowd, f.read(length)


def _unique(entries, output):
    """Pass the merged entries through, refusing an annotation exported by two shards."""
    previous = None
    for entry in entries:
        if entry[0] == previous:
            raise ExportError(f"shards of {output} export some annotation more than once (sort key {previous})")
        previous = entry[0]
        yield entry


def merge_shards(output, num_shards=None):
    """Join ``output/shards/*`` into ``output/pseudo_masks.json`` (+ its index; atomic) and ``summary.json``.

    Refuses a missing header, shard files of different N (unless ``num_shards`` picks one), missing shards
    and shards made with different inputs. Returns the summary dict.
    """
    start = time.perf_counter()
    output = Path(output).expanduser()
    header_path = output / HEADER_FILE
    with folder_lock(output):
        header = read_json(header_path) if header_path.is_file() else None
        if header is None or "sections" not in header:
            raise ExportError(f"{output} holds no export ({header_path} is missing, unreadable or of an older "
                              "box2seg): run `box2seg export --config-file ... --dataset ... --output DIR --shard "
                              "I/N` first")
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
        final = output / OUTPUT_FILE
        remove_stale_temps(output, {final.stem, index_path(final).stem, Path(SUMMARY_FILE).stem})
        fingerprint = header["fingerprint"]
        indexes, stats, images = [], [], 0
        for i in range(n):
            try:
                index = CocoIndex(files[i])
            except ExportError as e:
                raise ExportError(f"shard file {files[i]} is unreadable or not a box2seg export shard: {e}") from None
            meta = index.meta
            if meta.get("format") != SHARD_FORMAT:
                raise ExportError(f"shard file {files[i]} is not a box2seg export shard")
            if meta.get("fingerprint") != fingerprint or meta.get("shard") != i or meta.get("num_shards") != n:
                diff = fingerprint_diff(meta.get("fingerprint") or {}, fingerprint)
                raise ExportError(f"shard file {files[i]} is inconsistent with {header_path}: "
                                  f"{diff or 'shard index / count differ from its name'} (re-run that shard)")
            indexes.append(index)
            stats.append(meta["stats"])
            images += meta["images"]
        if images != fingerprint["images"]:
            raise ExportError(f"shards of {output} cover {images} images but the dataset has {fingerprint['images']}")
        totals = sum_stats(stats)
        annotations = _unique(heapq.merge(*(_shard_annotations(x) for x in indexes), key=lambda e: e[0]), output)
        written = write_indexed_coco(final, header["sections"], _header_images(output / HEADER_IMAGES_FILE),
                                     annotations, {"format": MERGED_FORMAT, "fingerprint": fingerprint,
                                                   "stats": totals})
        source_count = header.get("source_annotations")
        not_exported = None if source_count is None else source_count - header["loaded_annotations"]
        summary = {"dataset": fingerprint["dataset"], "num_shards": n, "images": images, **totals,
                   "not_exported": not_exported, "annotations": written["num_annotations"], "output": str(final)}
        atomic_write_bytes(output / SUMMARY_FILE, json.dumps(summary, indent=1, sort_keys=True).encode())
    summary["seconds"] = time.perf_counter() - start
    return summary
