"""Tests never touch the user's cache: the session gets its own BOX2SEG_CACHE (shared by all tests, so
a generated dataset is built once); ``fresh_cache`` gives one test an empty cache of its own."""
import os
import tempfile

import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import pytest

_SESSION_CACHE = tempfile.mkdtemp(prefix="box2seg-test-cache-")
os.environ["BOX2SEG_CACHE"] = _SESSION_CACHE


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("BOX2SEG_CACHE", str(root))
    return root
