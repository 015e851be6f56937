"""Ray as an engine for the per-image jobs (``--engine ray``): an optional extra, ``pip install -e '.[ray]'``.

GrabCut (:class:`RayGrabCutEngine`): every image is a Ray task running the same function as the local pool
(:func:`box2seg.data.grabcut_job.compute_image`), one CPU and one OpenCV thread each, retried by Ray when its
worker dies (``max_retries``; the OOM killer's SIGKILL, a lost node). The task writes its PNG into the cache
folder (a shared file system on a multi-machine cluster) and returns the statistics; the driver appends
them to the shard's manifest, so the folder is the local engine's, byte for byte, and a job can switch
engines and resume. At most ``4 x CPUs`` tasks are in flight, so a 1.7M-image shard never floods the
object store.

:func:`ray_session` connects to ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:10001``) or starts a
local cluster bound to 127.0.0.1 without the dashboard, and shuts down only a cluster it started. Loopback
binding needs :func:`box2seg.distributed.prepare_ray_import` before ray's first import (``get_engine`` does
it; code importing this module directly calls it first).
"""
import contextlib
import logging
import time

from ..data.grabcut_job import GrabCutJobError, compute_image, init_task_worker
from . import LOOPBACK_ENV, prepare_ray_import

try:
    import ray
    from ray.exceptions import RayTaskError, WorkerCrashedError
except ImportError:  # the optional extra is not installed: RayUnavailableError says how to get it
    ray = None

logger = logging.getLogger(__name__)

__all__ = ["RayUnavailableError", "ray_session", "RayGrabCutEngine", "RETRIES"]

RETRIES = 3  # Ray re-runs a task whose worker died this many times before the job fails naming the image
IN_FLIGHT_PER_CPU = 4


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


def _grabcut_task(task):
    init_task_worker()
    return compute_image(task)


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
            window = IN_FLIGHT_PER_CPU * max(int(ray.cluster_resources().get("CPU", 1)), 1)
            queue = list(reversed(pending))
            running = {}
            start = time.perf_counter()
            while queue or running:
                while queue and len(running) < window:
                    i = queue.pop()
                    running[remote.remote(task(i))] = i
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    i = running.pop(ref)
                    try:
                        collect(*ray.get(ref))
                    except WorkerCrashedError:
                        raise GrabCutJobError(
                            f"GrabCut {dataset_name}: Ray workers died {self.retries + 1} times (killed from "
                            f"outside, e.g. by the OOM killer) on image {describe(i)}. The images already written "
                            "are kept: run the same command again to resume.") from None
                    except RayTaskError as e:  # the task's own error (a bad image): the local engine's message
                        cause = e.cause if getattr(e, "cause", None) is not None else e
                        raise RuntimeError(str(cause)) from None
            logger.info("Ray GrabCut %s: %d images in %.1f s", dataset_name, len(pending),
                        time.perf_counter() - start)
