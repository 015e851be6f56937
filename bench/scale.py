"""Issue 16's measurements: GrabCut and export throughput per core (local pool against Ray, 1 against 2
workers, one thread per worker, median of repeats), merge time and peak memory at 10k / 100k / 1M
annotations, the lazy training reader's peak memory, the Open Images index build and map for a 1M-row CSV,
and the wall-time projections for COCO and Open Images on 1, 8 and 64 machines of 32 cores.

Every measured operation runs in a fresh child process (``--child KIND``) that prints its wall time and
peak RSS (``ru_maxrss``; pool workers: ``RUSAGE_CHILDREN``), so one measurement's memory never leaks into
the next. All inputs are generated (synthetic scenes, COCO JSONs, shard files, a boxes CSV) in a temporary
folder.

    .venv/bin/python bench/scale.py [--sections grabcut export merge reader openimages openimages_dataset]
        [--repeats 3] [--sizes 10000 100000 1000000] [--oi-sizes 1000000 4000000] [--out bench/results/scale.json]

``openimages_dataset`` (not in the default sections): the peak memory of a process that uses a registered
Open Images dataset (the lazy records) against the eager list of dicts, and its projection to V6 train.
"""
import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "tests" / "box2seg_tiny.yaml"
# Recorded single-thread costs on real photos, for the projections (bench/RESULTS.md):
GRABCUT_S_PER_BOX = 0.348  # "GrabCut on coco_tiny", improved settings, quiet run: 347.9 ms/box
EXPORT_S_PER_BOX = 139.3 / 1503  # "coco_tiny: export -> score -> Mask R-CNN": 160 images, 1503 boxes, CPU
DATASETS = {"COCO train2017": 860_000, "Open Images V6 train": 14_600_000}
MACHINES = (1, 8, 64)
CORES = 32


def _peak():
    """(this process's peak RSS: VmHWM, which starts afresh at exec, unlike ru_maxrss, which Linux carries over
    from the parent; the largest waited-for child's ru_maxrss: the local pool's workers)."""
    own = None
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                own = int(line.split()[1]) * 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return own, children


def _rss_parts():
    """(RssAnon, RssFile) now: private memory, and the mapped file pages (page cache, shared by every process
    mapping the same files and dropped by the kernel under pressure) that VmHWM counts too."""
    parts = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                parts[line.split(":")[0]] = int(line.split()[1]) * 1024
    return parts.get("RssAnon", 0), parts.get("RssFile", 0)


# ------------------------------------------------------------------------------------------------ inputs

def _write_scenes(folder, n, size=(192, 256), seed=0):
    """``n`` JPEG scenes of 3-5 discs / squares on texture, as a COCO JSON of boxes. Returns the spec paths."""
    import cv2

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    h, w = size
    images, anns = [], []
    for i in range(n):
        image = (rng.integers(0, 60, (h, w, 3)) + rng.integers(30, 150, 3)).astype(np.uint8)
        for k in range(int(rng.integers(3, 6))):
            r = int(rng.integers(10, 40))
            cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            if k % 2:
                cv2.circle(image, (cx, cy), r, colour, -1)
            else:
                image[cy - r:cy + r, cx - r:cx + r] = colour
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1 + k % 3, "iscrowd": 0,
                         "bbox": [cx - r - 0.5, cy - r - 0.5, 2 * r + 1.0, 2 * r + 1.0], "area": 4.0 * r * r})
        cv2.imwrite(str(folder / "images" / f"s{i:04d}.jpg"), image)
        images.append({"id": i + 1, "file_name": f"s{i:04d}.jpg", "height": h, "width": w})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]}
    (folder / "instances.json").write_text(json.dumps(coco))
    return f"{folder / 'instances.json'}:{folder / 'images'}", len(anns)


