"""``box2seg train-maskrcnn``: two iterations of stock Mask R-CNN (Lite0-FPN, random backbone) on a COCO JSON's
masks, then COCOEvaluator on true masks, results in OUTPUT_DIR/maskrcnn_results.json. Seconds on a CPU."""
import json
import math
import os

from box2seg import maskrcnn

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LITE0_CFG = os.path.join(REPO, "configs", "maskrcnn", "mask_rcnn_lite0_FPN_pseudo.yaml")

TINY_OPTS = [
    "MODEL.EFFICIENTNET.PRETRAINED", "False", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "32", "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "32",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "100", "MODEL.RPN.POST_NMS_TOPK_TEST", "32", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    "TEST.DETECTIONS_PER_IMAGE", "20", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
    "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2",
    "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "1", "SOLVER.BASE_LR", "0.001", "SOLVER.CHECKPOINT_PERIOD", "1000",
    "DATALOADER.NUM_WORKERS", "0",
]


def test_two_iterations_and_coco_eval(tmp_path, tiny_coco, run):
    json_file, image_root = tiny_coco  # its true masks serve as the pseudo-masks and as the ground truth
    out = tmp_path / "out"
    (out).mkdir()
    (out / maskrcnn.RESULTS_FILE).write_text("{}")  # a stale file must not pass for this run's results
    assert run("train-maskrcnn", "--config-file", LITE0_CFG, "--train-json", json_file, "--image-root", image_root,
               "--eval-json", json_file, *TINY_OPTS, "OUTPUT_DIR", out) == 0
    with open(out / "metrics.json") as f:
        metrics = [json.loads(line) for line in f if line.strip()]
    train_rows = [m for m in metrics if "loss_mask" in m]
    assert train_rows and all(math.isfinite(m["loss_mask"]) for m in train_rows)
    assert max(m["iteration"] for m in train_rows) == 1  # two iterations: 0 and 1
    results = maskrcnn.read_results(out)
    assert {"segm", "bbox"} <= set(results) and isinstance(results["segm"]["AP"], float)
    assert json.loads((out / maskrcnn.RESULTS_FILE).read_text())["eval_json"] == os.path.abspath(json_file)
    assert (out / "model_final.pth").is_file() and (out / "config.yaml").is_file()  # default_setup saved it
    assert (out / "inference" / maskrcnn.EVAL_NAME / "coco_instances_results.json").is_file()
