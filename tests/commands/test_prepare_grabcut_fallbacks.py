"""prepare-grabcut warns when more than grabcut_job.FALLBACK_WARNING_SHARE of the boxes fell back to the
ellipse (their labels are then ellipses, not object shapes), and stays quiet otherwise."""
import logging
import uuid

import box2seg  # noqa: F401
import pytest

from box2seg.data import grabcut_job
from box2seg.data.datasets.common import unregister
from box2seg.data.grabcut_job import FALLBACK_WARNING_SHARE, fallback_warning


@pytest.fixture
def job_warnings(caplog):
    """The job's warnings. Its logger's handler directly: detectron2's setup_logger (default_setup in an
    earlier test) stops the ``box2seg`` logger from propagating to the root logger caplog listens on."""
    logger = logging.getLogger(grabcut_job.__name__)
    logger.addHandler(caplog.handler)
    # A record reaching caplog both ways is one warning.
    yield lambda: [r.getMessage() for r in {id(r): r for r in caplog.records}.values()
                   if r.levelno >= logging.WARNING and r.name == grabcut_job.__name__]
    logger.removeHandler(caplog.handler)


@pytest.mark.parametrize("fill,warned", [(1.0, True), (0.0, False)])
def test_prepare_grabcut_warns_when_most_boxes_fall_back(fill, warned, tiny_coco, fresh_cache, run, capsys,
                                                          job_warnings):
    json_path, image_root = tiny_coco
    name = f"test_fallbacks_{uuid.uuid4().hex[:8]}"
    try:
        # fallback_fill 1.0: a GrabCut result must fill its whole box, so every box falls back; 0.0: none does.
        assert run("prepare-grabcut", "--coco-dataset", f"{name}={json_path}:{image_root}", "--dataset", name,
                   "--workers", "0", "--no-progress", "--fallback-fill", str(fill)) == 0
    finally:
        unregister(name)
    out = capsys.readouterr().out
    assert (", 8 fallbacks," in out) == warned
    warnings = [m for m in job_warnings() if "fell back to the ellipse" in m]
    if warned:
        (message,) = warnings
        assert f"GrabCut {name}: 8 of 8 boxes (100.0%, more than 40%) fell back to the ellipse" in message
        assert "could not separate those objects" in message and "small objects or low contrast" in message
        assert "docs/grabcut.md" in message
    else:
        assert warnings == []


def test_the_threshold_is_a_share_of_the_boxes():
    assert FALLBACK_WARNING_SHARE == 0.4
    assert fallback_warning("d", 10, 4) is None  # 40%: not more than the share
    assert "5 of 10 boxes (50.0%" in fallback_warning("d", 10, 5)
    assert fallback_warning("d", 0, 0) is None  # no boxes (crowd only, or empty)
