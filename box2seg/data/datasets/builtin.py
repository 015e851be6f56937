"""Register the standard box datasets under ``$DETECTRON2_DATASETS`` (default ``datasets``), as
detectron2's ``builtin.py`` does. Registration reads no annotation file (a few ``stat`` calls pick
optional files); a dataset whose files are missing fails with a clear error only when it is used.
Layouts: ``datasets/README.md``.
"""
import os

from .coco import register_coco_boxes
from .openimages import register_openimages_boxes
from .voc import register_voc_boxes

# name -> VOC 2012 segmentation split
_VOC_SPLITS = {
    "voc_2012_trainaug_boxes": "trainaug",  # 10,582 images (SBD + VOC train - VOC val)
    "voc_2012_train_boxes": "train",  # 1,464 images
    "voc_2012_val_boxes": "val",  # 1,449 images
}

# name -> (instances JSON relative to coco/annotations, image folder relative to coco)
_COCO_SPLITS = {
    "coco_2017_train_boxes": ("instances_train2017.json", "train2017"),
    "coco_2017_val_boxes": ("instances_val2017.json", "val2017"),
}

# name -> (boxes CSV, image-level labels CSV, image folder); V7 reuses V6's boxes, so V7 files work too.
_OPENIMAGES_SPLITS = {
    "openimages_v6_train_boxes": ("oidv6-train-annotations-bbox.csv",
                                  "oidv6-train-annotations-human-imagelabels-boxable.csv", "train"),
    "openimages_v6_val_boxes": ("validation-annotations-bbox.csv",
                                "validation-annotations-human-imagelabels-boxable.csv", "validation"),
    "openimages_v6_test_boxes": ("test-annotations-bbox.csv",
                                 "test-annotations-human-imagelabels-boxable.csv", "test"),
}
_OPENIMAGES_CLASSES = ("class-descriptions-boxable.csv", "oidv7-class-descriptions-boxable.csv")


def register_all_voc(root):
    for name, split in _VOC_SPLITS.items():
        register_voc_boxes(name, os.path.join(root, "VOC2012"), split)


def register_all_coco(root):
    for name, (json_file, images) in _COCO_SPLITS.items():
        register_coco_boxes(name, os.path.join(root, "coco", "annotations", json_file), os.path.join(root, "coco", images))


def register_all_openimages(root):
    ann = os.path.join(root, "openimages", "annotations")
    classes = next((os.path.join(ann, c) for c in _OPENIMAGES_CLASSES if os.path.isfile(os.path.join(ann, c))),
                   os.path.join(ann, _OPENIMAGES_CLASSES[0]))
    for name, (boxes, labels, images) in _OPENIMAGES_SPLITS.items():
        labels = os.path.join(ann, labels)
        register_openimages_boxes(name, os.path.join(ann, boxes), classes, os.path.join(root, "openimages", images),
                                  image_labels_csv=labels if os.path.isfile(labels) else None)


_root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
register_all_voc(_root)
register_all_coco(_root)
register_all_openimages(_root)

from . import scenes as _scenes  # noqa: E402,F401  (box2seg_scenes_{train,val}: generated, lazily registered)
