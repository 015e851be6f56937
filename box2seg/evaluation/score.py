"""``box2seg score``: compare a pseudo-mask COCO file (e.g. ``box2seg export``'s) with a ground-truth one.

Both files describe the *same boxes*: the prediction must carry the ground truth's image ids and annotation
ids (crowd annotations may be left out), which is what makes a per-instance comparison possible without any
matching heuristic. Reported:

- mean per-instance mask IoU (the one scorer, :mod:`box2seg.evaluation.box_scorer`: RLE IoU through
  pycocotools), each prediction against the ground-truth mask of the same annotation id, under both
  protocols: the prediction's own mask (the headline, overlaps allowed) and the pixels it keeps once the
  image's predictions are painted (smaller box wins); overall, by COCO size (small < 32^2 <= medium < 96^2
  <= large, by ground-truth mask area) and, own masks, per class. A GT without any mask to score against is
  refused (``ScoreError``: the command exits non-zero).
  Crowd annotations, ground-truth annotations without a mask and those whose box the dataset loaders drop
  (empty, non-finite or outside the image: no pseudo-mask can exist for them, so the prediction may omit
  them) are not scored;
- semantic mIoU of the label maps each file's masks paint (``paint_box_masks``: the smaller box wins
  overlaps). In the ground-truth map, crowd regions and the boxes of unmasked annotations are ignore where
  no other mask claims them. The mIoU is the fixed SemSegEvaluator definition (``compat.fixed_miou``):
  classes with ground-truth pixels only.
"""
import json
import math
from collections import OrderedDict

import numpy as np

from ..compat import fixed_miou
from ..data.datasets.common import BOX_CLIPPED, validate_boxes
from ..structures import PIXELS_TOUCHED, box_pixel_masks, decode_segmentation
from .box_scorer import SIZE_BUCKETS, mask_ious, painted_masks, summarize_instance_ious
from .mask_scoring import paint_box_masks

__all__ = ["ScoreError", "score_files", "score_coco", "check_matching_ids", "invalid_box_ids", "format_table",
           "json_ready"]

_EXAMPLES = 5


class ScoreError(ValueError):
    """Files that cannot be compared; the message names the file and what differs."""


def _load(path, what):
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ScoreError(f"{what} file {path} does not exist") from None
    except ValueError as e:
        raise ScoreError(f"{what} file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")):
        raise ScoreError(f"{what} file {path} is not a COCO instances JSON (needs 'images' and 'annotations' lists)")
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "id" not in ann or "image_id" not in ann:
            raise ScoreError(f"{what} file {path}: annotation #{i} needs 'id' and 'image_id'")
    return data


def _by_id(items, path, kind):
    out = {}
    for item in items:
        if item["id"] in out:
            raise ScoreError(f"{path}: duplicate {kind} id {item['id']!r}")
        out[item["id"]] = item
    return out


def _examples(ids):
    ids = sorted(ids, key=str)
    more = f" and {len(ids) - _EXAMPLES} more" if len(ids) > _EXAMPLES else ""
    return ", ".join(repr(i) for i in ids[:_EXAMPLES]) + more


