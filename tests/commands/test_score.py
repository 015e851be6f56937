"""``box2seg score``: prints the table, writes strict JSON, exits 2 naming a file it cannot read."""
import json


def test_prints_table_and_writes_json(tiny_coco, tmp_path, capsys, run):
    gt = tiny_coco[0]
    out = tmp_path / "scores.json"
    assert run("score", "--gt", gt, "--pred", gt, "--json-out", out) == 0
    table = capsys.readouterr().out
    assert "instances (all)" in table and "semantic mIoU (classes with GT pixels): 100.0" in table
    saved = json.loads(out.read_text())  # strict JSON: NaN became null
    assert saved["instance"]["mIoU"] == 1.0 and saved["instance"]["mIoU-large"] is None
    assert run("score", "--gt", gt, "--pred", tmp_path / "nope.json") == 2
    assert "prediction file" in capsys.readouterr().out


def test_a_ground_truth_without_masks_exits_non_zero(tiny_coco, tmp_path, capsys, run):
    data = json.loads(open(tiny_coco[0]).read())
    for ann in data["annotations"]:
        ann.pop("segmentation", None)
    boxes_only = tmp_path / "boxes_only.json"
    boxes_only.write_text(json.dumps(data))
    assert run("score", "--gt", boxes_only, "--pred", boxes_only) == 2
    assert "no ground-truth mask to score against" in capsys.readouterr().out
