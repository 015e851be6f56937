"""file_lock across processes: busy -> CacheBusyError or wait, and no stale lock after kill -9."""
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading

import pytest

from box2seg.data import cache
from box2seg.data.cache import FOLDER_LOCK, CacheBusyError, file_lock, folder_lock

# The holder loads cache.py by path (stdlib + filelock only), so it starts in well under a second instead of
# importing box2seg (torch, detectron2). It takes the lock, says "held", and leaves the lock on a line of stdin.
_HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("cache", sys.argv[1])
cache = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cache)
with cache.file_lock(sys.argv[2]):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path):
    procs = []

    def start(path):
        proc = subprocess.Popen([sys.executable, "-c", _HOLDER, cache.__file__, str(path)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_non_blocking_attempt_on_a_held_lock_raises_with_the_message(tmp_path, holder):
    path = tmp_path / "sub" / "job.lock"
    holder(path)
    with pytest.raises(CacheBusyError, match="another job is writing here"):
        with file_lock(path, blocking=False, busy_message="another job is writing here"):
            pytest.fail("acquired a lock another process holds")
    with pytest.raises(CacheBusyError, match="is locked by another process"):
        with file_lock(path, blocking=False):
            pass


def test_blocking_attempt_waits_for_the_holder_and_says_why_once(tmp_path, holder, caplog):
    path = tmp_path / "job.lock"
    proc = holder(path)
    acquired = threading.Event()

    def wait_for_lock():
        with file_lock(path, busy_message="waiting for the other job"):
            acquired.set()

    with caplog.at_level(logging.INFO, logger=cache.__name__):
        thread = threading.Thread(target=wait_for_lock, daemon=True)
        thread.start()
        assert not acquired.wait(0.5), "took a lock another process holds"
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "released"
        assert acquired.wait(10), "did not get the lock after its holder released it"
        thread.join(10)
    assert [r.getMessage() for r in caplog.records].count("waiting for the other job") == 1


def test_lock_of_a_killed_holder_is_free(tmp_path, holder):
    path = tmp_path / "job.lock"
    proc = holder(path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with file_lock(path, blocking=False):
        assert path.is_file()
    with file_lock(path, blocking=False):  # released on exit, also in this process
        pass


def test_folder_lock_is_the_flock_of_the_folders_lock_file(tmp_path):
    """Every writer of a cache folder locks the same file, and it is a plain flock: a holder using fcntl
    directly (jobs not yet on this helper) and file_lock exclude each other."""
    with open(tmp_path / FOLDER_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(CacheBusyError):
            with folder_lock(tmp_path, blocking=False):
                pass
        fcntl.flock(f, fcntl.LOCK_UN)
    with folder_lock(tmp_path, blocking=False):
        with open(tmp_path / FOLDER_LOCK, "a") as f:
            with pytest.raises(BlockingIOError):
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
