"""``--openimages-dataset`` reaches the command through setup_cfg (DATASETS.OPENIMAGES_FORMAT), as
``--coco-dataset`` does, now that cli.main no longer registers the specs itself."""
import uuid

import box2seg  # noqa: F401
import cv2
import numpy as np
from detectron2.data import DatasetCatalog

from box2seg.data.datasets.common import unregister

HEADER = "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside"


def test_prepare_grabcut_on_an_openimages_dataset_of_the_command_line(tmp_path, run, fresh_cache, capsys):
    images = tmp_path / "images"
    images.mkdir()
    image = np.full((48, 64, 3), 40, np.uint8)
    cv2.circle(image, (32, 24), 12, (220, 200, 180), -1)
    cv2.imwrite(str(images / "aaa.jpg"), image)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(f"{HEADER}\naaa,xclick,/m/a,1,0.3,0.7,0.2,0.8,0,0,0,0,0\n")
    name = f"test_oi_flag_{uuid.uuid4().hex[:8]}"
    try:
        assert run("prepare-grabcut", "--openimages-dataset", f"{name}={boxes}:{images}", "--dataset", name,
                   "--workers", "0", "--no-progress") == 0
        assert name in DatasetCatalog.list()
        assert f"prepare-grabcut {name}: 1 images computed" in capsys.readouterr().out
    finally:
        unregister(name)
