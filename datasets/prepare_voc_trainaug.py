#!/usr/bin/env python
"""Write VOC2012/ImageSets/Segmentation/trainaug.txt, the standard 10,582-image Box2Seg training set.

Recipe (the usual "train_aug" of the weakly / fully supervised VOC literature):
    trainaug = (SBD train.txt ∪ SBD val.txt ∪ VOC2012 Segmentation/train.txt) − VOC2012 Segmentation/val.txt
SBD train (8,498) ∪ SBD val (2,857) = 11,355 ids; adding VOC seg train (1,464) and removing VOC seg val
(1,449) leaves 10,582 ids, written sorted, one per line.

Box2Seg trains from the boxes in VOC2012/Annotations/*.xml, so only the SBD *lists* are needed. With
``--write-labels`` it also builds VOC2012/SegmentationClassAug/ (single-channel label PNGs, for evaluating
pseudo-labels against ground truth or pixel-label fine-tuning): VOC's own SegmentationClass palette PNGs
(read as palette indices) where they exist, else SBD's cls/<id>.mat (needs scipy). Files are written
atomically; existing ones are kept, so an interrupted run resumes.

    python datasets/prepare_voc_trainaug.py [--voc-root datasets/VOC2012] [--sbd-root SBD/benchmark_RELEASE/dataset]
"""
import argparse
import os
import sys

import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import numpy as np
from PIL import Image

from box2seg.data.cache import atomic_path, atomic_write_bytes
from box2seg.data.datasets.voc import TRAINAUG_SIZE, derive_trainaug_ids, find_sbd_root, read_id_list


def write_labels(voc_root, sbd_root, ids):
    """SegmentationClassAug/<id>.png for ``ids`` plus VOC val (which the trainaug list excludes)."""
    out_dir = os.path.join(voc_root, "SegmentationClassAug")
    os.makedirs(out_dir, exist_ok=True)
    val = read_id_list(os.path.join(voc_root, "ImageSets", "Segmentation", "val.txt"))
    written = 0
    loadmat = None
    for image_id in sorted(set(ids) | set(val)):
        target = os.path.join(out_dir, f"{image_id}.png")
        if os.path.exists(target):
            continue
        voc_png = os.path.join(voc_root, "SegmentationClass", f"{image_id}.png")
        if os.path.exists(voc_png):
            with Image.open(voc_png) as img:
                if img.mode not in ("P", "L"):
                    raise SystemExit(f"{voc_png}: mode {img.mode!r}, expected a palette PNG of class indices")
                labels = np.array(img)  # palette indices, never a colour conversion
        else:
            if loadmat is None:
                try:
                    from scipy.io import loadmat
                except ImportError:
                    raise SystemExit("--write-labels needs scipy to read SBD's cls/*.mat (pip install scipy)")
            mat = os.path.join(sbd_root, "cls", f"{image_id}.mat")
            if not os.path.exists(mat):
                raise SystemExit(f"no label source for {image_id}: neither {voc_png} nor {mat} exists")
            labels = loadmat(mat, squeeze_me=True, struct_as_record=False)["GTcls"].Segmentation
        with atomic_path(target) as tmp:
            Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="L").save(tmp)
        written += 1
    print(f"wrote {written} label PNGs into {out_dir}")


def main(argv=None):
    root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voc-root", default=os.path.join(root, "VOC2012"))
    parser.add_argument("--sbd-root", default=None,
                        help="folder with SBD's train.txt / val.txt (default: searched next to VOC2012)")
    parser.add_argument("--output", default=None, help="default: VOC_ROOT/ImageSets/Segmentation/trainaug.txt")
    parser.add_argument("--write-labels", action="store_true", help="also build SegmentationClassAug/")
    args = parser.parse_args(argv)
    sbd = find_sbd_root(args.voc_root, args.sbd_root)
    if sbd is None:
        where = args.sbd_root or f"next to {args.voc_root}"
        raise SystemExit(f"SBD lists train.txt and val.txt not found ({where}); pass --sbd-root")
    ids = derive_trainaug_ids(args.voc_root, sbd)
    output = args.output or os.path.join(args.voc_root, "ImageSets", "Segmentation", "trainaug.txt")
    atomic_write_bytes(output, "".join(f"{i}\n" for i in ids).encode())
    note = "" if len(ids) == TRAINAUG_SIZE else f" (the standard set has {TRAINAUG_SIZE}: check the lists)"
    print(f"wrote {len(ids)} ids to {output}{note}")
    if args.write_labels:
        write_labels(args.voc_root, sbd, ids)
    return 0


if __name__ == "__main__":
    sys.exit(main())
