#!/usr/bin/env python
"""Seconds per training iteration of a Box2Seg config on this machine, by MODEL.BACKBONE.FREEZE_AT.

    python bench/train_speed.py --config-file configs/cpu/box2seg_lite0_shapes.yaml --freeze-at 0 3 --iters 6

Uses a synthetic batch of the config's crop size and batch size (forward + backward + SGD step, all loss
terms on, no data loading); the first two iterations are warm-up and not counted. Prints one line per
setting: median and mean s/iter.
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse
import statistics
import time

import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from box2seg.engine import get_box2seg_cfg


def synthetic_batch(cfg, generator):
    height, width = cfg.INPUT.CROP.SIZE
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1
    batch = []
    for _ in range(cfg.SOLVER.IMS_PER_BATCH):
        xy = torch.rand((4, 2), generator=generator) * torch.tensor([width * 0.6, height * 0.6])
        wh = torch.rand((4, 2), generator=generator) * torch.tensor([width * 0.4, height * 0.4]) + 8
        boxes = torch.cat([xy, xy + wh], 1)
        classes = torch.randint(0, num_classes, (4,), generator=generator)
        labels = torch.zeros((height, width), dtype=torch.long)
        for (x0, y0, x1, y1), c in zip(boxes.long().tolist(), classes.tolist()):
            labels[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2] = c + 1
        inst = Instances((height, width), gt_boxes=Boxes(boxes), gt_classes=classes,
                         gt_is_crowd=torch.zeros(4, dtype=torch.bool))
        image = torch.randint(0, 255, (3, height, width), generator=generator, dtype=torch.uint8)
        batch.append({"image": image, "instances": inst, "grabcut_labels": labels})
    return batch


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="configs/cpu/box2seg_lite0_shapes.yaml")
    parser.add_argument("--freeze-at", type=int, nargs="+", default=[0, 3])
    parser.add_argument("--iters", type=int, default=6)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for freeze_at in args.freeze_at:
        cfg = get_box2seg_cfg()
        cfg.merge_from_file(args.config_file)
        cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
        cfg.MODEL.BOX2SEG.PRETRAIN_ITERS = 0
        torch.manual_seed(0)
        model = build_model(cfg).train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
        batch = synthetic_batch(cfg, torch.Generator().manual_seed(0))
        times = []
        for _ in range(args.iters + 2):
            start = time.perf_counter()
            loss = sum(model(batch).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
        times = times[2:]
        print(f"{args.config_file} FREEZE_AT={freeze_at} batch {cfg.SOLVER.IMS_PER_BATCH} x "
              f"{tuple(cfg.INPUT.CROP.SIZE)}: median {statistics.median(times):.2f} s/iter, "
              f"mean {statistics.mean(times):.2f} s/iter over {len(times)} iterations")


if __name__ == "__main__":
    main()
