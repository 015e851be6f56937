"""Pseudo-masks for Mask R-CNN from a trained Box2Seg model (``box2seg export``).

Every input box gets one mask, by the box-conditioned rule (:mod:`box2seg.modeling.box_conditioned`, the
model's ``"box_masks"``), with the GrabCut and ellipse fallbacks of :mod:`.masks` for empty ones. Crowd
annotations are copied through unchanged.

The result is a COCO instances JSON that a Mask R-CNN config can train on directly: the input's images and
categories sections, and per annotation the input's id, image id, original ``bbox`` (XYWH, read back from
the source JSON for COCO-format datasets, :mod:`.source`), the dataset's own category id, ``iscrowd``, a
compressed RLE ``segmentation``, ``area`` = mask area and ``mask_source`` (``box2seg`` / ``grabcut`` /
``ellipse``). Annotations the dataset loader skipped (invalid box, unknown category) are not exported; the
summary counts them.

- :mod:`.job`: :func:`export_dataset`, one shard of the dataset, resumable, fingerprinted;
- :mod:`.merge`: :func:`merge_shards`, byte-identical to an unsharded run, streaming;
- :mod:`.indexed`: COCO JSONs written by streaming with an index of every entry's offset;
- :mod:`.shards`: shard files / folders / a merged export as a lazy training set (:class:`IndexedCocoDataset`);
- :mod:`.inference`: the model's part (label PNG, box masks, scores), run by the local or the Ray engine;
- :mod:`.source`: the source JSON's header, annotations and their order;
- :mod:`.masks`: one image's masks, the empty-mask fallbacks, the GrabCut cache access;
- :mod:`.folder`: the output folder's files (listed there), locks and JSON writer.

The command line is :mod:`box2seg.commands.export`.
"""
from .folder import OUTPUT_FILE, ExportError
from .job import EXPORT_VERSION, export_config, export_dataset, export_fingerprint, parse_shard
from .masks import MASK_SOURCES, fill_empty_masks
from .merge import merge_shards
from .shards import IndexedCocoDataset, pseudo_mask_dataset, register_pseudo_masks, resolve_pseudo_mask_files
from .source import Source

__all__ = [
    "ExportError",
    "OUTPUT_FILE",
    "MASK_SOURCES",
    "EXPORT_VERSION",
    "export_config",
    "export_dataset",
    "export_fingerprint",
    "merge_shards",
    "fill_empty_masks",
    "parse_shard",
    "Source",
    "IndexedCocoDataset",
    "pseudo_mask_dataset",
    "register_pseudo_masks",
    "resolve_pseudo_mask_files",
]

