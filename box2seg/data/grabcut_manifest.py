"""The per-shard manifest of a GrabCut cache folder: which images a ``prepare-grabcut`` shard has written,
with their statistics, so that a resume reads one small file instead of every cached PNG.

::

    FOLDER/<image id>.png                              the instance maps (the cache proper)
    FOLDER/summary.json                                written when every image of the dataset is done
    FOLDER/manifests/shard-IIIII-of-NNNNN.jsonl        one line per image of shard I/N
    FOLDER/manifests/.shard-IIIII-of-NNNNN.lock        the shard job's lock

A line is ``{"position": i, "file": "<image id>.png", "stats": {...}}`` (or ``"error"`` instead of
``"stats"`` for an image skipped by ``--skip-bad-images``). While a job runs, it appends a line after each
image's PNG is in place (renamed), flushed, so a killed job's manifest lists what it finished (a torn last
line is ignored); at the end it rewrites the file atomically in position order, so a resumed job leaves the
same bytes as an uninterrupted one. A PNG without a line (a job killed between the rename and the append,
export's on-demand fallback, caches written before manifests existed) is still found: its stats are read
from the PNG itself.
"""
import contextlib
import json
from pathlib import Path

from .cache import atomic_write_bytes, file_lock
from .shards import SHARD_FILE_RE, shard_file_name

__all__ = ["MANIFEST_DIR", "ShardManifest", "read_manifest", "all_manifests", "shard_lock_path"]

MANIFEST_DIR = "manifests"


def _line(position, file, stats=None, error=None):
    entry = {"position": int(position), "file": file}
    if error is not None:
        entry["error"] = error
    else:
        entry["stats"] = stats
    return json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"


def read_manifest(path):
    """``{file: entry}`` of a manifest (later lines win; a torn or foreign line is skipped); {} if missing."""
    entries = {}
    try:
        f = open(path, "rb")
    except OSError:
        return entries
    with f:
        for raw in f:
            try:
                entry = json.loads(raw)
                entries[str(entry["file"])] = entry
            except (ValueError, KeyError, TypeError):
                continue  # the last line of a killed job
    return entries


def all_manifests(folder, skip=None):
    """The manifest files of ``folder`` (any split), except ``skip``."""
    directory = Path(folder) / MANIFEST_DIR
    if not directory.is_dir():
        return []
    return [p for p in sorted(directory.iterdir())
            if SHARD_FILE_RE.match(p.name) and p.name.endswith(".jsonl") and p != skip]


def shard_lock_path(folder, shard):
    return Path(folder) / MANIFEST_DIR / f".{shard_file_name(shard, 'lock')}"


class ShardManifest:
    """The manifest of shard ``(I, N)`` of a cache folder: loaded, appended to, compacted (module docstring)."""

    def __init__(self, folder, shard):
        self.folder = Path(folder)
        self.shard = shard
        self.path = self.folder / MANIFEST_DIR / shard_file_name(shard, "jsonl")
        self._file = None

    def load(self):
        return read_manifest(self.path)

    def lock(self, busy_message=None):
        """The shard job's lock (blocking: a second job of the same shard waits, then resumes)."""
        return file_lock(shard_lock_path(self.folder, self.shard), busy_message=busy_message)

    @contextlib.contextmanager
    def appending(self, truncate=False):
        """Open for appending for the duration of the job (``truncate``: start empty, for ``--force``)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb" if truncate else "ab")
        try:
            yield self
        finally:
            self._file.close()
            self._file = None

    def append(self, position, file, stats=None, error=None):
        self._file.write(_line(position, file, stats, error).encode("ascii"))
        self._file.flush()  # the OS has it: survives the job's SIGKILL (not a power cut, which only costs a redo)

    def compact(self, entries):
        """Atomically replace the file by ``entries`` (``(position, file, stats, error)``) in position order."""
        blob = "".join(_line(*e) for e in sorted(entries, key=lambda e: e[0]))
        atomic_write_bytes(self.path, blob.encode("ascii"))

