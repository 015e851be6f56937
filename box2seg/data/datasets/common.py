"""Shared pieces of the box dataset loaders: ignore value, box validation, bad-input reports, metadata.

Bad-input policy (the same in every loader):
- a malformed *file* (unreadable JSON, missing CSV columns, duplicate category ids, a missing split list)
  raises :class:`DatasetError` naming the file and the record;
- a malformed *record* (NaN / zero / negative-size box, box entirely outside its image, unknown category,
  truncated CSV row, missing or unreadable image where the loader has to read it) is skipped and counted;
  one summary per dataset load is logged with the counts and a few examples (file, image, annotation/line);
- a box partly outside its image is clipped to it and counted;
- an image left without boxes is kept: it trains the background (a valid, background-only loss).
"""
import difflib
import logging
from collections import OrderedDict

import numpy as np
from detectron2.data import DatasetCatalog, Metadata, MetadataCatalog
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

# Number of examples kept per skip reason in a report.
_EXAMPLES = 3


class DatasetError(ValueError):
    """A dataset file or record that cannot be used; the message names the file and the record."""


class UnknownDatasetError(DatasetError, KeyError):
    """A dataset name that is not registered (a KeyError too, as detectron2's catalog raises)."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def unknown_dataset_message(name, known=None):
    """Why ``name`` is unknown and how to register one's own files, with close matches among the
    registered names (not the list of every built-in name)."""
    known = sorted(DatasetCatalog.list()) if known is None else sorted(known)
    label = str(name) if name else "NAME"
    text = (f"dataset {name!r} is not registered. Register your own files on the same command line with "
            f"--coco-dataset {label}=ANNOTATIONS.json:IMAGE_ROOT (COCO format) or --openimages-dataset "
            f"{label}=BOXES.csv:IMAGE_ROOT (Open Images CSV); the built-in names are in datasets/README.md")
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
    if close:
        text += ". Did you mean " + " or ".join(repr(c) for c in close) + "?"
    return text


def get_dataset_dicts(name):
    """``DatasetCatalog.get(name)``, with :class:`UnknownDatasetError` for a name that is not registered."""
    if name not in DatasetCatalog.list():
        raise UnknownDatasetError(unknown_dataset_message(name))
    return DatasetCatalog.get(name)


def ignore_label_for(num_classes):
    """The ignore value of label maps with ``num_classes`` foreground classes plus background.

    255 while the labels 0..num_classes fit a uint8 map next to it, else 65535 (uint16 maps).
    """
    return 255 if num_classes + 1 <= 255 else 65535


def semantic_metadata(thing_classes, dataset_id_to_contiguous, has_masks):
    """The class-dependent metadata keys every box dataset carries (see the team contract)."""
    thing_classes = list(thing_classes)
    return {
        "thing_classes": thing_classes,
        "stuff_classes": ["background"] + thing_classes,
        "thing_dataset_id_to_contiguous_id": dict(dataset_id_to_contiguous),
        "ignore_label": ignore_label_for(len(thing_classes)),
        "has_masks": bool(has_masks),
        "evaluator_type": "sem_seg" if has_masks else "box2seg_boxes",
    }


class LoadReport:
    """Counts what a loader skipped or changed, with a few examples each, and logs one summary.

    ``skip`` is for lost records (boxes or images), ``note`` for kept-but-changed ones (clipped boxes,
    images without boxes). Tests read ``skipped`` / ``noted`` (reason -> count).
    """

    def __init__(self, dataset_name, source):
        self.dataset_name = dataset_name
        self.source = str(source)
        self.skipped = OrderedDict()
        self.noted = OrderedDict()
        self._examples = {}
        self.num_images = 0
        self.num_boxes = 0

    def _add(self, table, kind, reason, where, count):
        table[reason] = table.get(reason, 0) + count
        examples = self._examples.setdefault((kind, reason), [])
        if where is not None and len(examples) < _EXAMPLES:
            examples.append(str(where))

    def skip(self, reason, where=None, count=1):
        """Record ``count`` lost records for ``reason``; ``where`` names one (image / annotation / line)."""
        self._add(self.skipped, "skip", reason, where, count)

    def note(self, reason, where=None, count=1):
        self._add(self.noted, "note", reason, where, count)

    def _describe(self, kind, table):
        parts = []
        for reason, count in table.items():
            examples = self._examples.get((kind, reason))
            text = f"{count} {reason}"
            if examples:
                text += f" (e.g. {'; '.join(examples)})"
            parts.append(text)
        return "; ".join(parts)

    def summary(self):
        text = f"dataset '{self.dataset_name}' from {self.source}: {self.num_images} images, {self.num_boxes} boxes"
        if self.skipped:
            text += f". Skipped: {self._describe('skip', self.skipped)}"
        if self.noted:
            text += f". Kept: {self._describe('note', self.noted)}"
        return text

    def log(self):
        """Log the summary once: a warning when something was skipped, else info."""
        (logger.warning if self.skipped else logger.info)(self.summary())

    def finish(self, dataset_dicts):
        """Count the loaded images and boxes, note the images kept without boxes, log the summary."""
        empty = [r["image_id"] for r in dataset_dicts if not r["annotations"]]
        if empty:
            self.note("images without boxes (background-only loss)", f"image id {empty[0]!r}", count=len(empty))
        self.num_images = len(dataset_dicts)
        self.num_boxes = sum(len(r["annotations"]) for r in dataset_dicts)
        self.log()


# Skip reasons of validate_boxes, by status code (0 = kept unchanged, 1 = kept after clipping).
BOX_OK, BOX_CLIPPED, BOX_NONFINITE, BOX_DEGENERATE, BOX_OUTSIDE = range(5)
BOX_SKIP_REASONS = {
    BOX_NONFINITE: "boxes with NaN or infinite coordinates",
    BOX_DEGENERATE: "boxes with zero or negative size",
    BOX_OUTSIDE: "boxes entirely outside their image",
}


def validate_boxes(boxes, widths, heights):
    """Check and clip XYXY_ABS boxes against their images, vectorised.

    Args:
        boxes: (N, 4) float array x0, y0, x1, y1; widths, heights: (N,) size of each box's image.
    Returns:
        (clipped boxes (N, 4) float64, status (N,) int8: BOX_OK / BOX_CLIPPED keep the box,
        BOX_NONFINITE / BOX_DEGENERATE / BOX_OUTSIDE drop it).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    widths = np.asarray(widths, dtype=np.float64).reshape(-1)
    heights = np.asarray(heights, dtype=np.float64).reshape(-1)
    status = np.full(len(boxes), BOX_OK, dtype=np.int8)
    finite = np.isfinite(boxes).all(axis=1)
    safe = np.where(finite[:, None], boxes, 0.0)
    degenerate = finite & ((safe[:, 2] <= safe[:, 0]) | (safe[:, 3] <= safe[:, 1]))
    limits = np.stack([widths, heights, widths, heights], axis=1)
    clipped = np.clip(safe, 0.0, limits)
    outside = finite & ~degenerate & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    changed = finite & ~degenerate & ~outside & (clipped != safe).any(axis=1)
    status[changed] = BOX_CLIPPED
    status[outside] = BOX_OUTSIDE
    status[degenerate] = BOX_DEGENERATE
    status[~finite] = BOX_NONFINITE
    return clipped, status


