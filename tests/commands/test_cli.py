"""``box2seg`` dispatch (box2seg.cli): a static table of subcommands, only the chosen one's module imported,
``--coco-dataset`` on every subcommand."""
import os
import subprocess
import sys

import pytest

from box2seg import cli

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
