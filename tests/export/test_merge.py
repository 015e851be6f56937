"""export.merge: shards merge to the unsharded run's bytes; missing, foreign and mixed shards are refused."""
import pytest
import torch

from box2seg.export import ExportError, export_dataset, merge_shards


def test_shards_merge_to_the_unsharded_bytes(dataset, weights, reference, tmp_path, export_cfg):
    name, spec, json_file = dataset
    ref_dir, ref_summary = reference
    assert ref_summary["not_exported"] == 1  # the zero-width box the loader skipped
    assert ref_summary["box2seg"] + ref_summary["grabcut"] + ref_summary["ellipse"] == ref_summary["boxes"]
    assert ref_summary["crowd"] == 1
    out = tmp_path / "sharded"
    cfg = export_cfg(spec, name, weights[0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first = export_dataset(cfg, name, out, shard=(0, 2), progress=False)
        assert first["images"] == 3 and not (out / "pseudo_masks.json").exists()
        with pytest.raises(ExportError, match="missing shard"):
            merge_shards(out)
        with pytest.raises(ExportError, match="weights_sha1"):  # another model into the same folder
            export_dataset(export_cfg(spec, name, weights[1]), name, out, shard=(1, 2), progress=False)
        export_dataset(cfg, name, out, shard=(1, 2), progress=False)
    finally:
        torch.set_num_threads(threads)
    merged = merge_shards(out)
    assert merged["images"] == 5 and merged["boxes"] == ref_summary["boxes"]
    assert (out / "pseudo_masks.json").read_bytes() == (ref_dir / "pseudo_masks.json").read_bytes()
    # A shard of another split in the folder is refused, naming both N.
    (out / "shards" / "shard-00000-of-00003.json").write_text("{}")
    with pytest.raises(ExportError, match="different N"):
        merge_shards(out)
