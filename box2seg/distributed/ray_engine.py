"""Ray as an engine for the per-image jobs (``--engine ray``): an optional extra, ``pip install -e '.[ray]'``.

GrabCut (:class:`RayGrabCutEngine`): every Ray task runs the local pool's function
(:func:`box2seg.data.grabcut_job.compute_image`) on a few images in turn, one CPU and one OpenCV thread
each, and is retried by Ray when its worker dies (``max_retries``; the OOM killer's SIGKILL, a lost node):
the images it had written are written again, byte for byte. Batching matters because one image is about
50-100 ms of GrabCut on the generated scenes and Ray's per-task cost (scheduling, argument and result
transfer) is tens of milliseconds on a busy node; :func:`images_per_task` keeps at least
``TASKS_PER_CPU`` tasks per CPU so the tail stays balanced. Each task writes its PNGs into the cache folder
(a shared file system on a multi-machine cluster) and returns the statistics; the driver appends them to
the shard's manifest, so the folder is the local engine's, byte for byte, and a job can switch engines and
resume. At most ``4 x CPUs`` tasks are in flight, so a 1.7M-image shard never floods the object store.

Export (:class:`RayExportEngine`): actors holding the model (one GPU each where the cluster has GPUs, else one
CPU and one torch thread each) take batches of records and return label PNGs, box masks and scores; the
driver builds the parts and writes every file, as the local engine does (:mod:`box2seg.export.inference`).
An actor's process registers the config's datasets (DATASETS.COCO_FORMAT / OPENIMAGES_FORMAT, i.e.
``--coco-dataset`` / ``--openimages-dataset``) for the mapper's metadata.

:func:`ray_session` connects to ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:10001``) or starts a
local cluster bound to 127.0.0.1 without the dashboard, and shuts down only a cluster it started. Loopback
binding needs :func:`box2seg.distributed.loopback.prepare_ray_import` before ray's first import
(:func:`box2seg.distributed.grabcut_engine` / ``export_engine`` do it; code importing this module directly calls
it first).
"""
import contextlib
import logging
import os
import signal
import time

import torch

from ..data.grabcut_job import GrabCutJobError, compute_image, init_task_worker
from ..engine import register_datasets
from ..export.inference import LocalExportEngine, build_export_model
from .loopback import LOOPBACK_ENV, prepare_ray_import

try:
    import ray
    from ray.exceptions import RayTaskError, WorkerCrashedError
    from ray.util import ActorPool
except ImportError:  # the optional extra is not installed: RayUnavailableError says how to get it
    ray = None

logger = logging.getLogger(__name__)

__all__ = ["RayUnavailableError", "ray_session", "RayGrabCutEngine", "RayExportEngine", "RETRIES"]

RETRIES = 3  # Ray re-runs a task whose worker died this many times before the job fails naming its images
IN_FLIGHT_PER_CPU = 4
MAX_IMAGES_PER_TASK = 16  # 16 photos are some 10-30 s of GrabCut: a retried task repeats little
TASKS_PER_CPU = 4  # a short job still spreads evenly over the CPUs


class RayUnavailableError(RuntimeError):
    """``--engine ray`` without Ray installed."""

    user_error = True


def require_ray():
    if ray is None:
        raise RayUnavailableError("--engine ray needs Ray: pip install -e '.[ray]' (or pip install ray); the "
                                  "default --engine local needs nothing more")
    return ray


@contextlib.contextmanager
def ray_session(address=None, num_cpus=None):
    """A connected Ray driver for the duration of the block (module docstring)."""
    require_ray()
    if ray.is_initialized():
        yield
        return
    if address:
        ray.init(address=address, log_to_driver=False)
        where = address
    else:
        if not prepare_ray_import():
            logger.warning("Ray was imported before box2seg could ask for a loopback-only local cluster (set %s=0 "
                           "before importing ray): the local cluster may listen on the network", LOOPBACK_ENV)
        ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
        where = f"a local cluster of {num_cpus or 'all'} CPUs on 127.0.0.1"
    logger.info("Ray: connected to %s (%s CPUs)", where, ray.cluster_resources().get("CPU"))
    try:
        yield
    finally:
        ray.shutdown()


