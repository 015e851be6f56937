"""Inference on plain images: ``Box2SegPredictor``, and the label PNGs and overlays ``box2seg predict`` writes.

``Box2SegPredictor`` is detectron2's ``DefaultPredictor`` for Box2Seg: a config in, a BGR image (or a path)
per call, probabilities and labels out at the image's own resolution. Given the image's boxes and their
classes it also returns the box-conditioned masks (one per box), the masks the pseudo-mask export hands to
Mask R-CNN; ``attention()`` gives the alpha branch's per-class maps sigmoid(alpha).

    box2seg predict --config-file CFG --input photos/ 'more/*.jpg' one.png --output pred/ \\
        MODEL.WEIGHTS output/model_final.pth

writes ``pred/labels/NAME.png`` (semantic labels: 0 background, class + 1; uint16 beyond 254 classes) and
``pred/overlays/NAME.png`` (the image tinted by the prediction) for every input image.
"""
import glob
import hashlib
import logging
import os

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from detectron2.structures import BoxMode, Boxes, Instances
from tqdm import tqdm

from .data.grabcut import GrabCutSettings, compute_own_masks
from .engine import load_weights, setup_cfg
from .modeling.box_conditioned import box_conditioned_masks
from .utils.visualizer import overlay_labels, palette, write_label_png, write_png

