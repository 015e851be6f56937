"""projects/Box2Seg/demo.py end to end on a few generated scenes (tiny sizes through its arguments): GrabCut
labels, chip-mode training, export of train and val, both scores beside the baselines, Mask R-CNN on
pseudo-masks and on filled boxes with the given-box score, overlays and the bar chart; a second run reuses
every finished stage. The verdict's arithmetic is checked on its own."""
import json
import os
import runpy

import cv2
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_MASKRCNN = ["MODEL.EFFICIENTNET.PRETRAINED", "False", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM",
                 "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"]


@pytest.fixture(scope="module")
def demo():
    """demo.py is a script, not a module: its functions, as ``python demo.py`` would define them."""
    return runpy.run_path(os.path.join(REPO, "projects", "Box2Seg", "demo.py"))


def test_whole_job_on_tiny_scenes_then_reused(demo, fresh_cache, tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["--output", str(out), "--train-images", "3", "--val-images", "2", "--maskrcnn-iters", "1",
            "--overlays", "2", "--maskrcnn-opts", *TINY_MASKRCNN,
            "--opts", "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
            "DATALOADER.NUM_WORKERS", "0"]
    assert demo["main"](argv) == 0  # a completed run exits 0 whatever the verdict
    printed = capsys.readouterr().out
    for row in ("filled boxes", "filled ellipses", "GrabCut", "Box2Seg pseudo-masks"):
        assert f"| {row} | " in printed
    assert "| pseudo-masks | " in printed and "| filled boxes | " in printed and "not informative: box AP" in printed
    assert "TARGET MET" in printed or "TARGET MISSED" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["table"] in printed and results["verdict"] in printed
    for split in ("train", "val"):
        rows = results["scores"][split]
        assert all(0 <= rows[m][p] <= 1 for m in rows for p in ("per_box", "painted"))
        assert (out / f"export_{split}" / "pseudo_masks.json").is_file()
        assert len(results["overlays"][split]) == 2
        picture = cv2.imread(results["overlays"][split][0])
        assert picture.shape[0] == 2 * 256 and picture.shape[1] > 4 * 256  # image | Visualizer overlay, at 2x
    for name in ("pseudo-masks", "filled boxes"):
        given = results["maskrcnn"][name]["given_boxes"]
        assert given["count"] > 0 and 0 <= given["per_box"] <= 1 and "bbox" in results["maskrcnn"][name]
    assert cv2.imread(str(out / "scores.png")) is not None
    # The pseudo-masks Mask R-CNN trained on are Box2Seg's export, the control's are filled boxes.
    assert json.loads((out / "maskrcnn_pseudo" / "maskrcnn_results.json").read_text())["train_json"] == str(
        out / "export_train" / "pseudo_masks.json")

    stamps = [os.path.getmtime(out / p) for p in ("box2seg_seed0/model_final.pth", "maskrcnn_pseudo/maskrcnn_results.json",
                                                  "maskrcnn_boxes/maskrcnn_results.json")]
    assert demo["main"](argv) == 0
    assert [os.path.getmtime(out / p) for p in ("box2seg_seed0/model_final.pth", "maskrcnn_pseudo/maskrcnn_results.json",
                                                "maskrcnn_boxes/maskrcnn_results.json")] == stamps
    assert results["table"] in capsys.readouterr().out


def _scores(ours_gain):
    base = {"filled boxes": 0.55, "filled ellipses": 0.59, "GrabCut": 0.667}
    rows = {m: {"per_box": v, "painted": v} for m, v in base.items()}
    rows["Box2Seg pseudo-masks"] = {"per_box": 0.667 + ours_gain, "painted": 0.6}
    return {"train": rows, "val": rows}


def test_verdict_needs_both_splits_and_mask_rcnn(demo):
    mrcnn = {"pseudo-masks": {"given_boxes": {"per_box": 0.62}}, "filled boxes": {"given_boxes": {"per_box": 0.58}}}
    met, line = demo["verdict"](_scores(0.031), mrcnn, 0.03)
    assert met and line.startswith("TARGET MET") and "vs GrabCut 0.667 (+0.031)" in line
    assert not demo["verdict"](_scores(0.029), mrcnn, 0.03)[0]
    mrcnn["pseudo-masks"]["given_boxes"]["per_box"] = 0.57
    met, line = demo["verdict"](_scores(0.05), mrcnn, 0.03)
    assert not met and line.startswith("TARGET MISSED") and "0.570 on pseudo-masks vs 0.580 on filled boxes" in line
