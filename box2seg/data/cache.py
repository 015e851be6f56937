"""The on-disk cache (GrabCut labels, painted semantic ground truth, generated datasets).

Everything lives under ``$BOX2SEG_CACHE`` (default ``~/.cache/box2seg``), keyed by what produced it, so a
changed annotation file or setting never reads a stale entry. Writes are atomic: a file is written to a
temporary name in the same folder and renamed into place, so an interrupted job leaves either the old
state or the new one, never half a file. Jobs that write a folder take :func:`file_lock` on it (one helper for
the GrabCut cache and the export folders), so two jobs never write the same files at once.
"""
import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from filelock import FileLock, Timeout

logger = logging.getLogger(__name__)

FOLDER_LOCK = ".lock"  # the lock file of a cache folder: every job writing the folder takes this same file


def cache_root():
    """The cache folder: ``$BOX2SEG_CACHE`` or ``~/.cache/box2seg``."""
    return Path(os.environ.get("BOX2SEG_CACHE") or "~/.cache/box2seg").expanduser()


def stable_hash(obj, length=12):
    """A short hash of a JSON-serialisable object, independent of dict order and of the process."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:length]


def annotations_hash(dataset_dicts, length=12):
    """Hash of what GrabCut and the targets read: each image's file, size and boxes.

    A lazy record sequence (``datasets.lazy.LazyRecords``) computes the same value itself (streamed, and
    cached where it can: Open Images' 14.6M boxes are minutes of Python per pass)."""
    own = getattr(dataset_dicts, "annotations_hash", None)
    if callable(own):
        return own(length)
    digest = hashlib.sha1()
    for record in dataset_dicts:
        boxes = [
            (
                [round(float(v), 3) for v in ann["bbox"]],
                int(ann.get("bbox_mode", 0)),
                int(ann["category_id"]),
                int(ann.get("iscrowd", 0)),
            )
            for ann in record.get("annotations", [])
        ]
        item = [os.path.basename(record["file_name"]), str(record.get("image_id")), record.get("height"),
                record.get("width"), boxes]
        digest.update(json.dumps(item, separators=(",", ":")).encode())
    return digest.hexdigest()[:length]


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, else removed.

    The temporary name keeps the final suffix, so writers that pick a format by extension
    (``cv2.imwrite``, PIL) work unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; cached files are as shareable as any other
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path, data):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_json(path, obj):
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def safe_name(image_id):
    """A file-name-safe, unique form of a dataset image id (ids may be strings with slashes)."""
    text = str(image_id)
    clean = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)
    if clean != text:
        clean = f"{clean}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return clean


class CacheBusyError(RuntimeError):
    """Another process holds the lock that a non-blocking :func:`file_lock` asked for."""


@contextlib.contextmanager
def file_lock(path, blocking=True, busy_message=None):
    """Hold an exclusive inter-process lock on the file ``path`` (created, with its folder, if missing).

    An ``flock`` through the ``filelock`` package: the OS drops it when the holder's process dies (kill -9
    included), so a killed job never leaves a stale lock behind; the empty file stays, as waiters must share
    its inode. Not re-entrant: a second ``file_lock`` on a held path is busy in the holder's process too (in the
same thread a blocking one raises filelock's deadlock RuntimeError instead of hanging).
    When the lock is busy, ``blocking=False`` raises :class:`CacheBusyError` with ``busy_message``;
    ``blocking=True`` logs ``busy_message`` once (if given) and waits.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not blocking:
            raise CacheBusyError(busy_message or f"{path} is locked by another process") from None
        if busy_message:
            logger.info("%s", busy_message)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def folder_lock(folder, blocking=True, busy_message=None):
    """:func:`file_lock` on ``folder``'s :data:`FOLDER_LOCK`: the one lock of a cache folder (the GrabCut
    cache: ``prepare-grabcut`` and export's on-demand fallback; an export folder's header and merge)."""
    return file_lock(Path(folder) / FOLDER_LOCK, blocking=blocking, busy_message=busy_message)


def _temp_stem(name):
    """The final file's stem of an :func:`atomic_path` temporary name ``.{stem}.{random}.tmp{suffix}``, or None."""
    if not name.startswith(".") or ".tmp" not in name:
        return None
    body = name[1:name.rindex(".tmp")]
    return body.rsplit(".", 1)[0] if "." in body else None


def remove_stale_temps(folder, stems):
    """Remove the :func:`atomic_path` temporaries a killed job left for the files named ``stems`` (only a
    job's own files, so a concurrent job's in-flight temporaries in the same folder are never touched).
    Returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            stem = _temp_stem(entry.name)
            if stem is not None and stem in stems:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(entry.path)
                    removed += 1
    return removed
