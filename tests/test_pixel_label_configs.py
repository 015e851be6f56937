"""The pixel-label configs (VOC fine-tuning, VOC with full masks, COCO-format boxes with some masks) train two
iterations on generated data, their datasets replaced by a tiny COCO-format set and a second one listing half
of its images; the sizes are shrunk to fit a CPU, the architecture is the config's."""
import json
import os
import uuid

import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import pytest

from box2seg.engine import TrainOnlyTrainer, final_weights, prepare_caches, setup_cfg, train_dicts_with_grabcut

REPO = os.path.dirname(os.path.abspath(__file__))
CONFIGS = os.path.join(os.path.dirname(REPO), "configs")

# config -> (training dataset, PIXEL_LABELS.DATASETS or None, images with masks of the 4)
CASES = {
    "voc/box2seg_R101_upernet_voc_finetune.yaml": ("masks", None, 2),
    "voc/box2seg_R101_upernet_voc_full_masks.yaml": ("boxes", None, 4),
    "cpu/box2seg_lite0_coco_chips_pixel_labels.yaml": ("boxes", "masks", 2),
}


def _half(json_path, folder):
    """A second COCO JSON over the same images: the first two, with their annotations."""
    with open(json_path) as f:
        data = json.load(f)
    data["images"] = data["images"][:2]
    ids = {img["id"] for img in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    path = os.path.join(folder, "half.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path


@pytest.mark.parametrize("config", sorted(CASES))
def test_pixel_label_config_trains_two_iterations(config, tiny_coco, tmp_path):
    json_path, image_root = tiny_coco
    tag = uuid.uuid4().hex[:8]
    names = {"boxes": f"px_boxes_{tag}", "masks": f"px_masks_{tag}"}
    specs = [f"{names['boxes']}={json_path}:{image_root}", f"{names['masks']}={_half(json_path, str(tmp_path))}:{image_root}"]
    train, second, expected = CASES[config]
    opts = ["DATASETS.TRAIN", f"('{names[train]}',)", "DATASETS.TEST", f"('{names['masks']}',)",
            "MODEL.WEIGHTS", "", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "0", "MODEL.DEVICE", "cpu",
            "MODEL.BOX2SEG.AFFINITY.NUM_SAMPLES", "64", "MODEL.BOX2SEG.CHIPS.SIZE", "64",
            "INPUT.TARGET_SIZE", "64", "INPUT.CROP.SIZE", "(64, 64)", "INPUT.MIN_SIZE_TEST", "64",
            "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "0",
            "SOLVER.CHECKPOINT_PERIOD", "100", "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path / "out")]
    if second:
        opts += ["MODEL.BOX2SEG.PIXEL_LABELS.DATASETS", f"['{names[second]}']"]
    if "full_masks" in config:
        opts += ["MODEL.BOX2SEG.PRETRAIN_ITERS", "1"]  # the embedding pre-training reads the masks too
    cfg = setup_cfg(os.path.join(CONFIGS, config), opts, specs)
    assert cfg.MODEL.BOX2SEG.PIXEL_LABELS.ENABLED
    prepare_caches(cfg, list(cfg.DATASETS.TRAIN))
    records = train_dicts_with_grabcut(cfg)
    assert sum(r["supervision"] != "boxes" for r in records) == expected
    trainer = TrainOnlyTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert os.path.isfile(final_weights(cfg.OUTPUT_DIR))
    assert trainer.iter == 2 and trainer.start_iter == 0  # two iterations ran
