"""Every test runs with its own empty cache, so nothing leaks between tests or from the user's cache."""
import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import pytest


@pytest.fixture(autouse=True)
def box2seg_cache(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.mktemp("box2seg_cache")
    monkeypatch.setenv("BOX2SEG_CACHE", str(root))
    return root