def images_per_task(images, cpus):
    """How many images one GrabCut task takes: up to ``MAX_IMAGES_PER_TASK``, but at least ``TASKS_PER_CPU``
    tasks per CPU while the job has that many images."""
    return max(1, min(MAX_IMAGES_PER_TASK, images // (TASKS_PER_CPU * max(int(cpus), 1))))


def _grabcut_task(tasks):
    init_task_worker()
    return [compute_image(task) for task in tasks]


class RayGrabCutEngine:
    """Per-image GrabCut tasks on a Ray cluster (module docstring); ``workers`` is the local cluster's CPU
    count when this engine starts one (ignored when connecting to ``address``)."""

    name = "ray"

    def __init__(self, address=None, retries=RETRIES):
        require_ray()
        self.address = address
        self.retries = retries

    def run(self, pending, task, workers, collect, dataset_name, describe, start_method=None):
        if not pending:
            return
        with ray_session(self.address, num_cpus=max(int(workers), 1)):
            remote = ray.remote(num_cpus=1, max_retries=self.retries)(_grabcut_task)
            cpus = max(int(ray.cluster_resources().get("CPU", 1)), 1)
            size = images_per_task(len(pending), cpus)
            batches = [pending[k:k + size] for k in range(0, len(pending), size)]
            queue = batches[::-1]
            running = {}
            start = time.perf_counter()
            while queue or running:
                while queue and len(running) < IN_FLIGHT_PER_CPU * cpus:
                    batch = queue.pop()
                    running[remote.remote([task(i) for i in batch])] = batch
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    batch = running.pop(ref)
                    try:
                        results = ray.get(ref)
                    except WorkerCrashedError:
                        names = ", ".join(describe(i) for i in batch)
                        raise GrabCutJobError(
                            f"GrabCut {dataset_name}: Ray workers died {self.retries + 1} times (killed from "
                            f"outside, e.g. by the OOM killer) on a task of image{'s' if len(batch) > 1 else ''} "
                            f"{names}. The images already written are kept: run the same command again to "
                            "resume.") from None
                    except RayTaskError as e:  # the task's own error (a bad image): the local engine's message
                        cause = e.cause if getattr(e, "cause", None) is not None else e
                        raise RuntimeError(str(cause)) from None
                    for result in results:
                        collect(*result)
            logger.info("Ray GrabCut %s: %d images in %d tasks of up to %d in %.1f s", dataset_name, len(pending),
                        len(batches), size, time.perf_counter() - start)


# Test hook: an export actor given an image whose file name contains NAME kills itself with SIGKILL, as the OOM
# killer would ("NAME:MARKER": only while the file MARKER does not exist yet; it is created first).
_KILL_EXPORT_ENV = "BOX2SEG_TEST_KILL_EXPORT_ACTOR"


def _test_kill_hook(records):
    name, _, marker = os.environ.get(_KILL_EXPORT_ENV, "").partition(":")
    if name and marker and not os.path.exists(marker) and any(name in os.path.basename(r["file_name"])
                                                                for r in records):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)


class _ExportActor:
    """One model replica (built once from the config, with the config's datasets registered in the actor's
    process for the mapper's metadata); ``outputs`` maps a batch of records to label PNGs, masks, scores."""

    def __init__(self, cfg, allow_partial_weights):
        torch.set_num_threads(1)  # one CPU per actor, as the local engine's 1-thread reference
        register_datasets(cfg)
        self.cfg = cfg
        self.engine = LocalExportEngine(build_export_model(cfg, allow_partial_weights))

    def outputs(self, positions, records, label_dtype):
        """``[(position, label PNG bytes, masks, scores)]`` of ``records`` (dataset ``positions``)."""
        _test_kill_hook(records)
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.DATALOADER.NUM_WORKERS = 0  # the actor is the worker
        done = self.engine.outputs(cfg, records, list(range(len(records))), label_dtype)
        return [(positions[k], *rest) for k, *rest in done]


class RayExportEngine:
    """Export's model on Ray actors, one per GPU where the cluster has GPUs (MODEL.DEVICE cuda), else one per
    CPU (MODEL.DEVICE cpu); batches of ``batch`` images go to whichever actor is free. A dead actor is
    restarted and its batch retried by Ray (``max_restarts`` / ``max_task_retries``). The driver writes every
    file, so the export folder is the local engine's."""

    name = "ray"

    def __init__(self, address=None, allow_partial_weights=False, actors=None, batch=4, retries=RETRIES):
        require_ray()
        self.address = address
        self.allow_partial_weights = allow_partial_weights
        self.actors = actors
        self.batch = batch
        self.retries = retries

    def outputs(self, cfg, dicts, pending, label_dtype):
        with ray_session(self.address, num_cpus=self.actors):
            gpus = int(ray.cluster_resources().get("GPU", 0))
            cfg = cfg.clone()
            cfg.defrost()
            if gpus:
                cfg.MODEL.DEVICE = "cuda"
                count, resources = min(self.actors or gpus, gpus), {"num_gpus": 1}
            else:
                cfg.MODEL.DEVICE = "cpu"
                count = self.actors or max(int(ray.cluster_resources().get("CPU", 1)), 1)
                resources = {"num_cpus": 1}
            cfg.freeze()
            actor = ray.remote(max_restarts=self.retries, max_task_retries=self.retries, **resources)(_ExportActor)
            pool = ActorPool([actor.remote(cfg, self.allow_partial_weights) for _ in range(count)])
            batches = [pending[k:k + self.batch] for k in range(0, len(pending), self.batch)]
            logger.info("Ray export: %d images in %d batches on %d actors (%s)", len(pending), len(batches), count,
                        f"{gpus} GPUs" if gpus else "CPU")
            results = pool.map_unordered(
                lambda a, batch: a.outputs.remote(batch, [dicts[i] for i in batch], label_dtype), batches)
            for outputs in results:
                yield from outputs
