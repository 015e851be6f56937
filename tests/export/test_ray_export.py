"""export on Ray (box2seg.distributed.ray_engine.RayExportEngine): two CPU actors holding the model, one of
them SIGKILLed mid-job (Ray restarts it and retries its batch), give the local engine's pseudo_masks.json,
index and label PNGs byte for byte (one torch thread in both); a shard may switch engines. Skipped without
the ``ray`` extra."""
import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
from box2seg.distributed.loopback import prepare_ray_import

prepare_ray_import()  # before ray's first import: the local cluster binds the loopback address

import json  # noqa: E402
import os  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

ray = pytest.importorskip("ray")

from box2seg.distributed import ray_engine  # noqa: E402
from box2seg.distributed.ray_engine import RayExportEngine  # noqa: E402
from box2seg.export import export_dataset, merge_shards  # noqa: E402
from box2seg.export.indexed import index_path  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two CPUs on 127.0.0.1; an actor given img2.png SIGKILLs itself once (the marker file says it did)."""
    marker = tmp_path_factory.mktemp("ray") / "killed"
    os.environ[ray_engine._KILL_EXPORT_ENV] = f"img2.png:{marker}"  # actors inherit the raylet's environment
    try:
        ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
        yield marker
    finally:
        os.environ.pop(ray_engine._KILL_EXPORT_ENV, None)
        ray.shutdown()


def test_ray_actors_export_the_local_bytes(cluster, dataset, weights, reference, tmp_path, export_cfg):
    name, spec, _ = dataset
    ref_dir, ref_summary = reference
    cfg = export_cfg(spec, name, weights[0])
    summary = export_dataset(cfg, name, tmp_path / "ray", progress=False, engine=RayExportEngine(actors=2, batch=2))
    assert cluster.exists(), "the actor holding img2.png was not killed"  # restarted by Ray, its batch retried
    assert summary["computed"] == 5 and summary["boxes"] == ref_summary["boxes"]
    assert (tmp_path / "ray" / "pseudo_masks.json").read_bytes() == (ref_dir / "pseudo_masks.json").read_bytes()
    counts = lambda folder: {k: v for k, v in json.loads((folder / "summary.json").read_text()).items()  # noqa: E731
                             if k != "output"}
    assert counts(tmp_path / "ray") == counts(ref_dir)
    assert index_path(tmp_path / "ray" / "pseudo_masks.json").read_bytes() == \
        index_path(ref_dir / "pseudo_masks.json").read_bytes()
    for png in (ref_dir / "labels").glob("*.png"):
        assert (tmp_path / "ray" / "labels" / png.name).read_bytes() == png.read_bytes()

    # Shard 0/2 on Ray, shard 1/2 locally, one folder: the merge is the unsharded run's.
    out = tmp_path / "mixed"
    export_dataset(cfg, name, out, shard=(0, 2), progress=False, engine=RayExportEngine(actors=1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        export_dataset(cfg, name, out, shard=(1, 2), progress=False)
    finally:
        torch.set_num_threads(threads)
    merge_shards(out)
    assert (out / "pseudo_masks.json").read_bytes() == (ref_dir / "pseudo_masks.json").read_bytes()
