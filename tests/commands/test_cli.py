"""``box2seg`` dispatch (box2seg.cli): a static table of subcommands, only the chosen one's module imported,
``--coco-dataset`` / ``--openimages-dataset`` on every subcommand, flags after override pairs, user errors
as one line with exit 2."""
import argparse
import os
import subprocess
import sys

import pytest

from box2seg import cli
from box2seg.commands import overrides_after_separator
from box2seg.engine import setup_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMPORTED = """
import sys
import box2seg.cli as cli

def commands():
    return sorted(m for m in sys.modules if m.startswith("box2seg.commands."))

for argv in (["--help"], ["score", "--help"]):
    try:
        cli.main(argv)
    except SystemExit:
        pass
    print("IMPORTED", argv[0], commands())
"""


def test_help_imports_only_the_chosen_command():
    out = subprocess.run([sys.executable, "-c", IMPORTED], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("IMPORTED")]
    assert lines == ["IMPORTED --help []", "IMPORTED score ['box2seg.commands.score']"], out.stdout[-2000:]
    for name, _, help_text in cli.COMMANDS:  # the top-level help lists every subcommand anyway
        assert name in out.stdout


@pytest.mark.parametrize("name", [name for name, _, _ in cli.COMMANDS])
def test_every_subcommand_takes_coco_dataset(name, capsys):
    with pytest.raises(SystemExit):
        cli.build_parser(name).parse_args([name, "--help"])
    assert "--coco-dataset NAME=JSON:IMAGE_ROOT" in capsys.readouterr().out


def test_subcommands_parse():
    args = cli.build_parser("predict").parse_args(
        ["predict", "--coco-dataset", "d=a.json:img", "--config-file", "c.yaml", "--input", "x.png", "dir",
         "--output", "o", "--opts", "MODEL.WEIGHTS", "w.pth"])
    assert args.input == ["x.png", "dir"] and args.opts == ["MODEL.WEIGHTS", "w.pth"]
    assert args.coco_dataset == ["d=a.json:img"] and args._module == "box2seg.commands.predict"
    args = cli.build_parser("visualize").parse_args(
        ["visualize", "--dataset", "d", "--output", "o", "--config-file", "c.yaml", "MODEL.WEIGHTS", "w.pth"])
    assert args.opts == ["MODEL.WEIGHTS", "w.pth"] and args._module == "box2seg.commands.visualize"
    args = cli.build_parser("train-maskrcnn").parse_args(
        ["train-maskrcnn", "--config-file", "c.yaml", "--train-json", "p.json", "--image-root", "img", "--num-gpus",
         "2", "SOLVER.MAX_ITER", "10"])
    assert args.num_gpus == 2 and args.opts == ["SOLVER.MAX_ITER", "10"] and args.eval_json == ""
    assert args.coco_dataset == []


def test_unknown_command_is_refused(capsys):
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err


@pytest.mark.parametrize("name, argv, flag, value", [
    ("export", ["MODEL.WEIGHTS", "w.pth", "--dataset", "d", "--output", "o"], "dataset", "d"),
    ("visualize", ["MODEL.WEIGHTS", "w.pth", "--dataset", "d", "--output", "o"], "dataset", "d"),
    ("train-maskrcnn", ["SOLVER.MAX_ITER", "10", "--config-file", "c.yaml", "--train-json", "p.json",
                        "--image-root", "img", "--num-gpus=2"], "num_gpus", 2),
    ("predict", ["--config-file", "c.yaml", "--input", "a.png", "b.png", "MODEL.WEIGHTS", "w.pth",
                 "--output", "o"], "input", ["a.png", "b.png"]),
])
def test_flags_after_overrides_are_parsed_as_flags(name, argv, flag, value):
    # Before: the override list swallowed the flags ("Override list has odd length" or a missing flag).
    args = cli.parse_args([name, *argv, "--coco-dataset", "x=a.json:img"])
    assert getattr(args, flag) == value and args.coco_dataset == ["x=a.json:img"]
    overrides = list(args.opts) + list(getattr(args, "overrides", None) or [])  # predict: R1's positional
    assert overrides == (["SOLVER.MAX_ITER", "10"] if name == "train-maskrcnn" else ["MODEL.WEIGHTS", "w.pth"])


def test_reordering_keeps_negative_values_and_double_dash():
    args = cli.parse_args(["export", "SOLVER.BASE_LR", "-1", "--dataset", "d", "--", "--output", "x"])
    assert args.dataset == "d" and args.output == "" and args.opts == ["SOLVER.BASE_LR", "-1", "--", "--output", "x"]


@pytest.mark.parametrize("name", [name for name, _, _ in cli.COMMANDS])
def test_every_subcommand_takes_openimages_dataset(name, capsys):
    with pytest.raises(SystemExit):
        cli.build_parser(name).parse_args([name, "--help"])
    assert "--openimages-dataset NAME=BOXES.csv:IMAGE_ROOT" in capsys.readouterr().out


def test_user_errors_are_one_line_with_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BOX2SEG_DEBUG", raising=False)
    argv = ["score", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "p.json"),
            "--openimages-dataset", f"oi=${tmp_path}/nope.csv:{tmp_path}"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("box2seg score: error: dataset spec") and "nope.csv does not exist" in err[0]
    assert "Traceback" not in err[0]
    with pytest.raises(Exception, match="nope.csv does not exist"):
        cli.main(["--debug", *argv])  # --debug: the traceback
    monkeypatch.setenv("BOX2SEG_DEBUG", "1")
    with pytest.raises(Exception, match="nope.csv does not exist"):
        cli.main(argv)


def test_unknown_dataset_names_the_flag_not_every_builtin_name():
    message = cli.user_error_message(KeyError("Dataset 'mydata' is not registered! Available datasets are: a, b"))
    assert message.startswith("dataset 'mydata' is not registered") and "--coco-dataset mydata=" in message
    assert "Available" not in message and "coco_2017_val_panoptic" not in message
    assert cli.user_error_message(KeyError("some other key")) is None  # a bug: keeps its traceback
    assert cli.user_error_message(ValueError("boom")) is None


def test_bad_override_is_a_user_error():
    with pytest.raises(Exception) as caught:
        setup_cfg(opts=["MODEL.NO_SUCH_KEY", "1"])
    assert cli.user_error_message(caught.value) == "config: Non-existent key: MODEL.NO_SUCH_KEY"
    with pytest.raises(Exception) as caught:
        setup_cfg(opts=["SOLVER.MAX_ITER"])
    assert cli.user_error_message(caught.value).startswith("config: Override list has odd length")


def test_overrides_after_separator_drops_only_a_leading_separator():
    """The benchmarks' ``--variant NAME K V -- K V``: argparse's REMAINDER keeps the ``--``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", nargs="+", action="append", default=[])
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args(["--variant", "a", "K.A", "1", "--", "SOLVER.MAX_ITER", "2"])
    assert args.opts == ["--", "SOLVER.MAX_ITER", "2"]
    assert overrides_after_separator(args.opts) == ["SOLVER.MAX_ITER", "2"]
    assert overrides_after_separator(["SOLVER.MAX_ITER", "2"]) == ["SOLVER.MAX_ITER", "2"]
    assert overrides_after_separator(["K", "--"]) == ["K", "--"] and overrides_after_separator(()) == []
