"""``box2seg export``'s command line (box2seg.commands.export): option errors exit 2 with a message."""
import argparse

from box2seg.commands import add_coco_dataset_argument
from box2seg.commands.export import add_arguments, main


def test_cli_errors(capsys):
    parser = argparse.ArgumentParser()
    add_coco_dataset_argument(parser)
    add_arguments(parser)
    assert main(parser.parse_args(["--merge", "x", "--dataset", "d"])) == 2
    assert "--merge DIR takes no other option" in capsys.readouterr().out
    assert main(parser.parse_args(["--dataset", "d"])) == 2
    assert "missing --config-file, --output" in capsys.readouterr().out
