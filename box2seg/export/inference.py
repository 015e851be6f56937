"""The model's part of an export: one image's label PNG, box masks and mask scores, by the local loader or
by an engine's workers (:class:`box2seg.distributed.ray_engine.RayExportEngine`), so both give the same bytes.

An engine's ``outputs(cfg, dicts, pending, label_dtype)`` yields ``(position, label PNG bytes, box masks,
scores)`` per pending record, in any order; the job turns them into parts (fallbacks, source lookups) and
writes the files itself, so engines never touch the export folder.
"""
import cv2
import torch
from detectron2.data import build_detection_test_loader
from detectron2.modeling import build_model

from ..data.mapper import Box2SegDatasetMapper
from ..engine import load_weights
from .masks import record_masks, record_scores

__all__ = ["build_export_model", "image_outputs", "LocalExportEngine"]


def build_export_model(cfg, allow_partial_weights=False):
    """The model of ``cfg`` with MODEL.WEIGHTS loaded (partial weights refused unless allowed), in eval mode."""
    model = build_model(cfg)
    load_weights(model, cfg.MODEL.WEIGHTS, allow_partial=allow_partial_weights)
    model.eval()
    return model


def image_outputs(record, inp, out, rule, label_dtype):
    """``(label PNG bytes, (N, H, W) bool box masks, (N,) scores or None)`` of one image's model output."""
    labels = out["sem_seg"].argmax(0).to("cpu").numpy().astype(label_dtype)
    ok, png = cv2.imencode(".png", labels)
    if not ok:
        raise RuntimeError(f"cannot encode the label PNG of image {record['file_name']}")
    return png.tobytes(), record_masks(record, inp, out, rule), record_scores(record, inp, out)


class LocalExportEngine:
    """The model in this process, images through detectron2's test loader (DATALOADER.NUM_WORKERS)."""

    name = "local"

    def __init__(self, model=None, allow_partial_weights=False):
        self.model = model
        self.allow_partial_weights = allow_partial_weights

    def outputs(self, cfg, dicts, pending, label_dtype):
        model = self.model if self.model is not None else build_export_model(cfg, self.allow_partial_weights)
        mapper = Box2SegDatasetMapper(cfg, is_train=False)
        loader = build_detection_test_loader([dicts[i] for i in pending], mapper=mapper,
                                             num_workers=cfg.DATALOADER.NUM_WORKERS)
        with torch.no_grad():
            for i, inputs in zip(pending, loader):
                record = dicts[i]
                (inp,) = inputs
                if inp["image_id"] != record["image_id"]:
                    raise RuntimeError(f"loader order broke: expected image {record['image_id']!r}, got "
                                       f"{inp['image_id']!r}")
                (out,) = model(inputs)
                yield (i, *image_outputs(record, inp, out, cfg.MODEL.BOX2SEG.TEST.BOX_RULE, label_dtype))