def apply_box_validation(annotations, widths, heights, report, describe):
    """Validate the ``bbox`` (XYXY_ABS) of ``annotations`` in place; returns a keep mask.

    Clipped boxes are written back; dropped ones are counted in ``report`` per reason, with
    ``describe(i)`` naming annotation ``i`` in the examples.
    """
    if not annotations:
        return np.zeros(0, dtype=bool)
    boxes = np.array([ann["bbox"] for ann in annotations], dtype=np.float64)
    clipped, status = validate_boxes(boxes, widths, heights)
    for i in np.flatnonzero(status == BOX_CLIPPED):
        annotations[i]["bbox"] = [float(v) for v in clipped[i]]
    report_box_status(status, report, describe)
    return status <= BOX_CLIPPED


def report_box_status(status, report, describe):
    """Count the clipped and dropped boxes of a ``validate_boxes`` status array (examples: ``describe(i)``)."""
    for code, reason in [(BOX_CLIPPED, None), *BOX_SKIP_REASONS.items()]:
        where = np.flatnonzero(status == code)
        if not len(where):
            continue
        add = report.note if reason is None else report.skip
        reason = reason or "boxes clipped to their image"
        for i in where[:_EXAMPLES]:
            add(reason, describe(i))
        if len(where) > _EXAMPLES:
            add(reason, count=len(where) - _EXAMPLES)


def read_image_size(path):
    """(height, width) of an image as ``detectron2.data.detection_utils.read_image`` returns it.

    Reads the header only (no pixel decoding) and applies the EXIF orientation swap, so the size matches
    the loaded image. Raises OSError (missing / unreadable / not an image).
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            try:
                orientation = img.getexif().get(0x0112, 1)
            except Exception:  # a broken EXIF block: detectron2 then ignores the orientation too
                orientation = 1
    except (UnidentifiedImageError, ValueError) as e:
        raise OSError(f"{path}: not a readable image ({e})") from e
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return int(height), int(width)


class LazyMetadata(Metadata):
    """Metadata whose file-derived keys (classes, has_masks, ...) are read on first access.

    Registration must stay cheap (no annotation file read), but code such as ``build_evaluator`` asks
    for ``evaluator_type`` or ``thing_classes`` before the dataset is loaded; those keys come from a
    loader function run once, on the first access to one of them.
    """

    _pending = {}  # dataset name -> (loader returning a dict, keys it provides)

    def __getattr__(self, key):
        name = self.__dict__.get("name")
        entry = LazyMetadata._pending.get(name)
        if entry is not None and key in entry[1]:
            values = entry[0]()
            LazyMetadata._pending.pop(name, None)
            self.__dict__.update(values)
            if key in self.__dict__:
                return self.__dict__[key]
        return super().__getattr__(key)


def register_box_dataset(name, loader, static_metadata, lazy_metadata=None, lazy_keys=()):
    """Register ``name`` in DatasetCatalog and its metadata in MetadataCatalog.

    ``lazy_metadata`` (a function returning a dict with ``lazy_keys``) is only run when one of those
    keys is read before the dataset itself is loaded.
    """
    DatasetCatalog.register(name, loader)
    meta = LazyMetadata(name=name)
    meta.__dict__.update(static_metadata)
    if lazy_metadata is not None:
        LazyMetadata._pending[name] = (lazy_metadata, frozenset(lazy_keys))
    MetadataCatalog[name] = meta
    return meta


def update_metadata(name, values):
    """Set file-derived metadata after a load (replacing a pending lazy read, refreshing a stale one)."""
    meta = MetadataCatalog.get(name)
    LazyMetadata._pending.pop(name, None)
    meta.__dict__.update(values)


def registered_metadata(name):
    """The metadata keys already set for ``name``, without triggering a lazy read (None if unknown)."""
    if name not in DatasetCatalog.list():
        return None
    meta = MetadataCatalog.get(name)
    return dict(meta.__dict__)


def unregister(name):
    """Remove a dataset from both catalogs (tests and re-registration)."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    LazyMetadata._pending.pop(name, None)
