"""The ``box2seg`` command: dispatch to one module of :mod:`box2seg.commands` per subcommand.

The top-level parser is built from the static table below, and only the chosen subcommand's module is
imported (its ``add_arguments`` fills its parser, its ``main`` runs), so ``box2seg --help`` imports no
command module. Every subcommand accepts the repeatable ``--coco-dataset NAME=JSON:IMAGE_ROOT`` and
``--openimages-dataset NAME=BOXES.csv:IMAGE_ROOT`` flags, and config overrides (``KEY VALUE`` pairs) may
stand anywhere on the line: the flags after them are parsed as flags.

User errors (a bad dataset, file, score or export request: :data:`USER_ERRORS`, an unknown dataset name,
a bad config override) print one line, ``box2seg <command>: error: <message>``, and exit 2, as argparse's
own errors do; anything else is a bug and keeps its traceback. ``--debug`` (or ``BOX2SEG_DEBUG=1``) shows
the traceback of user errors too.
"""
import argparse
import importlib
import logging
import os
import re
import sys

from .commands import add_coco_dataset_argument, add_dataset_arguments, flags_before_overrides
from .data.datasets.common import UnknownDatasetError, unknown_dataset_message

__all__ = ["COMMANDS", "USER_ERRORS", "build_parser", "parse_args", "main", "add_coco_dataset_argument", "user_error_message"]

# (name, module, one-line help)
COMMANDS = (
    ("prepare-grabcut", "box2seg.commands.prepare_grabcut",
     "precompute GrabCut pseudo-labels for a dataset (parallel, cached, resumable)"),
    ("adapt", "box2seg.commands.adapt",
     "fine-tune a trained model on the boxes of the images it will label (test-time adaptation)"),
    ("export", "box2seg.commands.export",
     "export one pseudo-mask per box (COCO JSON, RLE) and semantic label PNGs from a trained model "
     "(resumable, shardable)"),
    ("score", "box2seg.commands.score",
     "score a pseudo-mask COCO file against ground-truth masks of the same boxes (instance IoU, semantic mIoU)"),
    ("predict", "box2seg.commands.predict",
     "segment images with a trained Box2Seg model: semantic label PNGs and overlays"),
    ("visualize", "box2seg.commands.visualize",
     "one PNG grid per dataset image: boxes, pseudo-masks, prediction, attention maps"),
    ("train-maskrcnn", "box2seg.commands.train_maskrcnn",
     "train detectron2's Mask R-CNN on pseudo-masks; segm/bbox AP on true masks"),
)

# The project's user-error exception types, (module, class name): the message names the file, record or
# key at fault, so a traceback adds nothing. Looked up in sys.modules when an error is caught (a module
# that was never imported cannot have raised it), so none is imported for --help.
USER_ERRORS = (
    ("box2seg.data.datasets.common", "DatasetError"),  # UnknownDatasetError included
    ("box2seg.data.images", "ImageReadError"),
    ("box2seg.data.cache", "CacheBusyError"),
    ("box2seg.evaluation.score", "ScoreError"),
    ("box2seg.export.folder", "ExportError"),
    ("box2seg.engine.weights", "PartialWeightsError"),
    ("box2seg.engine.data", "GrabCutNotPreparedError"),
    ("box2seg.engine.evaluators", "NothingToEvaluateError"),
    ("box2seg.modeling.checks", "ConfigValueError"),
    ("box2seg.data.grabcut_job", "GrabCutJobError"),
)
# Or: an exception class with ``user_error = True`` (a new module's errors, without an entry above).

# detectron2's DatasetCatalog.get, and engine.check_num_classes until it raises UnknownDatasetError.
_UNREGISTERED = re.compile(r"^[Dd]ataset '(?P<name>[^']*)' is not registered(!|;)")


def _chosen_command(argv):
    """The subcommand named on the line: the first word that is not an option (the top-level parser has
    no option taking a value), or None."""
    return next((word for word in argv if not word.startswith("-")), None)


def build_parser(command=None):
    """The ``box2seg`` parser; only ``command``'s subparser gets its arguments (and its module imported)."""
    parser = argparse.ArgumentParser(prog="box2seg", description="Box2Seg: segmentation from bounding boxes.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of user errors too (or set BOX2SEG_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name == command:
            add_dataset_arguments(p)
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                           help="show the traceback of user errors too (or set BOX2SEG_DEBUG=1)")
            importlib.import_module(module).add_arguments(p)
    return parser


def _subparser(parser, command):
    for action in parser._subparsers._group_actions:
        if command in getattr(action, "choices", {}):
            return action.choices[command]
    return None


def _reorder(parser, argv, command):
    """argv with the chosen subcommand's flags moved in front of its override pairs."""
    if command is None or command not in argv:
        return argv
    sub = _subparser(parser, command)
    if sub is None:
        return argv
    at = argv.index(command) + 1
    return argv[:at] + flags_before_overrides(sub, argv[at:])


def _user_error_types():
    types = []
    for module, name in USER_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            types.append(cls)
    return tuple(types)


def _raised_in_yacs(error):
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.replace("\\", "/").endswith("yacs/config.py")


def user_error_message(error, argv=()):
    """The one-line message of a user error, or None for an exception that is a bug (keeps its traceback)."""
    if isinstance(error, UnknownDatasetError):
        return str(error)
    if isinstance(error, KeyError) and error.args and isinstance(error.args[0], str):
        match = _UNREGISTERED.match(error.args[0])
        if match:
            return unknown_dataset_message(match.group("name"))
    if isinstance(error, _user_error_types()) or getattr(type(error), "user_error", False) is True:
        return str(error)
    if isinstance(error, (KeyError, ValueError, AssertionError)) and _raised_in_yacs(error):
        # A bad override or config file: "Non-existent config key", "Override list has odd length", types.
        text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        return f"config: {text}"
    if isinstance(error, FileNotFoundError) and error.filename and str(error.filename) in set(argv):
        return f"{error.strerror or 'no such file'}: {error.filename}"
    return None


def parse_args(argv):
    """The parsed line, flags placed after override pairs included (``export KEY VALUE --dataset d``)."""
    command = _chosen_command(argv)
    parser = build_parser(command)
    return parser.parse_args(_reorder(parser, list(argv), command))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("BOX2SEG_DEBUG", "") not in ("", "0")
    try:
        return importlib.import_module(args._module).main(args) or 0
    except Exception as error:
        message = None if debug else user_error_message(error, argv)
        if message is None:
            raise
        print(f"box2seg {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
