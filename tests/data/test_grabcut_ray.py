"""prepare-grabcut on Ray (box2seg.distributed.ray_engine): a local cluster listening on 127.0.0.1 only; a
worker SIGKILLed mid-job is retried and the cache equals a clean local run byte for byte (one thread per
worker in both engines); a job switches engines between shards; a worker that dies past the retries fails
naming the image. Skipped without the ``ray`` extra (pip install -e '.[ray]')."""
import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
from box2seg.distributed.loopback import prepare_ray_import

prepare_ray_import()  # before ray's first import: the local cluster binds the loopback address

import os  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from box2seg.data import grabcut_job  # noqa: E402
from box2seg.data.grabcut_job import GrabCutJobError, prepare_dataset  # noqa: E402
from box2seg.distributed import ray_engine  # noqa: E402
from box2seg.distributed.ray_engine import RayGrabCutEngine, images_per_task  # noqa: E402

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two CPUs on 127.0.0.1; its workers SIGKILL themselves on an image named victim_* while the marker
    file does not exist (the hook of grabcut_job, armed in every engine's worker)."""
    marker = tmp_path_factory.mktemp("ray") / "killed"
    os.environ[grabcut_job._KILL_ENV] = f"victim_:{marker}"  # workers inherit the raylet's environment
    try:
        ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
        yield marker
    finally:
        os.environ.pop(grabcut_job._KILL_ENV, None)
        ray.shutdown()


def _victim_dataset(tmp_path, scenes, registered, n=6):
    dicts = scenes(tmp_path / "images", n)
    victim = Path(dicts[2]["file_name"])
    dicts[2]["file_name"] = str(victim.rename(victim.with_name("victim_002.png")))
    return registered(dicts)


def test_the_local_cluster_listens_on_loopback_only(cluster):
    assert ray.get(ray.remote(lambda: os.getpid()).remote())  # workers up
    me = psutil.Process()
    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
    listening = [c for c in psutil.net_connections(kind="inet") if c.pid in pids and c.status == psutil.CONN_LISTEN]
    assert listening, "found no Ray server sockets to check"
    assert {c.laddr.ip for c in listening} <= LOOPBACK, sorted({(c.laddr.ip, c.laddr.port) for c in listening})


def test_images_per_task_batches_long_jobs_and_keeps_short_ones_spread():
    assert images_per_task(6, 2) == 1  # fewer images than TASKS_PER_CPU x CPUs: one each
    assert images_per_task(40, 2) == 40 // (ray_engine.TASKS_PER_CPU * 2)
    assert images_per_task(10 ** 6, 64) == ray_engine.MAX_IMAGES_PER_TASK
    assert images_per_task(5, 0) == 1


@pytest.mark.parametrize("tasks_per_cpu", [ray_engine.TASKS_PER_CPU, 1], ids=["one_image_a_task", "three_a_task"])
def test_killed_worker_is_retried_and_the_cache_equals_a_local_run(cluster, tmp_path, scenes, registered,
                                                                   monkeypatch, folder_bytes, tasks_per_cpu):
    # three_a_task: the victim is the last image of the first task, so its retry rewrites the two before it.
    monkeypatch.setattr(ray_engine, "TASKS_PER_CPU", tasks_per_cpu)
    name = _victim_dataset(tmp_path, scenes, registered)
    cluster.unlink(missing_ok=True)
    monkeypatch.setenv("BOX2SEG_CACHE", str(tmp_path / "ray"))
    on_ray = prepare_dataset(name, workers=2, progress=False, engine=RayGrabCutEngine())
    assert cluster.exists(), "the victim's worker was not killed"
    assert on_ray["engine"] == "ray" and on_ray["computed"] == 6
    monkeypatch.setenv("BOX2SEG_CACHE", str(tmp_path / "local"))
    local = prepare_dataset(name, workers=1, progress=False)
    assert folder_bytes(on_ray["folder"]) == folder_bytes(local["folder"])

    # One shard on Ray, the other on the local pool, into one folder: the same maps and summary.
    monkeypatch.setenv("BOX2SEG_CACHE", str(tmp_path / "mixed"))
    first = prepare_dataset(name, workers=2, progress=False, shard=(0, 2), engine=RayGrabCutEngine())
    second = prepare_dataset(name, workers=2, progress=False, shard=(1, 2))
    assert first["summary"] is None and second["summary"] == local["summary"]
    maps = lambda folder: {k: v for k, v in folder_bytes(folder).items() if "/" not in k}  # noqa: E731
    assert maps(second["folder"]) == maps(local["folder"])
    # ... and a rerun on Ray reuses what the local pool wrote.
    assert prepare_dataset(name, progress=False, shard=(1, 2), engine=RayGrabCutEngine())["computed"] == 0


def test_a_worker_dying_past_the_retries_fails_naming_the_image(cluster, tmp_path, scenes, registered,
                                                                fresh_cache):
    name = _victim_dataset(tmp_path, scenes, registered, n=3)
    cluster.unlink(missing_ok=True)
    with pytest.raises(GrabCutJobError, match="victim_002.png.*run the same command again"):
        prepare_dataset(name, workers=2, progress=False, engine=RayGrabCutEngine(retries=0))
    again = prepare_dataset(name, workers=2, progress=False, engine=RayGrabCutEngine())  # marker set: no kill
    assert again["computed"] + again["reused"] == 3 and again["summary"]["images"] == 3
