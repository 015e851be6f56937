"""GrabCut pseudo-labels: settings/key, per-box GrabCut and fallbacks, instance-map painting, class-map
derivation, the PNG format and the cache look-up (attach / load) errors."""
import box2seg  # noqa: F401  (compat fixes before any detectron2 import)

import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.structures import BoxMode

from box2seg.config import add_box2seg_config
from box2seg.data import grabcut as G
from box2seg.structures import ellipse_masks


def _scene(h=112, w=128, seed=0):
    """Textured green background with a red disc (object A) and a blue square (object B) overlapping it."""
    rng = np.random.default_rng(seed)
    image = (rng.integers(0, 50, (h, w, 3)) + np.array([40, 130, 40])).astype(np.uint8)
    cv2.circle(image, (50, 55), 30, (30, 30, 220), -1)  # disc, box [20, 25, 81, 86]
    image[40:60, 70:90] = (220, 60, 40)  # square, box [70, 40, 90, 60]: overlaps the disc's box
    return np.ascontiguousarray(image)


def get_cfg_with_box2seg():
    cfg = get_cfg()
    add_box2seg_config(cfg)
    return cfg


def _ann(box, cls, crowd=0):
    return {"bbox": [float(v) for v in box], "bbox_mode": BoxMode.XYXY_ABS, "category_id": cls, "iscrowd": crowd}


