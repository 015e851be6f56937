"""The one way a Box2Seg config is built (``setup_cfg``) and the one dataset-registration helper
(``register_datasets``), as detectron2's ``engine/defaults.py`` is the one place its scripts set up from.
Every entry point (train_net, the demo, export, predict, visualize, prepare-grabcut, the benchmarks)
calls ``setup_cfg``; launch workers re-run ``register_datasets`` on the config they receive."""
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_setup as d2_default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import add_box2seg_config
from ..data.datasets import UnknownDatasetError, unknown_dataset_message
from ..data.datasets.coco import register_coco_spec
from ..data.datasets.openimages import register_openimages_spec

__all__ = ["check_num_classes", "default_setup", "num_classes_from_metadata", "register_datasets", "setup_cfg"]


def setup_cfg(config_file=None, opts=(), coco_datasets=(), openimages_datasets=(), freeze=True):
    """detectron2's defaults plus every Box2Seg key, then ``config_file``, then ``opts`` (KEY VALUE ...),
    then ``coco_datasets`` ("NAME=JSON:IMAGE_ROOT", e.g. from ``--coco-dataset``) appended to
    DATASETS.COCO_FORMAT and ``openimages_datasets`` ("NAME=BOXES.csv:IMAGE_ROOT", from
    ``--openimages-dataset``) appended to DATASETS.OPENIMAGES_FORMAT; the config's datasets are registered
    in this process (:func:`register_datasets`), and, being in the config, in every launched worker.

    ``freeze=False`` for callers that set more keys (seed, output folder) before freezing it themselves.
    MODEL.SEM_SEG_HEAD.NUM_CLASSES left 0 (unset) is taken from DATASETS.TRAIN's metadata
    (:func:`num_classes_from_metadata`).
    """
    cfg = get_cfg()
    add_box2seg_config(cfg)
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if coco_datasets:
        cfg.DATASETS.COCO_FORMAT = list(cfg.DATASETS.COCO_FORMAT) + list(coco_datasets)
    if openimages_datasets:
        cfg.DATASETS.OPENIMAGES_FORMAT = list(cfg.DATASETS.OPENIMAGES_FORMAT) + list(openimages_datasets)
    register_datasets(cfg)
    if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 0:
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes_from_metadata(cfg)
    if freeze:
        cfg.freeze()
    return cfg


def default_setup(cfg, args):
    """detectron2's ``default_setup`` (its logger, environment, config backup) plus the ``box2seg`` logger
    set up the same way: box2seg's own INFO lines (dataset load reports, GrabCut counts) and warnings
    (skipped boxes) reach the console and OUTPUT_DIR/log.txt, not only stderr through logging's last resort."""
    d2_default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="box2seg", abbrev_name="b2s")


def register_datasets(cfg):
    """Register DATASETS.COCO_FORMAT (NAME=JSON:IMAGE_ROOT) and DATASETS.OPENIMAGES_FORMAT
    (NAME=BOXES.csv:IMAGE_ROOT) in this process; the same spec twice is a no-op, so launch workers and
    spawned training processes simply call it again. A config saved before OPENIMAGES_FORMAT existed has
    no such key."""
    for spec in cfg.DATASETS.COCO_FORMAT:
        register_coco_spec(spec)
    for spec in cfg.DATASETS.get("OPENIMAGES_FORMAT", ()):
        register_openimages_spec(spec)


def num_classes_from_metadata(cfg):
    """Background plus the foreground classes of the first registered DATASETS.TRAIN dataset; 0 when there is
    none (the model build then asks for the key). Training datasets must agree: check_num_classes."""
    for name in cfg.DATASETS.TRAIN:
        if name in DatasetCatalog.list():
            classes = MetadataCatalog.get(name).get("thing_classes", None)
            if classes is not None:
                return len(classes) + 1
    return 0


def check_num_classes(cfg, dataset_names):
    """MODEL.SEM_SEG_HEAD.NUM_CLASSES counts the y-branch's outputs as detectron2 does: background plus
    the L foreground classes, i.e. len(stuff_classes). Say which dataset disagrees and what to set."""
    expected = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    for name in dataset_names:
        if name not in DatasetCatalog.list():
            raise UnknownDatasetError(unknown_dataset_message(name))
        meta = MetadataCatalog.get(name)
        if not hasattr(meta, "thing_classes"):
            raise KeyError(f"dataset {name!r} has no thing_classes in its metadata")
        if len(meta.thing_classes) + 1 != expected:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={expected} but dataset {name!r} has {len(meta.thing_classes)} "
                f"foreground classes plus background; set MODEL.SEM_SEG_HEAD.NUM_CLASSES "
                f"{len(meta.thing_classes) + 1}"
            )