def _write_export_folder(folder, annotations, shards=8, per_image=7):
    """A synthetic export folder (header, header images, ``shards`` shard files) of ``annotations``
    (imports box2seg.export, i.e. torch, into the parent: run after the throughput sections)."""
    from box2seg.export.folder import HEADER_FILE, HEADER_IMAGES_FILE, dumps, shard_name
    from box2seg.export.indexed import write_indexed_coco
    from box2seg.export.merge import SHARD_FORMAT

    images = -(-annotations // per_image)
    folder.mkdir(parents=True)
    fingerprint = {"dataset": "synthetic", "images": images}
    sections = [["info", {"description": "bench/scale.py"}], ["images", None], ["annotations", None],
                ["categories", [{"id": 1, "name": "thing"}]]]
    image_entries = [dumps({"id": k, "file_name": f"{k:07d}.jpg", "height": 480, "width": 640})
                     for k in range(images)]
    (folder / HEADER_IMAGES_FILE).write_bytes(b"".join(e + b"\n" for e in image_entries))
    (folder / HEADER_FILE).write_bytes(dumps({"fingerprint": fingerprint, "sections": sections, "images": images,
                                              "source_annotations": annotations, "loaded_annotations": annotations}))
    rng = np.random.default_rng(0)
    stats = {"boxes": 0, "box2seg": 0, "grabcut": 0, "ellipse": 0, "crowd": 0}
    for s in range(shards):
        mine = list(range(s, images, shards))
        entries = []
        for local, k in enumerate(mine):
            for j in range(per_image):
                order = k * per_image + j
                if order >= annotations:
                    break
                counts = "".join(chr(48 + int(v)) for v in rng.integers(0, 75, 60))  # an RLE-sized string
                ann = {"id": order, "image_id": k, "bbox": [10.0, 20.0, 100.0, 80.0], "category_id": 1,
                       "iscrowd": 0, "segmentation": {"size": [480, 640], "counts": counts}, "area": 5000,
                       "mask_source": "box2seg"}
                entries.append((order, local, False, dumps(ann)))
        shard_stats = dict(stats, boxes=len(entries), box2seg=len(entries))
        write_indexed_coco(folder / "shards" / shard_name(s, shards), sections, ((k, image_entries[k]) for k in mine),
                           entries, {"format": SHARD_FORMAT, "fingerprint": fingerprint, "shard": s,
                                     "num_shards": shards, "images": len(mine), "stats": shard_stats})


def _write_openimages_csv(path, rows, images=None):
    images = images or max(rows // 9, 1)
    rng = np.random.default_rng(0)
    header = ("ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,"
              "IsDepiction,IsInside\n")
    with open(path, "w") as f:
        f.write(header)
        chunk = 100_000
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            image = (np.arange(start, start + n) * images // rows)
            label = rng.integers(0, 600, n)
            x0, y0 = rng.random(n) * 0.5, rng.random(n) * 0.5
            x1, y1 = x0 + rng.random(n) * 0.5, y0 + rng.random(n) * 0.5
            flags = rng.integers(0, 2, (n, 5))
            f.write("".join(
                f"{image[j]:016x},xclick,/m/{label[j]:05d},1,{x0[j]:.6f},{x1[j]:.6f},{y0[j]:.6f},{y1[j]:.6f},"
                f"{flags[j, 0]},{flags[j, 1]},{flags[j, 2]},{flags[j, 3]},{flags[j, 4]}\n" for j in range(n)))


# ------------------------------------------------------------------------------------------------ children

class _TimedGrabCut:
    """An engine wrapper stamping each finished image: the steady rate leaves out the start of the workers
    (pool fork-server or Ray worker start, their imports), which a real job of thousands of images amortises."""

    def __init__(self, inner):
        self.inner, self.name, self.done = inner, inner.name, []

    def run(self, pending, task, workers, collect, *args, **kwargs):
        def stamped(position, stats, error):
            self.done.append((time.perf_counter(), len(stats["boxes"]) if stats else 0))
            collect(position, stats, error)

        self.inner.run(pending, task, workers, stamped, *args, **kwargs)


class _TimedExport:
    def __init__(self, inner):
        self.inner, self.name, self.done = inner, inner.name, []

    def outputs(self, *args):
        for item in self.inner.outputs(*args):
            self.done.append((time.perf_counter(), len(item[2])))
            yield item


def _steady(done):
    """Boxes per second between the first and the last finished image (the first image's boxes excluded, and
    those of the images delivered with it: a Ray task returns a batch of images at once)."""
    first = next((k for k, (t, _) in enumerate(done) if t - done[0][0] > 1e-3), None)
    if first is None:
        return None
    return sum(b for _, b in done[first:]) / (done[-1][0] - done[0][0])


def child(kind, args):
    """Run one measurement in this (fresh) process; print a JSON line. Imports are done here, per kind, so
    each child loads only what it measures (``json_load`` stays a bare interpreter)."""
    result = {}
    if kind in ("grabcut", "export"):
        import box2seg  # noqa: F401  (compat fixes before any detectron2 import)

        engine, workers, spec = args["engine"], args["workers"], args["spec"]
        if engine == "ray":
            from box2seg.distributed import prepare_ray_import

            prepare_ray_import()
            import ray

            t = time.perf_counter()
            ray.init(num_cpus=workers, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
            result["cluster_start_s"] = time.perf_counter() - t
        import cv2
        import torch

        from box2seg.data.datasets.coco import register_coco_spec

        cv2.setNumThreads(1)
        torch.set_num_threads(1)
        register_coco_spec(f"bench={spec}")
        if kind == "grabcut":
            from box2seg.data.grabcut import GrabCutSettings
            from box2seg.data.grabcut_job import LocalEngine, prepare_dataset
            from box2seg.distributed.ray_engine import RayGrabCutEngine

            timed = _TimedGrabCut(RayGrabCutEngine() if engine == "ray" else LocalEngine())
            t = time.perf_counter()
            out = prepare_dataset("bench", settings=GrabCutSettings(), workers=workers, progress=False, engine=timed)
            result.update(seconds=time.perf_counter() - t, boxes=out["boxes"], computed=out["computed"],
                          steady_boxes_per_s=_steady(timed.done))
        else:
            from box2seg.distributed.ray_engine import RayExportEngine
            from box2seg.engine import setup_cfg
            from box2seg.export import export_config, export_dataset

            cfg = setup_cfg(str(CONFIG), ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", args["weights"]],
                            coco_datasets=[f"bench={spec}"])
            cfg = export_config(cfg, "bench")
            from box2seg.export.inference import LocalExportEngine

            # batch 1: each image's outputs arrive on their own, so the stamps time images, not batches
            timed = _TimedExport(RayExportEngine(actors=workers, batch=1) if engine == "ray" else LocalExportEngine())
            t = time.perf_counter()
            out = export_dataset(cfg, "bench", args["output"], progress=False, engine=timed)
            result.update(seconds=time.perf_counter() - t, boxes=out["boxes"], computed=out["computed"],
                          steady_boxes_per_s=_steady(timed.done))
        if engine == "ray":
            ray.shutdown()
    elif kind == "weights":  # random tiny model weights (the parent stays small: no torch there)
        import box2seg  # noqa: F401
        import torch
        from detectron2.modeling import build_model

        from box2seg.engine import setup_cfg

        torch.manual_seed(0)
        torch.save({"model": build_model(setup_cfg(str(CONFIG), ["MODEL.DEVICE", "cpu"])).state_dict()}, args["path"])
    elif kind == "merge":
        import box2seg  # noqa: F401
        from box2seg.export import merge_shards

        t = time.perf_counter()
        out = merge_shards(args["folder"])
        result.update(seconds=time.perf_counter() - t, annotations=out["annotations"])
    elif kind == "json_load":
        t = time.perf_counter()
        with open(args["file"]) as f:
            data = json.load(f)
        result.update(seconds=time.perf_counter() - t, annotations=len(data["annotations"]))
    elif kind == "reader":
        import box2seg  # noqa: F401
        from box2seg.export.shards import IndexedCocoDataset, resolve_pseudo_mask_files

        t = time.perf_counter()
        dataset = IndexedCocoDataset(resolve_pseudo_mask_files(args["folder"] + "/shards"), "/images")
        result["open_s"] = time.perf_counter() - t
        t = time.perf_counter()
        seen = sum(len(dataset[k]["annotations"]) for k in range(len(dataset)))
        result.update(seconds=time.perf_counter() - t, annotations=seen, images=len(dataset))
    elif kind == "oi_index":
        import box2seg  # noqa: F401
        from box2seg.data.datasets.openimages_index import openimages_index

        t = time.perf_counter()
        index = openimages_index(args["csv"])
        result.update(seconds=time.perf_counter() - t, rows=len(index))
        t = time.perf_counter()
        touched = float(np.asarray(index.coords).sum() + np.asarray(index.image).sum() + np.asarray(index.line).sum())
        result["touch_s"] = time.perf_counter() - t
        result["checksum"] = touched
    elif kind in ("oi_dataset", "oi_eager"):  # DatasetCatalog.get and the training loader's dataset
        import box2seg  # noqa: F401
        from detectron2.data import DatasetCatalog, DatasetFromList

        from box2seg.data.cache import annotations_hash
        from box2seg.data.datasets.lazy import PairSequence
        from box2seg.data.datasets.openimages import load_openimages_boxes, register_openimages_boxes

        result["import_peak_rss"] = _peak()[0]
        result["import_anon"], result["import_file"] = _rss_parts()
        register_openimages_boxes("bench_oi", args["csv"], None, args["image_root"])
        t = time.perf_counter()
        if kind == "oi_dataset":
            records = DatasetCatalog.get("bench_oi")
        else:  # the old path: the eager list of dicts
            records = load_openimages_boxes(args["csv"], None, args["image_root"], dataset_name="bench_oi")
        result.update(get_s=time.perf_counter() - t, images=len(records), get_peak_rss=_peak()[0], get_anon=_rss_parts()[0], get_file=_rss_parts()[1])
        t = time.perf_counter()
        boxes = sum(len(r["annotations"]) for r in records)
        result.update(iterate_s=time.perf_counter() - t, boxes=boxes, iterate_peak_rss=_peak()[0], iterate_anon=_rss_parts()[0], iterate_file=_rss_parts()[1])
        t = time.perf_counter()
        result["annotations_hash"] = annotations_hash(records)
        result.update(hash_s=time.perf_counter() - t, hash_peak_rss=_peak()[0], hash_anon=_rss_parts()[0], hash_file=_rss_parts()[1])
        t = time.perf_counter()
        if kind == "oi_dataset":  # as engine.data.build_train_loader: wrapped, chip items as int arrays
            dataset = DatasetFromList(records, copy=False, serialize=False)
            chips = PairSequence(*records.box_items())
        else:  # detectron2 serialises a list (DatasetFromList's default); chip_items' tuples
            from box2seg.data.chip_mapper import chip_items

            dataset = DatasetFromList(records, copy=False)
            chips = chip_items(records)
        result.update(loader_dataset_s=time.perf_counter() - t, chip_items=len(chips),
                      loader_peak_rss=_peak()[0], loader_anon=_rss_parts()[0], loader_file=_rss_parts()[1])
        rng = np.random.default_rng(0)
        t = time.perf_counter()
        picked = sum(len(dataset[int(k)]["annotations"]) for k in rng.integers(0, len(dataset), 1000))
        result.update(random_1000_s=time.perf_counter() - t, random_boxes=picked, random_anon=_rss_parts()[0],
                      random_file=_rss_parts()[1])
    elif kind == "oi_csv_parse":  # the old path's cost: the Python csv pass over the file
        import box2seg  # noqa: F401
        from box2seg.data.datasets.openimages_index import _parse

        t = time.perf_counter()
        arrays, _, _ = _parse(args["csv"])
        result.update(seconds=time.perf_counter() - t, rows=len(arrays["line"]))
    own, children = _peak()
    result.update(peak_rss=own, children_peak_rss=children)
    print("RESULT " + json.dumps(result), flush=True)


def run_child(kind, env=None, **args):
    cmd = [sys.executable, __file__, "--child", kind, json.dumps(args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {kind} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# ------------------------------------------------------------------------------------------------ sections

def _median(runs, key="seconds"):
    return statistics.median(r[key] for r in runs)


def bench_throughput(kind, tmp, repeats, images):
    spec, boxes = _write_scenes(tmp / f"{kind}_data", images)
    extra = {}
    env_cache = tmp / f"{kind}_grabcut_cache"
    if kind == "export":
        weights = tmp / "weights.pth"
        run_child("weights", path=str(weights))
        extra["weights"] = str(weights)
        # GrabCut fallbacks prepared once, untimed: the export's timing is the model's and the writing
        run_child("grabcut", env={"BOX2SEG_CACHE": str(env_cache)}, engine="local", workers=2, spec=spec)
    configs = [("local", 1), ("local", 2), ("ray", 2)] if kind == "grabcut" else [("local", 1), ("ray", 1),
                                                                                   ("ray", 2)]
    rows = []
    for engine, workers in configs:
        runs = []
        for r in range(repeats):
            cache = env_cache if kind == "export" else tmp / f"cache_{engine}{workers}_{r}"
            args = dict(engine=engine, workers=workers, spec=spec, **extra)
            if kind == "export":
                args["output"] = str(tmp / f"export_{engine}{workers}_{r}")
            runs.append(run_child(kind, env={"BOX2SEG_CACHE": str(cache)}, **args))
        seconds = _median(runs)
        steady = statistics.median(x["steady_boxes_per_s"] for x in runs)
        row = {"engine": engine, "workers": workers, "boxes": runs[0]["boxes"], "runs_s": [x["seconds"] for x in runs],
               "median_s": seconds, "boxes_per_s": runs[0]["boxes"] / seconds,
               "boxes_per_s_per_core": runs[0]["boxes"] / seconds / workers,
               "steady_runs": [x["steady_boxes_per_s"] for x in runs], "steady_boxes_per_s": steady,
               "steady_boxes_per_s_per_core": steady / workers,
               "driver_peak_rss": max(x["peak_rss"] for x in runs),
               "worker_peak_rss": max(x["children_peak_rss"] for x in runs)}
        if engine == "ray":
            row["cluster_start_s"] = _median(runs, "cluster_start_s")
        rows.append(row)
        print(f"{kind} {engine} x{workers}: {row['boxes']} boxes, median {seconds:.2f} s of "
              f"{[round(x, 2) for x in row['runs_s']]} -> {row['boxes_per_s_per_core']:.2f} boxes/s/core end to end, "
              f"steady {steady / workers:.2f} boxes/s/core of {[round(x, 1) for x in row['steady_runs']]} boxes/s, "
              f"driver peak {row['driver_peak_rss'] / 2**20:.0f} MiB", flush=True)
    return {"images": images, "rows": rows}


def bench_merge(tmp, sizes, shards):
    rows = []
    for n in sizes:
        folder = tmp / f"merge_{n}"
        t = time.perf_counter()
        _write_export_folder(folder, n, shards)
        build = time.perf_counter() - t
        merged = run_child("merge", folder=str(folder))
        size = (folder / "pseudo_masks.json").stat().st_size
        loaded = run_child("json_load", file=str(folder / "pseudo_masks.json"))
        reader = run_child("reader", folder=str(folder))
        row = {"annotations": n, "shards": shards, "json_bytes": size, "build_inputs_s": build,
               "merge_s": merged["seconds"], "merge_peak_rss": merged["peak_rss"],
               "json_load_s": loaded["seconds"], "json_load_peak_rss": loaded["peak_rss"],
               "reader_open_s": reader["open_s"], "reader_all_s": reader["seconds"],
               "reader_peak_rss": reader["peak_rss"], "reader_annotations": reader["annotations"]}
        rows.append(row)
        print(f"merge {n}: {size / 2**20:.0f} MiB JSON, merge {merged['seconds']:.2f} s peak "
              f"{merged['peak_rss'] / 2**20:.0f} MiB; json.load peak {loaded['peak_rss'] / 2**20:.0f} MiB; lazy reader "
              f"peak {reader['peak_rss'] / 2**20:.0f} MiB reading all {reader['annotations']} annotations in "
              f"{reader['seconds']:.1f} s", flush=True)
    return rows


def bench_openimages(tmp, rows):
    csv = tmp / "oi-train-annotations-bbox.csv"
    _write_openimages_csv(csv, rows)
    cache = {"BOX2SEG_CACHE": str(tmp / "oi_cache")}
    parse = run_child("oi_csv_parse", env=cache, csv=str(csv))
    build = run_child("oi_index", env=cache, csv=str(csv))
    mapped = run_child("oi_index", env=cache, csv=str(csv))
    out = {"rows": rows, "csv_bytes": csv.stat().st_size, "parse_s": parse["seconds"],
           "parse_peak_rss": parse["peak_rss"], "build_s": build["seconds"], "build_peak_rss": build["peak_rss"],
           "map_s": mapped["seconds"], "map_touch_s": mapped["touch_s"], "map_peak_rss": mapped["peak_rss"],
           "index_bytes": sum(p.stat().st_size for p in (tmp / "oi_cache").rglob("*.npy"))}
    print(f"openimages {rows} rows ({out['csv_bytes'] / 2**20:.0f} MiB CSV): build {build['seconds']:.1f} s peak "
          f"{build['peak_rss'] / 2**20:.0f} MiB; map {mapped['seconds']:.3f} s + touch {mapped['touch_s']:.2f} s peak "
          f"{mapped['peak_rss'] / 2**20:.0f} MiB; index {out['index_bytes'] / 2**20:.0f} MiB", flush=True)
    return out


def _write_openimages_sizes(cache, image_root, rows, images=None):
    """The old sizes cache (``image_sizes``' JSON, one entry per image) for the generated CSV's images, so
    the loaders find every size without image files; the lazy loader converts it to its ``.npy`` once."""
    images = images or max(rows // 9, 1)
    # box2seg.data.cache.stable_hash, inlined: importing box2seg would load detectron2 into this parent
    key = hashlib.sha1(json.dumps([str(image_root), ".jpg"], sort_keys=True, separators=(",", ":")).encode())
    path = Path(cache) / "openimages" / f"sizes-{key.hexdigest()[:12]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    sizes = rng.integers(300, 1025, (images, 2)).tolist()
    path.write_text(json.dumps({f"{k:016x}": sizes[k] for k in range(images)}))


def bench_openimages_dataset(tmp, sizes, eager_max):
    """Peak memory (VmHWM) of a fresh process that gets a registered Open Images dataset, iterates every
    record, hashes them, builds the training loader's dataset and reads 1000 random records: the lazy
    sequence at each size, the eager list (the old path) up to ``eager_max`` rows."""
    out = {"rows": []}
    for rows in sizes:
        folder = tmp / f"oi_dataset_{rows}"
        folder.mkdir()
        csv = folder / "train-annotations-bbox.csv"
        image_root = folder / "images"
        t = time.perf_counter()
        _write_openimages_csv(csv, rows)
        env = {"BOX2SEG_CACHE": str(folder / "cache")}
        _write_openimages_sizes(env["BOX2SEG_CACHE"], image_root, rows)
        generate_s = time.perf_counter() - t
        first = run_child("oi_dataset", env=env, csv=str(csv), image_root=str(image_root))  # index, view, hash
        lazy = run_child("oi_dataset", env=env, csv=str(csv), image_root=str(image_root))
        row = {"rows": rows, "generate_s": generate_s, "first": first, "lazy": lazy}
        if rows <= eager_max:
            row["eager"] = run_child("oi_eager", env=env, csv=str(csv), image_root=str(image_root))
            assert row["eager"]["annotations_hash"] == lazy["annotations_hash"], "eager and lazy hashes differ"
        for key in ("lazy", "eager"):
            if key in row:
                r = row[key]
                r["above_import"] = max(r[k] for k in ("get_peak_rss", "iterate_peak_rss", "hash_peak_rss",
                                                       "loader_peak_rss", "peak_rss")) - r["import_peak_rss"]
                r["bytes_per_box_above_import"] = r["above_import"] / max(r["boxes"], 1)
                r["anon_above_import"] = max(r[f"{k}_anon"] for k in ("get", "iterate", "hash", "loader", "random")) \
                    - r["import_anon"]
                r["file_above_import"] = max(r[f"{k}_file"] for k in ("get", "iterate", "hash", "loader", "random")) \
                    - r["import_file"]
        out["rows"].append(row)
        msg = (f"openimages_dataset {rows} rows ({lazy['images']} images, {lazy['boxes']} boxes): first load "
               f"(index + view + hash) {first['get_s'] + first['hash_s']:.1f} s peak {first['peak_rss'] / 2**20:.0f} MiB; "
               f"lazy peak {lazy['peak_rss'] / 2**20:.0f} MiB (import {lazy['import_peak_rss'] / 2**20:.0f} MiB, "
               f"+{lazy['above_import'] / 2**20:.0f} MiB: private +{lazy['anon_above_import'] / 2**20:.0f} MiB, mapped "
               f"+{lazy['file_above_import'] / 2**20:.0f} MiB), iterate {lazy['iterate_s']:.1f} s")
        if "eager" in row:
            e = row["eager"]
            msg += (f"; eager peak {e['peak_rss'] / 2**20:.0f} MiB (+{e['above_import'] / 2**20:.0f} MiB), get "
                    f"{e['get_s']:.1f} s")
        print(msg, flush=True)
        shutil.rmtree(folder, ignore_errors=True)
    big = max(out["rows"], key=lambda r: r["rows"])
    per_box = big["lazy"]["bytes_per_box_above_import"]
    out["projection_v6_train"] = {
        "boxes": DATASETS["Open Images V6 train"], "lazy_bytes_per_box_above_import": per_box,
        "lazy_above_import_bytes": per_box * DATASETS["Open Images V6 train"],
        "import_bytes": big["lazy"]["import_peak_rss"],
        "lazy_total_bytes": per_box * DATASETS["Open Images V6 train"] + big["lazy"]["import_peak_rss"],
        "lazy_anon_bytes_per_box": big["lazy"]["anon_above_import"] / big["lazy"]["boxes"],
        "lazy_file_bytes_per_box": big["lazy"]["file_above_import"] / big["lazy"]["boxes"]}
    for key in ("anon", "file"):
        out["projection_v6_train"][f"lazy_{key}_above_import_bytes"] = (
            out["projection_v6_train"][f"lazy_{key}_bytes_per_box"] * DATASETS["Open Images V6 train"])
    eager_rows = [r for r in out["rows"] if "eager" in r]
    if eager_rows:
        e = max(eager_rows, key=lambda r: r["rows"])["eager"]
        out["projection_v6_train"]["eager_above_import_bytes"] = (e["bytes_per_box_above_import"]
                                                                  * DATASETS["Open Images V6 train"])
    return out


def projections(results):
    """Wall time on M machines of 32 cores from the recorded single-thread per-box costs and the measured
    steady-state efficiency of 2 workers (and of Ray against the local pool) on this machine, both capped at
    1; worker start-up (seconds, once per job) is left out."""
    out = {}
    grabcut = {(r["engine"], r["workers"]): r for r in results.get("grabcut", {}).get("rows", [])}
    efficiency = 1.0
    ray_ratio = 1.0
    if ("local", 1) in grabcut and ("local", 2) in grabcut:
        efficiency = min(grabcut[("local", 2)]["steady_boxes_per_s_per_core"]
                         / grabcut[("local", 1)]["steady_boxes_per_s_per_core"], 1.0)
    if ("ray", 2) in grabcut and ("local", 2) in grabcut:
        ray_ratio = min(grabcut[("ray", 2)]["steady_boxes_per_s"] / grabcut[("local", 2)]["steady_boxes_per_s"], 1.0)
    for stage, cost in (("grabcut", GRABCUT_S_PER_BOX), ("export_cpu", EXPORT_S_PER_BOX)):
        for dataset, boxes in DATASETS.items():
            for machines in MACHINES:
                ideal = boxes * cost / (machines * CORES) / 3600
                out[f"{stage}|{dataset}|{machines}"] = {"ideal_h": ideal,
                                                         "measured_scaling_h": ideal / (efficiency * ray_ratio)}
    out["assumptions"] = {"grabcut_s_per_box": GRABCUT_S_PER_BOX, "export_s_per_box_cpu": EXPORT_S_PER_BOX,
                          "efficiency_2_workers": efficiency, "ray_over_local": ray_ratio, "cores": CORES}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", default=None)
    parser.add_argument("child_args", nargs="?", default="{}")
    parser.add_argument("--sections", nargs="+", default=["grabcut", "export", "merge", "openimages"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grabcut-images", type=int, default=40)
    parser.add_argument("--export-images", type=int, default=40)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--csv-rows", type=int, default=1_000_000)
    parser.add_argument("--oi-sizes", type=int, nargs="+", default=[1_000_000, 4_000_000],
                        help="openimages_dataset: boxes CSV rows")
    parser.add_argument("--oi-eager-max", type=int, default=1_000_000,
                        help="openimages_dataset: measure the eager list (the old path) up to this many rows")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "scale.json"))
    args = parser.parse_args()
    if args.child:
        return child(args.child, json.loads(args.child_args))
    results = {}
    if Path(args.out).is_file():
        results = json.loads(Path(args.out).read_text())  # a section rerun keeps the others' figures
    with tempfile.TemporaryDirectory(prefix="box2seg-scale-") as tmp:
        tmp = Path(tmp)
        if "grabcut" in args.sections:
            results["grabcut"] = bench_throughput("grabcut", tmp, args.repeats, args.grabcut_images)
        if "export" in args.sections:
            results["export"] = bench_throughput("export", tmp, args.repeats, args.export_images)
        if "merge" in args.sections:
            results["merge"] = bench_merge(tmp, args.sizes, args.shards)
        if "openimages" in args.sections:
            results["openimages"] = bench_openimages(tmp, args.csv_rows)
        if "openimages_dataset" in args.sections:
            results["openimages_dataset"] = bench_openimages_dataset(tmp, args.oi_sizes, args.oi_eager_max)
    results["projections"] = projections(results)
    results["load_average_at_end"] = os.getloadavg()
    for key, hours in results["projections"].items():
        if key != "assumptions":
            print(f"projection {key}: {hours['ideal_h']:.1f} h at full efficiency, {hours['measured_scaling_h']:.1f} h "
                  "at this machine's measured 2-worker efficiency", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, sort_keys=True))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
