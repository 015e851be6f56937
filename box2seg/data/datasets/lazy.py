"""Record sequences built on access, for datasets whose list of dicts would not fit in every process.

A Python dict per image and per box costs about 1 KB a box: Open Images' 14.6M training boxes would be
several GB in every process that calls ``DatasetCatalog.get`` (GrabCut prepare, training and its loader
workers, export, score). :class:`LazyRecords` is a ``collections.abc.Sequence`` whose records are built from
compact (mapped) arrays when indexed or iterated, so a full pass holds one record at a time.

Consumers treat it as a read-only list. What they used to write into every record in place (the GrabCut
file of ``attach_grabcut_files``, the ``supervision`` of ``mark_pixel_labels``) is registered once with
:meth:`LazyRecords.add_field` and added to each record as it is built. Fields are (key, module-level
function, arguments), so a sequence pickles as its paths and fields (DataLoader / process-pool workers
re-map the arrays), never as its records.
"""
import bisect
from collections.abc import Sequence

import numpy as np

from ..cache import annotations_hash

__all__ = ["LazyRecords", "ConcatRecords", "PairSequence", "constant_field", "is_lazy"]


def constant_field(record, value):
    """A field function: the same ``value`` on every record (e.g. ``supervision = "boxes"``)."""
    return value


def is_lazy(records):
    return isinstance(records, LazyRecords)


class LazyRecords(Sequence):
    """Base class: subclasses implement ``__len__`` and ``_build(i)`` (a fresh dict for record ``i``)."""

    def __init__(self):
        self._fields = []

    def _build(self, i):
        raise NotImplementedError

    def add_field(self, key, func, *args):
        """Set ``record[key] = func(record, *args)`` on every record as it is built (replacing an earlier
        field of the same key). ``func`` must be a module-level function, so the sequence stays picklable."""
        self._fields = [f for f in self._fields if f[0] != key] + [(key, func, args)]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"record {i} out of range ({n} records)")
        record = self._build(i)
        for key, func, args in self._fields:
            record[key] = func(record, *args)
        return record

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other):
        """Equal to any sequence (a list included) of the same records in the same order."""
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None

    def __repr__(self):
        return f"<{type(self).__name__}: {len(self)} records, built on access>"

    def annotations_hash(self, length=12):
        """:func:`~box2seg.data.cache.annotations_hash` of the records, streamed (one record at a time);
        subclasses may cache it."""
        return annotations_hash((r for r in self), length)

    def image_ids(self):
        """The records' ``image_id`` in order (an iterator); subclasses read them without building records."""
        return (r["image_id"] for r in self)

    def box_items(self, crowd=False):
        """(record positions, annotation positions) int64 arrays of every (non-crowd unless ``crowd``)
        annotation, in record order: chip mode's training items, by a streamed pass."""
        pairs = [(i, k) for i, r in enumerate(self) for k, a in enumerate(r.get("annotations", ()))
                 if crowd or not a.get("iscrowd", 0)]
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        return pairs[:, 0].copy(), pairs[:, 1].copy()

    def positions_with_boxes(self, crowd=True):
        """Positions of the records with at least one (non-crowd unless ``crowd``) annotation (int64), by a
        streamed pass; subclasses compute it from their arrays."""
        keep = [i for i, r in enumerate(self)
                if any(crowd or not a.get("iscrowd", 0) for a in r.get("annotations", ()))]
        return np.asarray(keep, dtype=np.int64)


class ConcatRecords(LazyRecords):
    """Several record sequences (lists or :class:`LazyRecords`) as one, without copying: the training set
    of several DATASETS.TRAIN names when one of them is lazy."""

    def __init__(self, parts):
        super().__init__()
        self.parts = list(parts)
        self._ends = np.cumsum([len(p) for p in self.parts]).tolist()

    def __len__(self):
        return self._ends[-1] if self._ends else 0

    def _build(self, i):
        k = bisect.bisect_right(self._ends, i)
        start = self._ends[k - 1] if k else 0
        record = self.parts[k][i - start]
        return record if is_lazy(self.parts[k]) else dict(record)  # a list's dict is not changed by our fields


class PairSequence(Sequence):
    """``(int(first[i]), int(second[i]))`` for two int arrays: chip mode's (record, annotation) items as 16
    bytes each instead of a tuple of two Python ints (about 90 bytes)."""

    def __init__(self, first, second):
        self.first, self.second = np.asarray(first), np.asarray(second)

    def __len__(self):
        return len(self.first)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return int(self.first[i]), int(self.second[i])
