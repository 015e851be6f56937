"""Data for training and testing: generated datasets, painted ground truth and GrabCut labels prepared by
rank 0 behind a barrier, and loaders whose records carry the GrabCut files the mapper reads. With more than
one process, missing GrabCut labels are refused with the command that prepares them: the other ranks would
wait at the barrier (detectron2's 30-minute timeout) while rank 0 ran GrabCut for hours."""
import logging

from detectron2.data import DatasetCatalog, DatasetFromList, build_detection_test_loader, build_detection_train_loader
from detectron2.utils import comm

from ..data.grabcut import GrabCutSettings, attach_grabcut_files, grabcut_cache_dir, grabcut_file_for, prepare_command
from ..data.grabcut_job import prepare_dataset
from ..data.chip_mapper import ChipDatasetMapper, chip_items
from ..data.datasets.lazy import ConcatRecords, PairSequence, constant_field, is_lazy
from ..data.mapper import Box2SegDatasetMapper, fuses_grabcut
from ..data.pixel_labels import mark_pixel_labels

__all__ = [
    "GrabCutNotPreparedError",
    "build_test_loader",
    "build_train_loader",
    "evaluation_records",
    "prepare_caches",
    "train_dicts_with_grabcut",
]

logger = logging.getLogger(__name__)


class GrabCutNotPreparedError(ValueError):
    """GrabCut labels are missing and this multi-process run will not compute them behind a barrier."""


def _missing_grabcut(name, dicts, settings):
    folder = grabcut_cache_dir(name, dicts, settings)
    ids = dicts.image_ids() if is_lazy(dicts) else (r["image_id"] for r in dicts)  # lazy: no record built
    return sum(not grabcut_file_for(folder, {"image_id": i}).is_file() for i in ids)


def prepare_caches(cfg, dataset_names, grabcut=True):
    """Build generated datasets, painted ground truth and (optionally) GrabCut labels on rank 0 only;
    the other ranks wait at a barrier and then read the finished cache. With more than one process, missing
    GrabCut labels are refused on every rank (:class:`GrabCutNotPreparedError`, with the
    ``box2seg prepare-grabcut`` command to run first) instead of prepared while the others wait."""
    settings = GrabCutSettings.from_config(cfg)
    missing = []
    if comm.is_main_process():
        for name in dataset_names:
            dicts = DatasetCatalog.get(name)  # generates / paints on first use
            if not (grabcut and cfg.GRABCUT.PREPARE_IF_MISSING):
                continue
            if comm.get_world_size() > 1:
                count = _missing_grabcut(name, dicts, settings)
                if count:
                    missing.append((name, count, len(dicts)))
            else:
                prepare_dataset(name, dicts, settings, workers=cfg.DATALOADER.NUM_WORKERS)
    if comm.get_world_size() > 1:
        missing = comm.all_gather(missing)[0]  # every rank refuses, none waits at the barrier
    if missing:
        lines = "\n".join(f"    {prepare_command(name, settings)}" for name, _, _ in missing)
        counts = ", ".join(f"{name!r}: {count} of {total} images" for name, count, total in missing)
        raise GrabCutNotPreparedError(
            f"GrabCut labels are missing ({counts}) and this run has {comm.get_world_size()} processes: the "
            f"other ranks would wait for rank 0 at a barrier that times out after 30 minutes. Prepare them "
            f"first (add --workers N), then start the run again:\n{lines}")
    comm.synchronize()


def train_dicts_with_grabcut(cfg):
    """The training records with their GrabCut files: a list, or, when a dataset is a lazy record sequence
    (Open Images), a sequence built on access (:class:`~box2seg.data.datasets.lazy.ConcatRecords` of several),
    never copied into a list of dicts."""
    settings = GrabCutSettings.from_config(cfg)
    parts = []
    for name in cfg.DATASETS.TRAIN:
        records = DatasetCatalog.get(name)
        attach_grabcut_files(name, records, settings)
        parts.append(records)
    if not any(is_lazy(p) for p in parts):
        dicts = [r for p in parts for r in p]
    else:
        dicts = parts[0] if len(parts) == 1 else ConcatRecords(parts)
        if cfg.MODEL.BOX2SEG.PIXEL_LABELS.ENABLED:
            logger.warning("MODEL.BOX2SEG.PIXEL_LABELS with a lazy dataset (%s): its %d records are copied into a "
                           "list to mark the pixel-label images", tuple(cfg.DATASETS.TRAIN), len(dicts))
            dicts = list(dicts)
        else:  # what mark_pixel_labels sets when PIXEL_LABELS is off, added as each record is built
            dicts.add_field("supervision", constant_field, "boxes")
    if not len(dicts):
        raise ValueError(f"DATASETS.TRAIN={tuple(cfg.DATASETS.TRAIN)} gives no images")
    if not is_lazy(dicts):
        mark_pixel_labels(cfg, dicts)  # MODEL.BOX2SEG.PIXEL_LABELS: which images train on their true mask
    return dicts


def evaluation_records(cfg, dataset_name):
    """``dataset_name``'s records with their GrabCut files attached (what the GrabCut baseline reads)."""
    records = DatasetCatalog.get(dataset_name)
    attach_grabcut_files(dataset_name, records, GrabCutSettings.from_config(cfg))
    return records


def build_train_loader(cfg):
    """Whole images (the paper's setting), or in chip mode (MODEL.BOX2SEG.CHIPS.ENABLED) one box-centred chip
    per item of the (image, box) list, which detectron2's seeded sampler shuffles."""
    records = train_dicts_with_grabcut(cfg)
    lazy = is_lazy(records)
    if cfg.MODEL.BOX2SEG.CHIPS.ENABLED:
        items = PairSequence(*records.box_items()) if lazy else chip_items(records)  # int arrays, not tuples
        if not len(items):
            raise ValueError(f"DATASETS.TRAIN={tuple(cfg.DATASETS.TRAIN)} has no non-crowd box to centre a chip on")
        return build_detection_train_loader(cfg, mapper=ChipDatasetMapper(cfg, records), dataset=items)
    mapper = Box2SegDatasetMapper(cfg, is_train=True)
    if lazy:  # wrapped, not copied: each item is built when the loader asks for it
        records = DatasetFromList(records, copy=False, serialize=False)
    return build_detection_train_loader(cfg, mapper=mapper, dataset=records)


def build_test_loader(cfg, dataset_name):
    mapper = Box2SegDatasetMapper(cfg, is_train=False)
    if not fuses_grabcut(cfg):
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)
    # inference averages each box's own GrabCut mask in: the records with their cached labels (a missing
    # image is named with the prepare-grabcut command)
    return build_detection_test_loader(evaluation_records(cfg, dataset_name), mapper=mapper,
                                       num_workers=cfg.DATALOADER.NUM_WORKERS)
