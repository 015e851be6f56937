#!/usr/bin/env python
"""Seconds per training iteration of a Box2Seg config on this machine, by MODEL.BACKBONE.FREEZE_AT.

    python bench/train_speed.py --config-file configs/cpu/box2seg_lite0_shapes.yaml --freeze-at 0 3 --iters 6
    python bench/train_speed.py --freeze-at 3 --processes 2 --opts MODEL.UPERNET.CHANNELS 64

Uses a synthetic batch of the config's crop size and batch size (forward + backward + SGD step, all loss
terms on, no data loading); the first two iterations are warm-up and not counted. Prints one line per
setting: median and mean s/iter. ``--processes N`` runs N identical trainings side by side, each with
1/N of torch's threads (how `make demo` trains its seeds), and also prints their combined iterations/s.
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse
import multiprocessing
import statistics
import time

import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from box2seg.engine import setup_cfg


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


def measure(config_file, freeze_at, opts, iters, threads):
    """s/iteration of ``iters`` timed iterations (after two warm-up ones) with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    cfg = setup_cfg(config_file, opts, freeze=False)
    cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
    cfg.MODEL.BOX2SEG.PRETRAIN_ITERS = 0
    cfg.MODEL.BOX2SEG.LOSS.ATTENTION_START_ITER = 0
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    batch = synthetic_batch(cfg, torch.Generator().manual_seed(0))
    times = []
    for _ in range(iters + 2):
        start = time.perf_counter()
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return cfg.SOLVER.IMS_PER_BATCH, tuple(cfg.INPUT.CROP.SIZE), times[2:]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="configs/cpu/box2seg_lite0_shapes.yaml")
    parser.add_argument("--freeze-at", type=int, nargs="+", default=[0, 3])
    parser.add_argument("--iters", type=int, default=6)
    parser.add_argument("--processes", type=int, default=1, help="identical trainings side by side")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ... (last)")
    args = parser.parse_args()
    total_threads = torch.get_num_threads()
    threads = max(1, total_threads // args.processes)
    print(f"torch {torch.__version__}, {total_threads} threads; {args.processes} process(es) x {threads} thread(s); "
          f"overrides: {' '.join(args.opts) or 'none'}")
    for freeze_at in args.freeze_at:
        job = (args.config_file, freeze_at, tuple(args.opts), args.iters, threads)
        if args.processes == 1:
            results = [measure(*job)]
        else:
            with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
                results = pool.starmap(measure, [job] * args.processes)
        for batch, crop, times in results:
            print(f"{args.config_file} FREEZE_AT={freeze_at} batch {batch} x {crop}: median "
                  f"{statistics.median(times):.2f} s/iter, mean {statistics.mean(times):.2f} s/iter over "
                  f"{len(times)} iterations")
        rate = sum(1 / statistics.median(times) for _, _, times in results)
        print(f"  combined: {rate:.2f} iterations/s over {len(results)} process(es)")


if __name__ == "__main__":
    main()