def check_matching_ids(gt, pred, gt_path="GT", pred_path="PRED"):
    """Refuse a prediction that does not describe the ground truth's boxes (clear message, counts, examples)."""
    problems = []
    gt_images = {img["id"] for img in gt["images"]}
    pred_images = {img["id"] for img in pred["images"]}
    if gt_images != pred_images:
        only_gt, only_pred = gt_images - pred_images, pred_images - gt_images
        if only_gt:
            problems.append(f"{len(only_gt)} image ids only in the GT ({_examples(only_gt)})")
        if only_pred:
            problems.append(f"{len(only_pred)} image ids only in the prediction ({_examples(only_pred)})")
    gt_anns = _by_id(gt["annotations"], gt_path, "annotation")
    pred_anns = _by_id(pred["annotations"], pred_path, "annotation")
    invalid = invalid_box_ids(gt)
    required = {k for k, a in gt_anns.items() if not a.get("iscrowd", 0)} - invalid
    missing = required - set(pred_anns)
    extra = set(pred_anns) - set(gt_anns)
    if missing:
        problems.append(f"{len(missing)} of {len(required)} non-crowd GT annotation ids missing from the prediction "
                        f"({_examples(missing)})")
    if extra:
        problems.append(f"{len(extra)} prediction annotation ids not in the GT ({_examples(extra)})")
    moved = [k for k in set(pred_anns) & set(gt_anns) if pred_anns[k]["image_id"] != gt_anns[k]["image_id"]]
    if moved:
        problems.append(f"{len(moved)} annotations with another image id than in the GT ({_examples(moved)})")
    if problems:
        raise ScoreError(f"{pred_path} does not describe the boxes of {gt_path} ({len(gt_images)} vs "
                         f"{len(pred_images)} images, {len(gt_anns)} vs {len(pred_anns)} annotations): "
                         + "; ".join(problems) + ". The prediction must keep the GT's image and annotation ids.")
    return gt_anns, pred_anns, invalid


def invalid_box_ids(coco):
    """Ids of non-crowd annotations whose box the dataset loaders drop (non-finite, empty, outside the image:
    ``validate_boxes``): no box-conditioned mask can exist for them, so they are neither required nor scored."""
    sizes = {img["id"]: (img.get("width"), img.get("height")) for img in coco["images"]}
    anns = [a for a in coco["annotations"] if not a.get("iscrowd", 0) and a["image_id"] in sizes]
    if not anns:
        return set()
    boxes = []
    for a in anns:
        try:
            boxes.append(_xyxy(a["bbox"]))
        except (KeyError, TypeError, ValueError):
            boxes.append([float("nan")] * 4)
    size = np.array([sizes[a["image_id"]] for a in anns], np.float64)
    _, status = validate_boxes(np.array(boxes), size[:, 0], size[:, 1])
    return {a["id"] for a, st in zip(anns, status) if st > BOX_CLIPPED}


def _xyxy(bbox):
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def _decode(ann, height, width, path):
    segmentation = ann.get("segmentation")
    if not segmentation:
        return None
    try:
        mask = decode_segmentation(segmentation, height, width)
    except Exception as e:  # pycocotools raises bare Exceptions / TypeErrors on malformed input
        raise ScoreError(f"{path}: annotation id {ann['id']!r} has an unreadable segmentation: {e}") from None
    if mask.shape != (height, width):
        raise ScoreError(f"{path}: annotation id {ann['id']!r} has a {mask.shape[1]}x{mask.shape[0]} mask but its "
                         f"image {ann['image_id']!r} is {width}x{height}")
    return mask


