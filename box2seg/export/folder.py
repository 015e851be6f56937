"""The export folder: file names, locks, deterministic JSON, and the temporaries a killed job leaves.

::

    DIR/pseudo_masks.json                   the COCO JSON (unsharded run: at its end; sharded: ``--merge DIR``)
    DIR/pseudo_masks.index.npz              its index (:mod:`.indexed`): training reads entries by offset
    DIR/summary.json                        counts over the whole export (written with pseudo_masks.json)
    DIR/labels/<image id>.png               argmax of ``sem_seg``: 0 background, class + 1 (uint8; uint16 when
                                            the dataset's ignore_label is 65535)
    DIR/parts/<image id>.json               one image's annotations: the resume state
    DIR/shards/shard-IIIII-of-NNNNN.json    one shard's COCO JSON (its images and annotations; I, N zero-padded
                                            to five digits), written when all its images are done, with its
                                            index ``shard-IIIII-of-NNNNN.index.npz``
    DIR/header.json                         the run's fingerprint and the JSON's small sections
    DIR/header_images.jsonl                 the JSON's ``images`` section, one entry a line (streamed by merge)
    DIR/.lock, DIR/.shard-I-of-N.lock       the folder's lock (header, merge) and one shard job's lock

Every file is written by an atomic rename (:func:`box2seg.data.cache.atomic_write_bytes`), so a killed job
leaves finished files and temporaries, never half a file; the next job removes the temporaries of its own
files only, so a concurrent shard's in-flight ones are never touched.
"""
import contextlib
import json
import re
from pathlib import Path

from ..data.cache import CacheBusyError, file_lock, remove_stale_temps  # noqa: F401  (re-exported)
from ..data.shards import shard_file_name

__all__ = [
    "ExportError",
    "OUTPUT_FILE",
    "HEADER_FILE",
    "HEADER_IMAGES_FILE",
    "SUMMARY_FILE",
    "shard_name",
    "find_shards",
    "shard_lock",
    "dumps",
    "read_json",
    "remove_stale_temps",
    "fingerprint_diff",
]

OUTPUT_FILE = "pseudo_masks.json"
HEADER_FILE = "header.json"
HEADER_IMAGES_FILE = "header_images.jsonl"
SUMMARY_FILE = "summary.json"
_SHARD_FILE = re.compile(r"^shard-(\d+)-of-(\d+)\.json$")


class ExportError(RuntimeError):
    """A user-facing export problem (bad arguments, inconsistent folder, missing GrabCut labels)."""


def shard_name(shard, num_shards):
    """``shard-00003-of-00008.json``: zero-padded, so a listing sorts by shard."""
    return shard_file_name((shard, num_shards), "json")


def find_shards(folder):
    """``{N: {I: path}}`` of the shard files in ``folder``."""
    found = {}
    for path in sorted(Path(folder).glob("shard-*-of-*.json")):
        match = _SHARD_FILE.match(path.name)
        if match:
            found.setdefault(int(match.group(2)), {})[int(match.group(1))] = path
    return found


@contextlib.contextmanager
def shard_lock(output, shard, num_shards):
    """Keep two jobs off one shard: the second fails at once (ExportError) rather than waiting to redo it."""
    busy = f"another export of shard {shard}/{num_shards} is running on {output}"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(Path(output) / f".shard-{shard}-of-{num_shards}.lock", blocking=False,
                                          busy_message=busy))
        except CacheBusyError as e:
            raise ExportError(str(e)) from None
        yield


def dumps(obj):
    """Deterministic compact JSON (insertion order kept: the source JSON's key order)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def read_json(path):
    """The parsed file, or None when it is missing or unreadable (a part of another run, a torn copy)."""
    try:
        return json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return None


def fingerprint_diff(a, b):
    """``"key: a != b, ..."`` over the fields two fingerprints disagree on."""
    return ", ".join(f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
