"""Loading a trained model's weights for inference (export, predict, visualize, ``--eval-only``): weights
whose heads do not fit the config (another class count, a Mask R-CNN checkpoint) are refused by name
instead of running with randomly initialised heads, as detectron2's checkpointer would after a warning.
Training from ImageNet weights does not come through here."""
from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["PartialWeightsError", "load_weights"]

_SHOWN = 8  # keys named per kind; the rest are counted


class PartialWeightsError(ValueError):
    """The weights leave parameters of the model unloaded (missing or of another shape)."""


class _RecordingCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that keeps what it could not load (fvcore only logs it)."""

    incompatible = None

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def _names(keys):
    keys = list(keys)
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def load_weights(model, path, allow_partial=False):
    """Load ``path`` (a file, a URL or a detectron2:// name) into ``model``; returns the checkpoint's
    other contents (``iteration`` ...).

    Raises :class:`PartialWeightsError` naming the missing keys and those of another shape (the
    checkpoint's and the model's shapes) unless ``allow_partial``, which leaves them as initialised, as
    detectron2 does. Keys of the checkpoint the model lacks are named in the message but alone are no error.
    """
    if not path:
        raise PartialWeightsError("no model weights: set MODEL.WEIGHTS path/to/model_final.pth")
    checkpointer = _RecordingCheckpointer(model)
    extra = checkpointer.load(path)
    incompatible = checkpointer.incompatible
    if incompatible is None or allow_partial:
        return extra
    shapes = {key: (ckpt, mine) for key, ckpt, mine in incompatible.incorrect_shapes}
    missing = [k for k in incompatible.missing_keys if k not in shapes]
    if not missing and not shapes:
        return extra
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} of another shape (" + _names(
            f"{k}: {tuple(a)} in the weights, {tuple(b)} in the model" for k, (a, b) in shapes.items()) + ")")
    if missing:
        parts.append(f"{len(missing)} missing ({_names(missing)})")
    if incompatible.unexpected_keys:
        parts.append(f"{len(incompatible.unexpected_keys)} not in the model ({_names(incompatible.unexpected_keys)})")
    raise PartialWeightsError(
        f"weights {path} do not fit the model of this config: {'; '.join(parts)}. Are they Box2Seg weights "
        "trained with this config (MODEL.SEM_SEG_HEAD.NUM_CLASSES, backbone, decoders)? "
        "--allow-partial-weights loads them anyway, leaving those parameters randomly initialised")
