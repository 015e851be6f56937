"""Shards of a dataset: ``--shard I/N`` takes the records ``i`` with ``i % N == I``.

One rule for every sharded job (``prepare-grabcut``, ``export``), so a SLURM array or submitit job list of N
tasks (task I runs ``--shard I/N``) covers the dataset once, whichever engine runs each task. Round-robin
rather than contiguous blocks: datasets are often sorted by size or source, and every shard then gets a
fair share of the large images.
"""
import re

__all__ = ["ShardSpecError", "parse_shard", "shard_positions", "shard_file_name", "SHARD_FILE_RE"]

# "shard-00003-of-00008.<ext>": zero-padded, so a listing sorts by shard.
SHARD_FILE_RE = re.compile(r"^shard-(\d+)-of-(\d+)\.([a-z.]+)$")


class ShardSpecError(ValueError):
    """A ``--shard`` value that is not ``I/N`` with ``0 <= I < N``."""

    user_error = True  # box2seg.cli prints it as one line


def parse_shard(text):
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; a tuple passes through checked."""
    if isinstance(text, tuple):
        index, count = text
    else:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not match:
            raise ShardSpecError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
        index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise ShardSpecError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return index, count


def shard_positions(length, shard):
    """The record positions of ``shard = (I, N)`` in a dataset of ``length`` records."""
    index, count = shard
    return list(range(index, length, count))


def shard_file_name(shard, ext="json"):
    """``shard-00003-of-00008.json`` for ``shard = (3, 8)``."""
    index, count = shard
    return f"shard-{index:05d}-of-{count:05d}.{ext}"
