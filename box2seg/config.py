"""Box2Seg's config nodes. ``add_box2seg_config(cfg)`` adds them to a detectron2 config in place,
touching no global state, as detectron2's projects do (PointRend, Panoptic-DeepLab)."""
from detectron2.config import CfgNode as CN

from .modeling.backbone.efficientnet_lite import add_efficientnet_config
from .modeling.decoders.registry import add_box2seg_decoder_config


def add_box2seg_config(cfg):
    _C = cfg
    # Poly learning rate (LR_SCHEDULER_NAME "WarmupPolyLR"), as detectron2's DeepLab project defines it.
    if "POLY_LR_POWER" not in _C.SOLVER:
        _C.SOLVER.POLY_LR_POWER = 0.9
        _C.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0

    # "SGD" (detectron2's, with SOLVER.MOMENTUM / NESTEROV) or "AdamW" (converges in far fewer iterations,
    # which is what short CPU runs need).
    _C.SOLVER.OPTIMIZER = "SGD"
    # Learning-rate factor of the backbone's parameters (the pretrained encoder) against BASE_LR.
    _C.SOLVER.BACKBONE_MULTIPLIER = 1.0

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

    # Fine-tuning with pixel labels: the mapper also returns the true semantic map ("sem_seg").
    _C.BOX2SEG.USE_TRUE_MASKS = False

    # Training-time augmentation of image, boxes and GrabCut map together (Box2SegDatasetMapper).
    # "ResizeShortestEdge" uses INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN; "ResizeScale" scales the image to
    # RESIZE_SCALE x TARGET_SIZE (the UPerNet recipe). Then INPUT.CROP (absolute) and a horizontal flip.
    _C.INPUT.BOX2SEG_RESIZE = "ResizeShortestEdge"
    _C.INPUT.RESIZE_SCALE = (0.5, 2.0)
    _C.INPUT.TARGET_SIZE = 512
    # A box whose area shrinks below this fraction of its pre-crop area is dropped from the targets.
    _C.INPUT.MIN_BOX_AREA_KEPT = 0.1

    # The model (box2seg.modeling.meta_arch.Box2Seg). NUM_CLASSES and IGNORE_VALUE live in
    # MODEL.SEM_SEG_HEAD as for detectron2's semantic segmentors: NUM_CLASSES = L + 1 (background too).
    _C.MODEL.BOX2SEG = CN()
    _C.MODEL.BOX2SEG.SIZE_DIVISIBILITY = 32
    # The first PRETRAIN_ITERS iterations train only encoder + embedding decoder with L_A_pre.
    _C.MODEL.BOX2SEG.PRETRAIN_ITERS = 0
    _C.MODEL.BOX2SEG.LOSS = CN()
    # Enabled terms; ablations remove names here: gc, fg, bg, fr, aff.
    _C.MODEL.BOX2SEG.LOSS.TERMS = ["gc", "fg", "bg", "fr", "aff"]
    _C.MODEL.BOX2SEG.LOSS.GC_WEIGHT = 1.0
    _C.MODEL.BOX2SEG.LOSS.FG_WEIGHT = 1.0
    _C.MODEL.BOX2SEG.LOSS.BG_WEIGHT = 1.0
    # Not 1 (choice): per pixel, L_fg pulls alpha down with -log y(i,c) and the active hinge pushes it up
    # with FR_WEIGHT (both over sum_i B(i,c)). At initialisation -log y = log(L+1) > 1, so with weight 1
    # every alpha falls into sigmoid saturation within ~50 iterations and never recovers (seen on
    # box2seg_shapes: loss_fg 2e-5 by iteration 80). Above log(L+1) the hinge holds the constraint; 5
    # covers VOC (log 21 = 3.0) and COCO (log 81 = 4.4); use ~8 for Open Images (log 602 = 6.4).
    _C.MODEL.BOX2SEG.LOSS.FR_WEIGHT = 5.0
    _C.MODEL.BOX2SEG.LOSS.AFFINITY_WEIGHT = 1.0
    _C.MODEL.BOX2SEG.LOSS.AFFINITY_PRETRAIN_WEIGHT = 1.0
    # L_fg and L_fr join at this iteration (0: together with the other terms, the method as written). Before it
    # the attention branch is not evaluated; see Box2SegLoss.active_terms for why a later start can help.
    _C.MODEL.BOX2SEG.LOSS.ATTENTION_START_ITER = 0
    _C.MODEL.BOX2SEG.LOSS.GAMMA = 0.8  # filling-rate hinge: attention must cover gamma * eta_c
    _C.MODEL.BOX2SEG.AFFINITY = CN()
    _C.MODEL.BOX2SEG.AFFINITY.NUM_SAMPLES = 1024  # pixels per image; memory O(NUM_SAMPLES^2)
    _C.MODEL.BOX2SEG.AFFINITY.BOUNDARY_FRACTION = 0.5  # share sampled near GrabCut class boundaries
    _C.MODEL.BOX2SEG.AFFINITY.BOUNDARY_WIDTH = 8  # px
    _C.MODEL.BOX2SEG.AFFINITY.DETACH = "none"  # none | segmentation | embedding
    _C.MODEL.BOX2SEG.TEST = CN()
    _C.MODEL.BOX2SEG.TEST.FLIP = False
    _C.MODEL.BOX2SEG.TEST.SCALES = [1.0]
    _C.MODEL.BOX2SEG.TEST.BOX_MASKS = True  # box-conditioned masks when the input carries boxes
    # Box-conditioned rule: "class" (y(c) against y(bg), the method's) or "foreground" (1 - y(bg) against
    # y(bg), then the best covering class) for many classes and few images; see modeling/box_conditioned.py.
    _C.MODEL.BOX2SEG.TEST.BOX_RULE = "class"

    # Decoders (MODEL.UPERNET, MODEL.BOX2SEG.DECODER_MODE / heads / EMBEDDING_DIM) and the
    # EfficientNet-Lite0 backbone (MODEL.EFFICIENTNET): their nodes live next to the components.
    add_box2seg_decoder_config(_C)
    add_efficientnet_config(_C)
    return cfg
