"""Box2Seg's config nodes. ``add_box2seg_config(cfg)`` adds them to a detectron2 config in place,
touching no global state, as detectron2's projects do (PointRend, Panoptic-DeepLab)."""
from detectron2.config import CfgNode as CN


def add_box2seg_config(cfg):
    _C = cfg
    _C.BOX2SEG = CN()
    # User COCO-format box datasets, "NAME=JSON:IMAGE_ROOT"; registered in every process (launch workers
    # too) before the datasets are read. The CLI flag --coco-dataset appends here.
    _C.BOX2SEG.COCO_DATASETS = []

    # Offline GrabCut pseudo-labels (box2seg prepare-grabcut). These settings are part of the cache key.
    _C.BOX2SEG.GRABCUT = CN()
    _C.BOX2SEG.GRABCUT.ITERATIONS = 5
    _C.BOX2SEG.GRABCUT.MARGIN = 0.5  # background margin around the box, relative to its size
    _C.BOX2SEG.GRABCUT.MIN_MARGIN = 32  # ... and at least this many pixels
    _C.BOX2SEG.GRABCUT.MAX_SIDE = 0  # cap the crop's longer side (0 = no cap); the result is upsampled back
    _C.BOX2SEG.GRABCUT.SEED = 0
    # Training computes missing GrabCut labels itself (rank 0, behind a barrier) instead of failing.
    _C.BOX2SEG.GRABCUT.PREPARE_IF_MISSING = True

    # Training-time augmentation of image, boxes and GrabCut map together (Box2SegDatasetMapper).
    # "ResizeShortestEdge" uses INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN; "ResizeScale" scales the image to
    # RESIZE_SCALE x TARGET_SIZE (the UPerNet recipe). Then INPUT.CROP (absolute) and a horizontal flip.
    _C.INPUT.BOX2SEG_RESIZE = "ResizeShortestEdge"
    _C.INPUT.RESIZE_SCALE = (0.5, 2.0)
    _C.INPUT.TARGET_SIZE = 512
    # A box whose area shrinks below this fraction of its pre-crop area is dropped from the targets.
    _C.INPUT.MIN_BOX_AREA_KEPT = 0.1
    return cfg
