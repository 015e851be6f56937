"""Config values checked when the model is built, each error naming the key and the allowed values: a value
that only some later stage reads (the test-time BOX_RULE, the solver) would otherwise fail after a whole
training run, and empty lists (TEST.SCALES, LOSS.TERMS) failed with ZeroDivisionError or
"'int' object has no attribute 'backward'"."""
from .box_conditioned import BOX_RULES
from .decoders.upernet import DECODER_MODES
from .losses import AFFINITY_DETACH, LOSS_TERMS

__all__ = ["ConfigValueError", "OPTIMIZERS", "NORMS", "check_box2seg_config"]

OPTIMIZERS = ("SGD", "AdamW")  # engine.solver.build_optimizer
NORMS = ("", "BN", "SyncBN", "FrozenBN", "GN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N")  # detectron2's get_norm


class ConfigValueError(ValueError):
    """A config value outside what its key allows."""


def _one_of(key, value, allowed):
    if value not in allowed:
        raise ConfigValueError(f"{key}={value!r}: must be one of {', '.join(repr(a) for a in allowed)}")


def check_box2seg_config(cfg):
    """Raise :class:`ConfigValueError` for the first value of ``cfg`` that its key does not allow."""
    b = cfg.MODEL.BOX2SEG
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    if num_classes == 0:
        raise ConfigValueError(
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES is unset (0) and DATASETS.TRAIN names no registered dataset to take it "
            "from: set it to the number of foreground classes plus one (background)")
    if num_classes < 2:
        raise ConfigValueError(
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={num_classes}: counts background plus the foreground classes, so at "
            "least 2 (leave it 0 in the config to take it from DATASETS.TRAIN's metadata)")
    _one_of("MODEL.BOX2SEG.TEST.BOX_RULE", b.TEST.BOX_RULE, BOX_RULES)
    _one_of("MODEL.BOX2SEG.DECODER_MODE", b.DECODER_MODE, DECODER_MODES)
    _one_of("MODEL.BOX2SEG.AFFINITY.DETACH", b.AFFINITY.DETACH, AFFINITY_DETACH)
    _one_of("SOLVER.OPTIMIZER", cfg.SOLVER.OPTIMIZER, OPTIMIZERS)
    _one_of("MODEL.UPERNET.NORM", cfg.MODEL.UPERNET.NORM, NORMS)
    terms = list(b.LOSS.TERMS)
    unknown = [t for t in terms if t not in LOSS_TERMS]
    if not terms or unknown:
        what = f"unknown {unknown}" if unknown else "empty (nothing to train)"
        raise ConfigValueError(f"MODEL.BOX2SEG.LOSS.TERMS={terms}: {what}; a non-empty subset of "
                               f"{', '.join(repr(t) for t in LOSS_TERMS)}")
    scales = list(b.TEST.SCALES)
    if not scales or any(not s > 0 for s in scales):
        raise ConfigValueError(f"MODEL.BOX2SEG.TEST.SCALES={scales}: a non-empty list of positive factors of the "
                               "test size, e.g. [1.0] or [0.75, 1.0, 1.25]")
    for key, value in (("GRABCUT_WEIGHT", b.CHIPS.GRABCUT_WEIGHT), ("COLOR_JITTER", b.CHIPS.COLOR_JITTER)):
        if not 0.0 <= value < 1.0:
            raise ConfigValueError(f"MODEL.BOX2SEG.CHIPS.{key}={value}: between 0 (off) and 1 (1 excluded)")
    crf = b.CHIPS.CRF
    if crf.ENABLED:
        if crf.WEIGHT < 0 or crf.THETA_COLOUR <= 0 or crf.THETA_SPACE <= 0 or crf.STEPS < 0:
            raise ConfigValueError(f"MODEL.BOX2SEG.CHIPS.CRF: WEIGHT={crf.WEIGHT} and STEPS={crf.STEPS} must be >= 0, "
                                   f"THETA_COLOUR={crf.THETA_COLOUR} and THETA_SPACE={crf.THETA_SPACE} > 0")
        if crf.WINDOW < 1 or crf.WINDOW % 2 == 0:
            raise ConfigValueError(f"MODEL.BOX2SEG.CHIPS.CRF.WINDOW={crf.WINDOW}: an odd window side, e.g. 7")
    if not 0.0 <= b.AFFINITY.BOUNDARY_FRACTION <= 1.0:
        raise ConfigValueError(f"MODEL.BOX2SEG.AFFINITY.BOUNDARY_FRACTION={b.AFFINITY.BOUNDARY_FRACTION}: a share "
                               "of the samples, between 0 and 1")