def score_coco(gt, pred, gt_path="GT", pred_path="PRED"):
    """Scores of ``pred`` against ``gt`` (parsed COCO dicts). IoUs in [0, 1]; NaN where nothing was scored."""
    gt_anns, pred_anns, invalid = check_matching_ids(gt, pred, gt_path, pred_path)
    categories = gt.get("categories") or []
    cat_ids = sorted(c["id"] for c in categories)
    names = {c["id"]: str(c.get("name", c["id"])) for c in categories}
    contiguous = {d: i for i, d in enumerate(cat_ids)}
    num_classes = len(cat_ids)
    for path, anns in ((gt_path, gt_anns), (pred_path, pred_anns)):
        unknown = {a["category_id"] for a in anns.values() if a.get("category_id") not in contiguous}
        if unknown:
            raise ScoreError(f"{path}: category ids {_examples(unknown)} are not in the GT's categories")

    n = num_classes + 1
    conf = np.zeros((n + 1, n + 1), np.int64)  # [pred, gt], last row/column: ignore
    ious, painted_ious, areas, classes = [], [], [], []
    per_image_gt, per_image_pred = {}, {}
    for a in gt["annotations"]:
        if a["id"] not in invalid:
            per_image_gt.setdefault(a["image_id"], []).append(a)
    for a in pred["annotations"]:
        if not a.get("iscrowd", 0) and not gt_anns[a["id"]].get("iscrowd", 0) and a["id"] not in invalid:
            per_image_pred.setdefault(a["image_id"], []).append(a)
    not_scored = {"crowd": 0, "gt_without_mask": 0, "invalid_box": len(invalid)}

    for image in gt["images"]:
        height, width = image.get("height"), image.get("width")
        if not (isinstance(height, int) and isinstance(width, int)):
            raise ScoreError(f"{gt_path}: image {image['id']!r} needs integer 'height' and 'width'")
        anns = per_image_gt.get(image["id"], [])
        normal = [a for a in anns if not a.get("iscrowd", 0)]
        crowd = [a for a in anns if a.get("iscrowd", 0)]
        not_scored["crowd"] += len(crowd)
        gt_masks = [_decode(a, height, width, gt_path) for a in normal]
        masked = [a for a, m in zip(normal, gt_masks) if m is not None]
        unmasked = [a for a, m in zip(normal, gt_masks) if m is None]
        not_scored["gt_without_mask"] += len(unmasked)
        gt_stack = np.array([m for m in gt_masks if m is not None], bool).reshape(-1, height, width)

        # A prediction without a mask is refused where the GT has one (scored below), else left unpainted
        # (its GT box is ignore), so a file scored against itself is perfect.
        preds = [a for a in per_image_pred.get(image["id"], [])
                 if a.get("segmentation") or gt_anns[a["id"]].get("segmentation")]
        pred_stack = np.array([_required_mask(a, height, width, pred_path) for a in preds], bool).reshape(
            -1, height, width)
        pred_boxes = np.array([_xyxy(a["bbox"]) for a in preds], np.float64).reshape(-1, 4)

        # Per-instance IoU: each masked GT annotation against the prediction of the same id, as its own mask
        # (the headline) and as the pixels it keeps once the image's predictions are painted (smaller box wins).
        if masked:
            position = {a["id"]: k for k, a in enumerate(preds)}
            own = np.stack([_required_mask(pred_anns[a["id"]], height, width, pred_path) for a in masked])
            painted = painted_masks(pred_stack, pred_boxes)
            kept = np.stack([painted[position[a["id"]]] if a["id"] in position else m for a, m in zip(masked, own)])
            ious.extend(mask_ious(own, gt_stack).tolist())
            painted_ious.extend(mask_ious(kept, gt_stack).tolist())
            areas.extend(gt_stack.reshape(len(gt_stack), -1).sum(1).tolist())
            classes.extend(contiguous[a["category_id"]] for a in masked)

        # Semantic maps painted from each file's masks.
        gt_labels = paint_box_masks(gt_stack, [contiguous[a["category_id"]] for a in masked],
                                    [_xyxy(a["bbox"]) for a in masked], height, width)
        unknown = np.zeros((height, width), bool)
        if crowd:
            crowd_masks = [_decode(a, height, width, gt_path) for a in crowd]
            crowd_boxes = box_pixel_masks([_xyxy(a["bbox"]) for a in crowd], height, width, PIXELS_TOUCHED)
            unknown |= np.stack([m if m is not None else b for m, b in zip(crowd_masks, crowd_boxes)]).any(0)
        if unmasked:
            unknown |= box_pixel_masks([_xyxy(a["bbox"]) for a in unmasked], height, width, PIXELS_TOUCHED).any(0)
        gt_index = gt_labels.copy()
        gt_index[unknown & ~gt_stack.any(0)] = n  # ignore where no real mask claims the pixel
        pred_labels = paint_box_masks(pred_stack, [contiguous[a["category_id"]] for a in preds], pred_boxes,
                                      height, width)
        conf += np.bincount((n + 1) * pred_labels.reshape(-1) + gt_index.reshape(-1),
                            minlength=(n + 1) ** 2).reshape(n + 1, n + 1)

    if not ious:
        raise ScoreError(f"{gt_path}: no ground-truth mask to score against ({not_scored['gt_without_mask']} non-crowd "
                         f"annotations without a mask, {not_scored['crowd']} crowd, {not_scored['invalid_box']} with an "
                         "invalid box): box2seg score needs a GT with instance masks")
    ious, areas, classes = np.asarray(ious, np.float64), np.asarray(areas, np.float64), np.asarray(classes, np.int64)
    per_class = OrderedDict()
    core = conf[:-1, :-1].astype(np.float64)
    tp, gt_pixels, pred_pixels = np.diagonal(core), core.sum(0), core.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        class_iou = np.where(gt_pixels > 0, tp / (gt_pixels + pred_pixels - tp), np.nan)
    for c in range(num_classes):
        keep = classes == c
        per_class[names[cat_ids[c]]] = {
            "category_id": cat_ids[c],
            **summarize_instance_ious(ious[keep], areas[keep]),
            "semantic_IoU": float(class_iou[c + 1]),
        }
    return {
        "gt": str(gt_path),
        "pred": str(pred_path),
        "instance": summarize_instance_ious(ious, areas),
        "instance_painted": summarize_instance_ious(painted_ious, areas),
        "not_scored": not_scored,
        "per_class": per_class,
        "semantic_mIoU": fixed_miou(conf) if conf.sum() else float("nan"),
        "semantic_background_IoU": float(class_iou[0]),
    }