__all__ = ["Box2SegPredictor", "setup_predict_cfg", "expand_inputs", "output_names", "predict_images"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def setup_predict_cfg(config_file, opts=(), coco_datasets=(), openimages_datasets=()):
    """A frozen Box2Seg config for inference, its COCO-format datasets registered (for their class names);
    falls back to the CPU (with a warning) without a GPU."""
    cfg = setup_cfg(config_file, opts or (), coco_datasets=coco_datasets, openimages_datasets=openimages_datasets,
                    freeze=False)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(f"MODEL.DEVICE={cfg.MODEL.DEVICE} but no GPU is available: running on the CPU")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def _class_names(cfg, num_classes):
    """thing_classes of the first registered dataset of the config with the model's class count."""
    registered = set(DatasetCatalog.list())
    for name in list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
        if name not in registered:
            continue
        try:
            names = MetadataCatalog.get(name).get("thing_classes", None)
        except Exception as e:  # a lazily read annotation file that is gone: names are cosmetic here
            logger.warning(f"cannot read the class names of dataset {name!r}: {e}")
            continue
        if names is not None and len(names) == num_classes:
            return list(names)
    return [f"class {i}" for i in range(num_classes)]


class Box2SegPredictor:
    """Box2Seg inference on one image at a time, like detectron2's ``DefaultPredictor``.

    Loads ``cfg.MODEL.WEIGHTS``, resizes with INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST, converts the BGR input
    to INPUT.FORMAT and returns everything at the input's resolution. Attributes: ``model``,
    ``num_classes`` (L, background not counted), ``thing_classes``. Weights that leave parameters of the
    model unloaded (another class count, Mask R-CNN weights) raise ``engine.PartialWeightsError`` unless
    ``allow_partial_weights``.
    """

    def __init__(self, cfg, allow_partial_weights=False):
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        if not (hasattr(self.model, "decoders") and hasattr(self.model, "backbone")):
            raise TypeError(f"MODEL.META_ARCHITECTURE={cfg.MODEL.META_ARCHITECTURE!r} is not a Box2Seg model")
        self.model.eval()
        if cfg.MODEL.WEIGHTS:
            load_weights(self.model, cfg.MODEL.WEIGHTS, allow_partial=allow_partial_weights)
        else:
            logger.warning("MODEL.WEIGHTS is empty: predicting with an untrained, randomly initialised model")
        self.resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT={self.input_format!r}: Box2SegPredictor takes 'RGB' or 'BGR'")
        self.num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1
        self.thing_classes = _class_names(cfg, self.num_classes)

    @staticmethod
    def read(image):
        """A BGR uint8 (H, W, 3) array from a path (EXIF orientation applied) or an array (gray -> BGR)."""
        if isinstance(image, (str, os.PathLike)):
            path = os.fspath(image)
            try:
                return read_image(path, format="BGR")
            except Exception as e:  # PIL raises several types; name the file whatever went wrong
                raise OSError(f"cannot read image {path}: {e}") from e
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 image of shape (H, W, 3), got {image.dtype} {image.shape}")
        return image

    def _inputs(self, image_bgr):
        image = image_bgr[:, :, ::-1] if self.input_format == "RGB" else image_bgr
        height, width = image.shape[:2]
        resized = self.resize.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    def _check_boxes(self, boxes, classes):
        if classes is None:
            raise ValueError("boxes need their classes: pass classes=(N,) contiguous class ids")
        boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
        classes = torch.as_tensor(np.asarray(classes, dtype=np.int64)).reshape(-1)
        if len(boxes) != len(classes):
            raise ValueError(f"{len(boxes)} boxes but {len(classes)} classes")
        bad = (classes < 0) | (classes >= self.num_classes)
        if bad.any():
            k = int(bad.nonzero()[0, 0])
            raise ValueError(f"box {k} {boxes[k].tolist()}: class {int(classes[k])} is outside "
                             f"0..{self.num_classes - 1}")
        return boxes, classes

    @torch.no_grad()
    def __call__(self, image, boxes=None, classes=None):
        """Predict one image.

        Args:
            image: BGR uint8 (H, W, 3) array, or an image path.
            boxes, classes: optional (N, 4) xyxy boxes in the image's pixels and their (N,) contiguous
                class ids; then the result has "box_masks".
        Returns:
            {"sem_seg": (L+1, H, W) float probabilities (channel 0 background), "labels": (H, W) long
            argmax, and "box_masks": (N, H, W) bool when boxes are given}, CPU tensors.
        """
        image = self.read(image)
        inputs = self._inputs(image)
        if self.cfg.MODEL.BOX2SEG.CHIPS.ENABLED:
            return self._chip_call(inputs, boxes, classes, image)
        probs = self.model([inputs])[0]["sem_seg"].float().cpu()
        result = {"sem_seg": probs, "labels": probs.argmax(dim=0)}
        if boxes is not None:
            boxes, classes = self._check_boxes(boxes, classes)
            result["box_masks"] = box_conditioned_masks(probs, boxes, classes, self.cfg.MODEL.BOX2SEG.TEST.BOX_RULE)
        return result

    def _chip_call(self, inputs, boxes, classes, image_bgr):
        """Chip mode: the model's own per-box masks (one chip per box); the semantic output is those masks
        painted, one-hot. Boxes are required. With CHIPS.GRABCUT_WEIGHT > 0 GrabCut runs on the image's boxes
        first (the settings of the config's GRABCUT), as prepare-grabcut would."""
        if boxes is None:
            raise ValueError("this config is in chip mode (MODEL.BOX2SEG.CHIPS.ENABLED): it predicts masks for "
                             "given boxes, so pass boxes (predict --boxes FILE) or use a whole-image config")
        boxes, classes = self._check_boxes(boxes, classes)
        scale = inputs["image"].shape[-1] / inputs["width"], inputs["image"].shape[-2] / inputs["height"]
        instances = Instances(tuple(inputs["image"].shape[-2:]))
        instances.gt_boxes = Boxes(boxes * torch.tensor([scale[0], scale[1], scale[0], scale[1]]))
        instances.gt_classes = classes
        extra = {}
        if self.cfg.MODEL.BOX2SEG.CHIPS.GRABCUT_WEIGHT > 0:
            record = {"file_name": "", "image_id": 0, "annotations": [
                {"bbox": box.tolist(), "bbox_mode": BoxMode.XYXY_ABS, "category_id": int(c)}
                for box, c in zip(boxes, classes)]}
            own = compute_own_masks(image_bgr, record, GrabCutSettings.from_config(self.cfg))
            extra["grabcut_own_masks"] = torch.from_numpy(own)
        out = self.model([dict(inputs, instances=instances, **extra)])[0]
        sem_seg = out["sem_seg"].float().cpu()
        return {"sem_seg": sem_seg, "labels": sem_seg.argmax(dim=0), "box_masks": out["box_masks"].cpu(),
                "box_scores": out["box_scores"].cpu()}

    @torch.no_grad()
    def attention(self, image, classes=None):
        """sigmoid(alpha) at the image's resolution: (K, H, W) for the given contiguous ``classes``
        (all L when None), by the model's ``attention_maps``."""
        image = self.read(image)
        if classes is not None:
            classes = [np.asarray(classes, dtype=np.int64).reshape(-1)]
        return self.model.attention_maps([self._inputs(image)], classes)[0].cpu()


# --------------------------------------------------------------------------------------------------
# Image files in, label PNGs and overlays out


def expand_inputs(items):
    """Image files from files, folders (their images, not recursive) and globs, in order, deduplicated.
    Anything that names no image raises, naming it."""
    paths = []
    for item in items:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item)
                           if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(item, f)))
            what = "folder"
        elif os.path.isfile(item):
            found, what = [item], "file"
        else:
            found = sorted(p for p in glob.glob(item, recursive=True)
                           if os.path.isfile(p) and p.lower().endswith(IMAGE_EXTENSIONS))
            what = "pattern"
        if not found and what == "folder":
            raise FileNotFoundError(f"--input {item!r}: the folder holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        if not found:
            raise FileNotFoundError(f"--input {item!r}: no such file or folder, and no image matches it as a pattern")
        paths.extend(found)
    seen, unique = set(), []
    for p in paths:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def output_names(paths):
    """File stems for the outputs; a stem shared by several inputs gets a hash of the full path."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    counts = {s: stems.count(s) for s in set(stems)}
    return [s if counts[s] == 1 else f"{s}-{hashlib.sha1(os.path.abspath(p).encode()).hexdigest()[:8]}"
            for s, p in zip(stems, paths)]


def predict_images(predictor, paths, output, opacity=0.5):
    """Writes ``output/labels/NAME.png`` (0 background, class + 1) and ``output/overlays/NAME.png`` (the image
    tinted by the prediction, ``opacity``) per image path (names from :func:`output_names`). An unreadable
    image is logged and skipped; returns how many were."""
    colours = palette(predictor.num_classes)
    label_dir, overlay_dir = os.path.join(output, "labels"), os.path.join(output, "overlays")
    failed = 0
    for path, name in zip(tqdm(paths, desc="predict", unit="image"), output_names(paths)):
        try:
            image = predictor.read(path)
        except OSError as e:
            logger.error(f"{e}; skipped")
            failed += 1
            continue
        labels = predictor(image)["labels"].numpy()
        write_label_png(os.path.join(label_dir, f"{name}.png"), labels, predictor.num_classes)
        write_png(os.path.join(overlay_dir, f"{name}.png"), overlay_labels(image, labels, colours, opacity))
    logger.info(f"predicted {len(paths) - failed} image(s) into {output}"
                + (f"; {failed} could not be read" if failed else ""))
    return failed
