"""Box-only baselines and Box2Seg scored side by side on one dataset with true masks (the demo's table
and the real-photo benchmark): filled boxes, filled ellipses, GrabCut, Box2Seg's image-only prediction
and Box2Seg's box-conditioned masks, each as semantic mIoU and per-instance mask IoU under the one scorer's
two protocols (:mod:`box2seg.evaluation.box_scorer`): each box's own mask ("instance", the headline; filled
boxes and ellipses by pixel centres, overlaps allowed, the model's per-box masks as it returns them) and the
painted map ("painted", smaller box wins). GrabCut's per-box masks are its own masks before painting (the
painted instance map plus the pixels smaller boxes took, both in its cache PNG: ``own_grabcut_masks``), so
they too may overlap; its painted column is the cached map as painted."""
import os

import numpy as np
import torch
from detectron2.data import MetadataCatalog

from ..data.grabcut import load_instance_map, own_grabcut_masks, read_png_stats
from ..data.semseg_gt import read_label_map
from ..modeling.box_conditioned import annotation_box_masks
from ..structures import PIXEL_CENTRES, box_pixel_masks, record_boxes
from ..utils.visualizer import write_overlay
from .box_scorer import baseline_masks
from .mask_scoring import MaskScorer, paint_box_masks

BASELINES = ("filled boxes", "filled ellipses", "GrabCut")
MODEL_ROWS = ("Box2Seg image-only", "Box2Seg box-conditioned")
METHODS = BASELINES + MODEL_ROWS


def _scorer(dataset_name):
    meta = MetadataCatalog.get(dataset_name)
    return MaskScorer(len(meta.thing_classes), meta.ignore_label)


def _true_labels(record):
    return read_label_map(record["sem_seg_file_name"]) if "sem_seg_file_name" in record else None


def score_baselines(dataset_name, records):
    """Scores of the three box-only baselines; ``records`` need ``grabcut_file_name`` attached."""
    scorers = {m: _scorer(dataset_name) for m in BASELINES}
    for record in records:
        h, w = record["height"], record["width"]
        boxes, _, _ = record_boxes(record)
        gt = _true_labels(record)
        scorers["filled boxes"].add(record, baseline_masks("box", boxes, h, w), gt)
        scorers["filled ellipses"].add(record, baseline_masks("ellipse", boxes, h, w), gt)
        instance_map = load_instance_map(record)
        own = own_grabcut_masks(instance_map, read_png_stats(record["grabcut_file_name"]), len(boxes))
        scorers["GrabCut"].add(record, own, gt)
    return {m: s.summary() for m, s in scorers.items()}


@torch.no_grad()
def score_model(model, data_loader, dataset_name, records, overlay_dir=None, num_overlays=8, extra_box_rules=()):
    """Scores of a Box2Seg model's image-only prediction (argmax; per box, the pixels of its class inside
    it) and box-conditioned masks (the model's own rule); optionally writes the first overlays.
    ``extra_box_rules`` (e.g. ("foreground",)) also scores those rules on the same forward passes, as
    "Box2Seg box-conditioned (RULE rule)"; the model's own rule is already the box-conditioned row."""
    meta = MetadataCatalog.get(dataset_name)
    by_file = {r["file_name"]: r for r in records}
    image_only, conditioned = _scorer(dataset_name), _scorer(dataset_name)
    extra = {rule: _scorer(dataset_name) for rule in extra_box_rules if rule != getattr(model, "box_rule", None)}
    written = 0
    model.eval()
    for inputs in data_loader:
        for inp, out in zip(inputs, model(inputs)):
            record = by_file[inp["file_name"]]
            gt = _true_labels(record)
            labels = out["sem_seg"].argmax(0).cpu()
            anns = record["annotations"]
            boxes, classes, _ = record_boxes(record)
            # float32 boxes, as the model's box masks see them: the same pixel-centre edges as before.
            inside = box_pixel_masks(torch.as_tensor(boxes, dtype=torch.float32), *labels.shape, PIXEL_CENTRES)
            plain = inside & (labels[None] == torch.as_tensor(classes)[:, None, None] + 1)
            image_only.add(record, plain.numpy(), gt, semantic_labels=labels.numpy())
            box_masks = out["box_masks"].cpu().numpy()
            conditioned.add(record, box_masks, gt)
            for rule, scorer in extra.items():
                scorer.add(record, annotation_box_masks(out["sem_seg"].cpu(), anns, rule).numpy(), gt)
            if overlay_dir and written < num_overlays:
                box_labels = paint_box_masks(box_masks, classes, boxes, *labels.shape)
                write_overlay(os.path.join(overlay_dir, f"{written:02d}.png"), record, labels.numpy(), box_labels, meta)
                written += 1
    scores = {"Box2Seg image-only": image_only.summary(), "Box2Seg box-conditioned": conditioned.summary()}
    scores.update({f"Box2Seg box-conditioned ({rule} rule)": scorer.summary() for rule, scorer in extra.items()})
    return scores


def format_table(results, columns=("semantic_mIoU", "instance_mIoU", "painted_mIoU")):
    """Markdown table: one row per method, one column per (run, measure); ``results[run][method]``."""
    runs = list(results)
    header = ["method"] + [f"{c.replace('_', ' ')} ({r})" for r in runs for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    extra = [m for m in (results[runs[0]] if runs else {}) if m not in METHODS]
    for method in list(METHODS) + extra:
        if not all(method in results[r] for r in runs):
            continue
        cells = [f"{100 * results[r][method][c]:.1f}" for r in runs for c in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
