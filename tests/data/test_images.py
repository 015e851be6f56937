"""The one image reader: detectron2's pixels for an EXIF-rotated JPEG (and the mapper's image), truncated
files and 16-bit PNGs named or converted, never passed silently."""
import box2seg  # noqa: F401  (compat fixes before any detectron2 import)

import cv2
import numpy as np
import pytest
from detectron2.data import detection_utils
from detectron2.structures import BoxMode
from PIL import Image

from box2seg.data.images import ImageReadError, read_image
from box2seg.data.mapper import Box2SegDatasetMapper


def _photo(h=48, w=64):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image[:10, :20] = (250, 10, 10)  # an asymmetric mark: a rotation moves it
    return image


@pytest.mark.parametrize("orientation", [3, 6])
def test_exif_orientation_matches_detectron2_and_the_mapper(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_photo()).save(path, exif=exif, quality=95)
    ours = read_image(str(path), format="BGR")
    theirs = detection_utils.read_image(str(path), format="BGR")
    assert ours.dtype == np.uint8 and ours.flags.c_contiguous
    np.testing.assert_array_equal(ours, theirs)
    assert ours.shape[:2] == ((48, 64) if orientation == 3 else (64, 48))
    assert not np.array_equal(ours[..., ::-1], np.asarray(Image.open(path).convert("RGB")))  # rotated indeed
    np.testing.assert_array_equal(read_image(str(path), format="RGB"), theirs[..., ::-1])

    h, w = ours.shape[:2]
    record = {"file_name": str(path), "image_id": 1, "height": h, "width": w,
              "annotations": [{"bbox": [2.0, 2.0, 20.0, 20.0], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0,
                               "iscrowd": 0}]}
    mapper = Box2SegDatasetMapper(is_train=False, augmentations=[], image_format="BGR", ignore_label=255)
    np.testing.assert_array_equal(mapper(record)["image"].permute(1, 2, 0).numpy(), ours)


def test_truncated_jpeg_is_named(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(_photo(256, 256)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert cv2.imread(str(path)) is not None  # what let it pass before: cv2 decodes the readable part
    with pytest.raises(ImageReadError, match="cut.jpg.*truncated"):
        read_image(str(path))
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="junk.png"):
        read_image(str(tmp_path / "junk.png"))
    with pytest.raises(ImageReadError, match="cannot read image .*nowhere.jpg: it does not exist"):
        read_image(str(tmp_path / "nowhere.jpg"))
    assert issubclass(ImageReadError, ValueError)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    grey = (np.arange(32 * 40).reshape(32, 40) * 50 % 65536).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), grey)
    out = read_image(str(tmp_path / "g16.png"))
    expected = np.rint(grey / 257.0).astype(np.uint8)
    assert out.shape == (32, 40, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], expected)
    clipped = detection_utils.read_image(str(tmp_path / "g16.png"), format="BGR")  # what the model got before
    np.testing.assert_array_equal(clipped[..., 0], np.minimum(grey, 255))  # clipped: nearly all white

    rgb = (np.arange(32 * 40 * 3).reshape(32, 40, 3) * 97 % 65536).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb)  # BGR order on disk, as cv2 writes it
    out = read_image(str(tmp_path / "rgb16.png"), format="BGR")
    assert np.abs(out.astype(int) - rgb.astype(int) / 257.0).max() <= 1.0  # 8-bit, same channel order


def test_refused_modes_are_named(tmp_path):
    Image.fromarray(np.ones((8, 8), np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(ImageReadError, match="float.tiff.*'F'"):
        read_image(str(tmp_path / "float.tiff"))
