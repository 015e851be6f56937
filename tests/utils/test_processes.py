"""box2seg.utils.processes: targets run in spawned processes, a group at a time, failures named."""
import sys

import pytest

from box2seg.utils.processes import run_side_by_side


def test_each_item_runs_and_the_failed_ones_are_named():
    assert len(run_side_by_side(sys.exit, [(0,), (0,), (0,)], jobs=2)) == 3
    with pytest.raises(RuntimeError, match=r"^failed: item 3 \(exit code 3\)$"):
        run_side_by_side(sys.exit, [(0,), (3,)], jobs=2, describe=lambda args: f"item {args[0]}")