def _required_mask(ann, height, width, path):
    mask = _decode(ann, height, width, path)
    if mask is None:
        raise ScoreError(f"{path}: annotation id {ann['id']!r} (image {ann['image_id']!r}) has no segmentation; "
                         "every non-crowd predicted annotation needs a mask")
    return mask


def score_files(gt_path, pred_path):
    return score_coco(_load(gt_path, "GT"), _load(pred_path, "prediction"), str(gt_path), str(pred_path))


# ----------------------------------------------------------------------------------------------------------


def _pct(value):
    return "    -" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:5.1f}"


def format_table(results):
    """A plain-text table: instance mIoU overall / by size / per class (each box's own mask), then semantic
    IoU; the painted protocol's instance mIoU beside the overall and size rows."""
    inst, painted = results["instance"], results["instance_painted"]
    width = max([len("instances (all)")] + [len(name) for name in results["per_class"]]) + 2
    lines = [f"box2seg score: {results['pred']} vs {results['gt']}",
             f"{'':{width}}{'inst mIoU':>10}{'count':>8}{'sem IoU':>9}{'painted':>9}",
             f"{'instances (all)':{width}}{_pct(inst['mIoU']):>10}{inst['count']:>8}{'':>9}"
             f"{_pct(painted['mIoU']):>9}"]
    for name, _, _ in SIZE_BUCKETS:
        lines.append(f"{'  ' + name:{width}}{_pct(inst[f'mIoU-{name}']):>10}{inst[f'count-{name}']:>8}{'':>9}"
                     f"{_pct(painted[f'mIoU-{name}']):>9}")
    lines.append(f"{'background':{width}}{'':>10}{'':>8}{_pct(results['semantic_background_IoU']):>9}")
    for name, row in results["per_class"].items():
        lines.append(f"{name:{width}}{_pct(row['mIoU']):>10}{row['count']:>8}{_pct(row['semantic_IoU']):>9}")
    lines.append(f"semantic mIoU (classes with GT pixels): {_pct(results['semantic_mIoU']).strip()}")
    ns = results["not_scored"]
    if any(ns.values()):
        lines.append(f"not scored: {ns['crowd']} crowd GT annotations, {ns['gt_without_mask']} GT annotations "
                     f"without a mask, {ns['invalid_box']} GT annotations with an invalid box")
    return "\n".join(lines)


def json_ready(obj):
    """NaN -> null (strict JSON)."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj
