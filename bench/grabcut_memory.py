"""Peak memory of one GrabCut worker on a generated 8000 x 6000 photo (issue 11: at most 2 GB with the defaults).

One child process does what a ``prepare-grabcut`` worker does for one image (read through the one reader,
GrabCut every box, paint, encode the PNG) and reports its peak RSS (``ru_maxrss``); the parent only writes
the image. Boxes: the whole image, a large, a medium and a small one, and a long thin one (upscaled).

    .venv/bin/python bench/grabcut_memory.py [--width 8000 --height 6000] [--max-side 1024]
"""
import argparse
import multiprocessing
import os
import resource
import tempfile
import time

import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import cv2
import numpy as np
from detectron2.structures import BoxMode

from box2seg.data.grabcut import GrabCutSettings, compute_instance_map, encode_instance_map
from box2seg.data.images import read_image


def _write_photo(path, width, height):
    """A smooth gradient with a few large discs and rectangles and mild noise, as a JPEG (quality 90)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height:8, 0:width:8]
    small = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx + yy) * 127 // (width + height))], -1)
    image = cv2.resize(small.astype(np.uint8), (width, height), interpolation=cv2.INTER_LINEAR)
    for _ in range(12):
        cx, cy, r = int(rng.integers(0, width)), int(rng.integers(0, height)), int(rng.integers(100, 1500))
        cv2.circle(image, (cx, cy), r, tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
    image = cv2.add(image, rng.integers(0, 24, image.shape, dtype=np.uint8))
    cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, 90])


def _boxes(width, height):
    return [
        [0, 0, width, height],  # the whole image
        [width * 0.1, height * 0.15, width * 0.7, height * 0.8],  # large
        [1000.5, 1200.2, 1600.7, 1900.3],  # medium
        [3000.2, 3000.6, 3030.1, 3024.9],  # small: upscaled to 64 px
        [200.3, 100.4, 212.8, height - 100.2],  # long and thin: upscaled and capped
    ]


def _worker(path, width, height, settings, queue):
    cv2.setNumThreads(1)
    start = time.perf_counter()
    image = read_image(path, format="BGR")
    record = {"file_name": path, "image_id": 1, "height": height, "width": width,
              "annotations": [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 0}
                              for b in _boxes(width, height)]}
    instance_map, stats = compute_instance_map(image, record, settings)
    png = encode_instance_map(instance_map, stats)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    queue.put((peak_kib, time.perf_counter() - start, len(png), [b[1] for b in stats["boxes"]]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=8000)
    parser.add_argument("--height", type=int, default=6000)
    parser.add_argument("--max-side", type=int, default=None, help="override GRABCUT.MAX_SIDE (default: 1024)")
    args = parser.parse_args(argv)
    settings = GrabCutSettings() if args.max_side is None else GrabCutSettings(max_side=args.max_side)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "big.jpg")
        _write_photo(path, args.width, args.height)
        ctx = multiprocessing.get_context("forkserver")
        queue = ctx.Queue()
        child = ctx.Process(target=_worker, args=(path, args.width, args.height, settings, queue))
        child.start()
        peak_kib, seconds, png_bytes, kinds = queue.get()
        child.join()
    print(f"GrabCut worker on a {args.width} x {args.height} JPEG, {len(kinds)} boxes (kinds {kinds}; 0 GrabCut, "
          f"1 fallback), settings {settings}: peak RSS {peak_kib / 1024 ** 2:.2f} GiB, {seconds:.1f} s, "
          f"PNG {png_bytes / 1e6:.1f} MB", flush=True)


if __name__ == "__main__":
    main()
