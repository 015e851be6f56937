"""box2seg.engine.defaults: setup_cfg (file, overrides, COCO-format datasets), register_datasets, and the
config keys renamed since 0e10efa failing with their new names."""
import os

import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from box2seg.config import REMOVED_KEYS, RENAMED_KEYS
from box2seg.engine import check_num_classes, register_datasets, setup_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")


def test_file_then_opts_then_datasets(tiny_coco):
    json_path, image_root = tiny_coco
    spec = f"setup_cfg_train={json_path}:{image_root}"
    cfg = setup_cfg(TINY, ["SOLVER.MAX_ITER", "7", "DATASETS.TRAIN", "('setup_cfg_train',)"], [spec])
    assert cfg.is_frozen()
    assert cfg.MODEL.UPERNET.CHANNELS == 32  # from the file
    assert cfg.INPUT.RESIZE_TYPE == "ResizeScale"  # from the file's _BASE_ chain
    assert cfg.SOLVER.MAX_ITER == 7  # from the overrides
    assert list(cfg.DATASETS.COCO_FORMAT) == [spec]
    # Registered in this process, with the metadata training reads.
    assert "setup_cfg_train" in DatasetCatalog.list()
    assert list(MetadataCatalog.get("setup_cfg_train").thing_classes) == ["disc", "blob", "triangle"]
    check_num_classes(cfg, cfg.DATASETS.TRAIN)
    assert len(DatasetCatalog.get("setup_cfg_train")) == 4

    # The flag's datasets come after the config's own; registering the same spec again is a no-op.
    other = f"setup_cfg_val={json_path}:{image_root}"
    cfg = setup_cfg(TINY, ["DATASETS.COCO_FORMAT", f"['{spec}']"], [other], freeze=False)
    assert list(cfg.DATASETS.COCO_FORMAT) == [spec, other] and not cfg.is_frozen()
    register_datasets(cfg)
    assert "setup_cfg_val" in DatasetCatalog.list()


def test_defaults_without_a_file():
    cfg = setup_cfg()
    assert cfg.MODEL.BOX2SEG.DECODER_MODE == "faithful" and cfg.MODEL.EFFICIENTNET.ARCH == "tf_efficientnet_lite0"
    assert cfg.GRABCUT.ITERATIONS == 5 and list(cfg.DATASETS.COCO_FORMAT) == []
    assert "BOX2SEG" not in cfg  # one BOX2SEG root only: MODEL.BOX2SEG


def test_a_missing_dataset_file_fails_naming_it(tmp_path):
    with pytest.raises(Exception, match="does not exist"):
        setup_cfg(TINY, coco_datasets=[f"nope={tmp_path / 'missing.json'}:{tmp_path}"])


@pytest.mark.parametrize("old,new", sorted(RENAMED_KEYS.items()))
def test_renamed_key_in_overrides_names_the_new_key(old, new):
    value = {"INPUT.BOX2SEG_RESIZE": "none", "BOX2SEG.COCO_DATASETS": "[]"}.get(old, "1")
    with pytest.raises(KeyError, match=f"{old} was renamed to {new}"):
        setup_cfg(TINY, [old, value])
    # ... and the new key exists.
    node = setup_cfg()
    for part in new.split("."):
        node = node[part]


def test_renamed_keys_in_a_config_file_name_the_new_keys(tmp_path):
    old_input = tmp_path / "old_input.yaml"
    old_input.write_text(f'_BASE_: "{TINY}"\nINPUT:\n  BOX2SEG_RESIZE: "none"\n')
    with pytest.raises(KeyError, match="INPUT.BOX2SEG_RESIZE was renamed to INPUT.RESIZE_TYPE"):
        setup_cfg(str(old_input))
    old_root = tmp_path / "old_root.yaml"
    old_root.write_text(f'_BASE_: "{TINY}"\nBOX2SEG:\n  GRABCUT:\n    MAX_SIDE: 384\n')
    with pytest.raises(KeyError, match=r"BOX2SEG was renamed to GRABCUT.*BOX2SEG.GRABCUT.\* is GRABCUT.\*"):
        setup_cfg(str(old_root))


def test_removed_key_is_ignored():
    (removed,) = REMOVED_KEYS
    cfg = setup_cfg(TINY, [removed, "True"])
    assert "USE_TRUE_MASKS" not in str(cfg.dump())


def test_model_keys_keep_their_names():
    """Checkpoints trained at 0e10efa load by module name; the model's config keys kept their names too."""
    cfg = setup_cfg(os.path.join(REPO, "configs", "cpu", "box2seg_lite0_shapes.yaml"))
    assert cfg.MODEL.BOX2SEG.LOSS.ATTENTION_START_ITER == 540 and cfg.MODEL.BOX2SEG.TEST.BOX_RULE == "foreground"


def test_num_classes_comes_from_the_training_dataset_when_unset(tiny_coco, tmp_path):
    """MODEL.SEM_SEG_HEAD.NUM_CLASSES counts background: left unset (0, the default) it is taken from
    DATASETS.TRAIN's metadata; set, it is checked against it (check_num_classes)."""
    json_path, image_root = tiny_coco
    spec = f"num_classes_train={json_path}:{image_root}"
    assert setup_cfg().MODEL.SEM_SEG_HEAD.NUM_CLASSES == 0  # no dataset: stays unset
    config = tmp_path / "no_classes.yaml"
    config.write_text(f'_BASE_: "{os.path.join(REPO, "configs", "cpu", "Base-Lite0-CPU.yaml")}"\n'
                      "DATASETS:\n  TRAIN: ('num_classes_train',)\n  TEST: ()\n")
    cfg = setup_cfg(str(config), [], [spec])
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 4  # disc, blob, triangle + background
    check_num_classes(cfg, cfg.DATASETS.TRAIN)
    cfg = setup_cfg(str(config), ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "6"], [spec])
    with pytest.raises(ValueError, match="set MODEL.SEM_SEG_HEAD.NUM_CLASSES 4"):
        check_num_classes(cfg, cfg.DATASETS.TRAIN)
