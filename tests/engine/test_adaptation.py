"""box2seg.engine.adaptation and ``box2seg adapt``: a trained model fine-tuned on another dataset's boxes (its
GrabCut labels prepared on the way), in a folder named by what it came from, reused when finished; requests
that cannot adapt refused by name."""
import json
import os

import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import pytest
import torch

from box2seg import cli
from box2seg.engine import (AdaptationError, adapt_weights, adaptation_config, adaptation_dir, prepare_caches,
                            setup_cfg, train_unless_finished)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")


def _cfg(specs, train, out, *opts):
    return setup_cfg(TINY, ["DATASETS.TRAIN", f"('{train}',)", "DATASETS.TEST", f"('{train}',)", "SOLVER.MAX_ITER",
                            "1", "SEED", "0", "OUTPUT_DIR", str(out), *opts], specs)


@pytest.fixture
def trained(tmp_path, fresh_cache, make_tiny_coco, request):
    """A one-iteration model trained on one tiny dataset ("src"), and a second tiny dataset (other images, "new")
    to adapt to, registered under names of this test's own (a name is registered once per process)."""
    tag = request.node.name.split("_")[1]
    specs, names = [], {}
    for key, seed in (("src", 0), ("new", 1)):
        name = names[key] = f"adapt_{tag}_{key}"
        json_path, image_root = make_tiny_coco(str(tmp_path / name), seed=seed)
        specs.append(f"{name}={json_path}:{image_root}")
    cfg = _cfg(specs, names["src"], tmp_path / "base")
    prepare_caches(cfg, [names["src"]], grabcut=True)  # the new dataset's labels are left to the adaptation
    return specs, names["src"], names["new"], train_unless_finished(cfg)


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_adaptation_fine_tunes_on_the_new_images_boxes(trained, tmp_path):
    specs, src, new, weights = trained
    cfg = _cfg(specs, src, tmp_path / "base", "ADAPT.MAX_ITER", "2", "ADAPT.BASE_LR", "0.01")
    adapted = adapt_weights(cfg, [new], weights, str(tmp_path / "adapted"))
    folder = adaptation_dir(str(tmp_path / "adapted"), cfg, [new], weights)
    assert adapted == os.path.join(folder, "model_final.pth") and os.path.isfile(adapted)
    with open(os.path.join(folder, "adaptation.json")) as f:
        record = json.load(f)
    assert record["datasets"] == [new] and record["weights"] == os.path.abspath(weights)
    assert record["adapt"] == {"MAX_ITER": 2, "BASE_LR": 0.01}
    acfg = adaptation_config(cfg, [new], weights, folder)
    assert acfg.DATASETS.TRAIN == (new,) and acfg.MODEL.WEIGHTS == weights and acfg.SOLVER.MAX_ITER == 2
    assert acfg.SOLVER.BASE_LR == 0.01 and acfg.SOLVER.WARMUP_ITERS == 1 and acfg.OUTPUT_DIR == folder
    before, after = _state(weights), _state(adapted)
    assert after["iteration"] == 1  # two iterations from the loaded weights, not a resumed schedule
    changed = [k for k, v in before["model"].items() if not torch.equal(v, after["model"][k])]
    assert any(k.startswith("decoders.") for k in changed), changed
    assert set(before["model"]) == set(after["model"])
    mtime = os.stat(adapted).st_mtime_ns
    assert adapt_weights(cfg, [new], weights, str(tmp_path / "adapted")) == adapted  # finished: reused
    assert os.stat(adapted).st_mtime_ns == mtime
    other = _cfg(specs, src, tmp_path / "base", "ADAPT.MAX_ITER", "3")
    assert adaptation_dir(str(tmp_path / "adapted"), other, [new], weights) != folder
    assert adaptation_dir(str(tmp_path / "adapted"), cfg, [src], weights) != folder


def test_no_adaptation_keeps_the_weights_and_bad_requests_are_refused(trained, tmp_path):
    specs, src, new, weights = trained
    cfg = _cfg(specs, src, tmp_path / "base")
    assert adapt_weights(cfg, [new], weights, str(tmp_path / "adapted")) == weights  # ADAPT.MAX_ITER 0
    assert not os.path.exists(tmp_path / "adapted")
    cfg = _cfg(specs, src, tmp_path / "base", "ADAPT.MAX_ITER", "2")
    with pytest.raises(AdaptationError, match="no_such.pth.* is not a file"):
        adapt_weights(cfg, [new], str(tmp_path / "no_such.pth"), str(tmp_path / "adapted"))
    wrong = _cfg(specs, src, tmp_path / "base", "ADAPT.MAX_ITER", "2", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "7")
    with pytest.raises(AdaptationError, match=f"NUM_CLASSES=7 but dataset '{new}' has 3"):
        adapt_weights(wrong, [new], weights, str(tmp_path / "adapted"))


def test_adapt_command(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BOX2SEG_DEBUG", raising=False)
    specs, src, new, weights = trained
    base = ["adapt", "--config-file", TINY, "--coco-dataset", specs[1], "--dataset", new, "--output",
            str(tmp_path / "cmd"), "MODEL.WEIGHTS", weights, "SOLVER.IMS_PER_BATCH", "2"]
    assert cli.main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ADAPT.MAX_ITER 0: nothing to adapt" in err[0]
    assert cli.main(base + ["ADAPT.MAX_ITER", "1"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("adapted weights: ")]
    assert line and os.path.isfile(line[0].split(": ", 1)[1])