def test_settings_key_and_config():
    s = G.GrabCutSettings()
    assert (s.iterations, s.margin, s.min_margin, s.max_side, s.seed) == (5, 0.5, 32, 1024, 0)
    assert (s.fallback_fill, s.upscale_to, s.core) == (0.4, 64, 0.45)
    assert s.key() == G.GrabCutSettings().key() and len(s.key()) == 8
    assert G.GrabCutSettings(margin=1).key() == G.GrabCutSettings(margin=1.0).key()
    assert G.GrabCutSettings(max_side=256).key() != s.key()
    # Each new setting is part of the cache key.
    keys = {s.key()} | {G.GrabCutSettings(**{name: value}).key() for name, value in
                        (("fallback_fill", 0.05), ("upscale_to", 0), ("core", 0), ("max_side", 0))}
    assert len(keys) == 5
    assert G.GrabCutSettings.from_config(get_cfg_with_box2seg()) == s
    for name, bad in (("fallback_fill", 1.5), ("upscale_to", -1), ("core", 1.0)):
        with pytest.raises(ValueError, match=name):
            G.GrabCutSettings(**{name: bad})
    cfg = get_cfg()
    add_box2seg_config(cfg)
    cfg.GRABCUT.MAX_SIDE = 384
    cfg.GRABCUT.SEED = 3
    cfg.GRABCUT.UPSCALE_TO = 0
    cfg.GRABCUT.CORE = 0.0
    cfg.GRABCUT.FALLBACK_FILL = 0.05
    shipped = G.GrabCutSettings(max_side=384, seed=3, upscale_to=0, core=0, fallback_fill=0.05)
    assert G.GrabCutSettings.from_config(cfg) == shipped
    assert shipped.cli_flags() == "--max-side 384 --seed 3 --fallback-fill 0.05 --upscale-to 0 --core 0"
    with pytest.raises(ValueError, match="iterations"):
        G.GrabCutSettings(iterations=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.iterations = 3


def test_grabcut_box_finds_object_and_is_deterministic():
    image = _scene()
    settings = G.GrabCutSettings()
    mask, extent, fallback = G.grabcut_box(image, [18.6, 23.2, 82.0, 86.9], settings, rng_seed=11)
    assert extent == (18, 23, 82, 87) and mask.shape == (64, 64) and not fallback
    yy, xx = np.mgrid[23:87, 18:82]
    disc = (xx - 50) ** 2 + (yy - 55) ** 2 <= 28**2
    iou = (mask & disc).sum() / (mask | disc).sum()
    assert iou > 0.6  # the red disc, not the box
    again, _, _ = G.grabcut_box(image, [18.6, 23.2, 82.0, 86.9], settings, rng_seed=11)
    np.testing.assert_array_equal(mask, again)
    capped, _, _ = G.grabcut_box(image, [18.6, 23.2, 82.0, 86.9], G.GrabCutSettings(max_side=64), rng_seed=11)
    assert capped.shape == mask.shape and (capped & disc).sum() / (capped | disc).sum() > 0.5


def test_box_covering_the_whole_image_still_runs():
    image = _scene()
    mask, extent, _ = G.grabcut_box(image, [0, 0, 128, 112], G.GrabCutSettings(), rng_seed=0)
    assert extent == (0, 0, 128, 112) and mask.shape == (112, 128)


def test_instance_map_semantics():
    image = _scene()
    record = {
        "file_name": "scene.png", "image_id": 7, "height": 112, "width": 128,
        "annotations": [
            _ann([68, 38, 92, 62], 2),  # 0: the square, small box
            _ann([18, 23, 83, 88], 1),  # 1: the disc, big box; overlaps box 0
            _ann([100, 2, 126, 40], 0, crowd=1),  # 2: crowd, partly covered by nothing
            _ann([10, 90, 12, 110], 0),  # 3: degenerate (2 px wide) -> ellipse fallback
            _ann([60, 30, 110, 50], 0, crowd=1),  # 4: crowd overlapping normal boxes
        ],
    }
    inst, stats = G.compute_instance_map(image, record, G.GrabCutSettings())
    assert inst.dtype == np.uint16 and inst.shape == (112, 128)
    kinds = [b[1] for b in stats["boxes"]]
    assert kinds[2] == kinds[4] == G.CROWD and kinds[3] == G.FALLBACK and kinds[:2] == [G.GRABCUT, G.GRABCUT]
    # The smaller box wins where the two overlap: the square's pixels inside the disc's box are box 0's.
    assert (inst[42:58, 72:82] == 1).mean() > 0.9
    assert (inst[45:65, 30:55] == 2).mean() > 0.9  # disc interior
    assert (inst[8:16, 8:16] == 0).all()  # background
    # Crowd: ignore where no normal box's rectangle is; a normal rectangle's pixels are never ignore.
    assert (inst[2:30, 111:126] == G.IGNORE_INDEX).all()
    assert (inst[30:50, 92:100] == G.IGNORE_INDEX).all()  # crowd 4 beyond the normal boxes
    assert not (inst[38:62, 68:92] == G.IGNORE_INDEX).any()
    assert not (inst[23:88, 18:83] == G.IGNORE_INDEX).any()
    # The degenerate box got the inscribed ellipse.
    np.testing.assert_array_equal(inst[90:110, 10:12] == 4, G.box_ellipse([10, 90, 12, 110], (10, 90, 12, 110)))
    assert G.summarize_stats([stats])["fallbacks"] == 1


def test_paint_smaller_box_wins_regardless_of_annotation_order():
    full = lambda h, w: np.ones((h, w), bool)  # noqa: E731
    # annotation 0 is small, 1 is big; then the reverse order
    a = G.paint_instance_map(20, 20, [full(5, 5), full(15, 15)], [(2, 2, 7, 7), (0, 0, 15, 15)], [25, 225], [0, 1])
    b = G.paint_instance_map(20, 20, [full(15, 15), full(5, 5)], [(0, 0, 15, 15), (2, 2, 7, 7)], [225, 25], [0, 1])
    assert (a[2:7, 2:7] == 1).all() and (a[10:15, 10:15] == 2).all() and (a[16:, 16:] == 0).all()
    assert (b[2:7, 2:7] == 2).all() and (b[10:15, 10:15] == 1).all()


def test_empty_grabcut_result_falls_back_to_ellipse(monkeypatch):
    def empty_grabcut(img, mask, rect, bgd, fgd, it, mode):
        mask[:] = cv2.GC_BGD
        return mask, bgd, fgd

    monkeypatch.setattr(G.cv2, "grabCut", empty_grabcut)
    mask, extent, fallback = G.grabcut_box(_scene(), [20, 25, 81, 86], G.GrabCutSettings(), 0)
    assert fallback and extent == (20, 25, 81, 86)
    np.testing.assert_array_equal(mask, G.box_ellipse([20, 25, 81, 86], extent))


def test_fallback_ellipse_is_the_scorers_pixel_centre_ellipse():
    box = [10.3, 5.6, 30.2, 17.9]
    extent = (10, 5, 31, 18)
    full = ellipse_masks(np.array([box]), 40, 40)[0]
    np.testing.assert_array_equal(G.box_ellipse(box, extent), full[5:18, 10:31])
    assert not full[:5].any() and not full[:, :10].any()


def test_fallback_fill_threshold(monkeypatch):
    """A result covering 20% of the box is kept at fallback_fill 0.05 and replaced by the ellipse at 0.4."""
    def fifth(img, mask, rect, bgd, fgd, it, mode):
        ys, xs = np.nonzero(mask == cv2.GC_PR_FGD) if rect is None else (None, None)
        x, y, w, h = rect if rect is not None else (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min())
        mask[:] = cv2.GC_BGD
        mask[y:y + h, x:x + w // 5] = cv2.GC_FGD
        return mask, bgd, fgd

    monkeypatch.setattr(G.cv2, "grabCut", fifth)
    box = [20, 25, 80, 85]
    kept = G.grabcut_box(_scene(), box, G.GrabCutSettings(fallback_fill=0.05, core=0, upscale_to=0), 0)
    dropped = G.grabcut_box(_scene(), box, G.GrabCutSettings(fallback_fill=0.4, core=0, upscale_to=0), 0)
    assert not kept[2] and 0.15 < kept[0].mean() < 0.25
    assert dropped[2]


def test_upscale_and_core_find_a_small_object():
    image = np.full((200, 200, 3), (40, 130, 40), np.uint8)
    cv2.circle(image, (100, 100), 9, (30, 30, 220), -1)
    box = [90, 90, 111, 111]
    yy, xx = np.mgrid[90:111, 90:111]
    disc = (xx - 100) ** 2 + (yy - 100) ** 2 <= 81
    for settings in (G.GrabCutSettings(), G.GrabCutSettings(core=0), G.GrabCutSettings(upscale_to=0)):
        mask, extent, fallback = G.grabcut_box(image, box, settings, rng_seed=1)
        assert extent == (90, 90, 111, 111) and mask.shape == (21, 21) and not fallback
        assert (mask & disc).sum() / (mask | disc).sum() > 0.75, settings


def test_max_side_cap_leaves_small_images_unchanged():
    """The memory cap (max_side 1024, the default) never touches a crop of an image of at most 1024 px."""
    rng = np.random.default_rng(3)
    image = (rng.integers(0, 60, (1024, 700, 3)) + 60).astype(np.uint8)
    cv2.circle(image, (350, 500), 300, (30, 30, 220), -1)
    cv2.rectangle(image, (20, 30), (26, 900), (220, 60, 40), -1)
    record = {"file_name": "big.png", "image_id": 1, "height": 1024, "width": 700,
              "annotations": [_ann([40, 190, 660, 810], 0), _ann([0, 0, 700, 1024], 1), _ann([18, 28, 29, 903], 2)]}
    capped, stats = G.compute_instance_map(image, record, G.GrabCutSettings())
    free, free_stats = G.compute_instance_map(image, record, G.GrabCutSettings(max_side=0))
    np.testing.assert_array_equal(capped, free)
    assert stats == free_stats
    smaller, _ = G.compute_instance_map(image, record, G.GrabCutSettings(max_side=256))
    assert not np.array_equal(smaller, free)  # the cap does act on crops above it


def test_instance_map_to_labels():
    inst = np.array([[0, 1, 2], [3, 65535, 9]], np.uint16)
    labels = G.instance_map_to_labels(inst, [4, 0, -1], 255)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, [[0, 5, 1], [255, 255, 255]])  # -1 -> ignore; 9: no annotation
    wide = G.instance_map_to_labels(inst, np.array([400, 0, 7]), 65535)
    assert wide.dtype == np.uint16
    np.testing.assert_array_equal(wide, [[0, 401, 1], [8, 65535, 65535]])
    t = G.instance_map_to_labels(torch.from_numpy(inst.astype(np.int32)), torch.tensor([4, 0, 1]), 255)
    assert t.dtype == torch.uint8 and t.tolist() == [[0, 5, 1], [2, 255, 255]]
    with pytest.raises(ValueError, match="ignore_label"):
        G.instance_map_to_labels(inst, [254], 255)


def test_png_roundtrip_and_stats(tmp_path):
    inst = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    stats = {"boxes": [[1, 0, 0.5], [2, 2, 0.0]]}
    data = G.encode_instance_map(inst, stats)
    (tmp_path / "m.png").write_bytes(data)
    np.testing.assert_array_equal(G.load_instance_map(tmp_path / "m.png"), inst)
    assert G.read_png_stats(tmp_path / "m.png") == stats
    (tmp_path / "cut.png").write_bytes(data[:-20])
    assert G.read_png_stats(tmp_path / "cut.png") is None
    with pytest.raises(ValueError, match="cut.png.*corrupt"):
        G.load_instance_map(tmp_path / "cut.png")
    record = {"file_name": "x.jpg", "height": 4, "width": 4, "grabcut_file_name": str(tmp_path / "m.png")}
    with pytest.raises(ValueError, match="4x3 but image x.jpg is 4x4"):
        G.load_instance_map(record)


def test_attach_reports_missing_files_and_command(fresh_cache):
    dicts = [{"file_name": f"/data/img{i}.jpg", "image_id": i, "height": 8, "width": 8,
              "annotations": [_ann([1, 1, 6, 6], 0)]} for i in range(5)]
    settings = G.GrabCutSettings(max_side=256)
    folder = G.grabcut_cache_dir("my_set", dicts, settings)
    folder.mkdir(parents=True)
    for r in dicts[:2]:
        G.grabcut_file_for(folder, r).write_bytes(G.encode_instance_map(np.zeros((8, 8), np.uint16), {"boxes": []}))
    with pytest.raises(FileNotFoundError) as err:
        G.attach_grabcut_files("my_set", dicts, settings)
    msg = str(err.value)
    assert "3 of 5 images" in msg and "'my_set'" in msg and "/data/img2.jpg (image_id 2)" in msg
    assert "box2seg prepare-grabcut --dataset my_set --max-side 256" in msg
    for r in dicts[2:]:
        G.grabcut_file_for(folder, r).write_bytes(G.encode_instance_map(np.zeros((8, 8), np.uint16), {"boxes": []}))
    G.attach_grabcut_files("my_set", dicts, settings)
    assert G.load_instance_map(dicts[3]).shape == (8, 8)
    # Other settings (or other annotations) are another cache entry.
    with pytest.raises(FileNotFoundError, match="5 of 5"):
        G.attach_grabcut_files("my_set", dicts, G.GrabCutSettings())


def test_attach_warns_when_the_cache_has_other_settings(fresh_cache, caplog):
    """Issue 13 item 7: labels prepared with other settings are named, with both settings and the command."""
    dicts = [{"file_name": f"/data/img{i}.jpg", "image_id": i, "height": 8, "width": 8,
              "annotations": [_ann([1, 1, 6, 6], 0)]} for i in range(2)]
    prepared = G.GrabCutSettings(core=0, upscale_to=0, fallback_fill=0.05)
    folder = G.grabcut_cache_dir("my_set", dicts, prepared)
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"settings": dataclasses.asdict(prepared)}))
    for r in dicts:
        G.grabcut_file_for(folder, r).write_bytes(G.encode_instance_map(np.zeros((8, 8), np.uint16), {"boxes": []}))
    G.attach_grabcut_files("my_set", dicts, prepared)  # the prepared settings: no warning
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    with caplog.at_level("WARNING", logger="box2seg.data.grabcut"):
        with pytest.raises(FileNotFoundError, match="2 of 2"):
            G.attach_grabcut_files("my_set", dicts, G.GrabCutSettings())
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert str(folder) in warning and "differ from the ones prepare-grabcut used" in warning
    assert "core=0.45" in warning and "core=0.0" in warning  # both settings
    assert "upscale_to=64" in warning and "fallback_fill=0.05" in warning
    assert "box2seg prepare-grabcut --dataset my_set\n" in warning + "\n"  # the current (default) settings
    caplog.clear()
    with caplog.at_level("WARNING", logger="box2seg.data.grabcut"), pytest.raises(FileNotFoundError):
        G.attach_grabcut_files("my_set", dicts, G.GrabCutSettings(seed=4))
    assert "box2seg prepare-grabcut --dataset my_set --seed 4" in caplog.records[0].getMessage()
