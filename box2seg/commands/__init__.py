"""One module per ``box2seg`` subcommand, the only place (with ``box2seg/cli.py``) that argparse lives, as
detectron2 keeps it in ``engine/defaults.py``: ``add_arguments(parser)`` fills the subcommand's parser and
``main(args) -> int`` runs it on the library's functions. ``cli.py`` adds the repeatable
``--coco-dataset NAME=JSON:IMAGE_ROOT`` and ``--openimages-dataset NAME=BOXES.csv:IMAGE_ROOT`` flags to every
subcommand (:func:`add_dataset_arguments`); ``main`` hands them to
``box2seg.engine.setup_cfg(..., coco_datasets=args.coco_dataset, openimages_datasets=args.openimages_dataset)``,
which stores them in the config (DATASETS.COCO_FORMAT, DATASETS.OPENIMAGES_FORMAT) and registers them.
``predict`` and ``visualize --config-file`` build their config with ``setup_predict_cfg`` and register
the Open Images ones themselves, first.

Config overrides (bare ``KEY VALUE`` pairs): :func:`add_overrides_argument`. ``cli.main`` moves the flags
a user put after the pairs in front of them (:func:`flags_before_overrides`), so ``box2seg export
MODEL.WEIGHTS w.pth --dataset d`` parses ``--dataset`` instead of swallowing it into the override list.
This package imports nothing, so building the top-level parser stays fast."""
import argparse
import re

__all__ = ["add_coco_dataset_argument", "add_openimages_dataset_argument", "add_dataset_arguments",
           "add_overrides_argument", "flags_before_overrides", "overrides_after_separator"]


def add_coco_dataset_argument(parser):
    parser.add_argument(
        "--coco-dataset",
        action="append",
        default=[],
        metavar="NAME=JSON:IMAGE_ROOT",
        help="register a COCO-format box dataset under NAME before running (repeatable)",
    )


def add_openimages_dataset_argument(parser):
    parser.add_argument(
        "--openimages-dataset",
        action="append",
        default=[],
        metavar="NAME=BOXES.csv:IMAGE_ROOT",
        help="register an Open Images boxes CSV under NAME before running (repeatable; the class "
             "descriptions CSV beside it is used, else the CSV's LabelNames are the classes)",
    )


def add_dataset_arguments(parser):
    """The dataset flags every subcommand takes."""
    add_coco_dataset_argument(parser)
    add_openimages_dataset_argument(parser)


def add_overrides_argument(parser, help="config overrides, e.g. MODEL.WEIGHTS output/model_final.pth"):
    """The bare ``KEY VALUE ...`` config overrides, as detectron2's ``default_argument_parser`` takes them.
    They may stand anywhere on the line: ``cli.main`` parses the flags placed after them."""
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE", help=help)


def overrides_after_separator(opts):
    """A ``REMAINDER`` list of config overrides without the ``--`` that ends a flag of several values before
    them (``--variant NAME K V -- K V``): argparse keeps that ``--`` in the list."""
    return list(opts[1:]) if list(opts[:1]) == ["--"] else list(opts)


# A yacs config key (MODEL.WEIGHTS, SOLVER.BASE_LR): ends the values of a flag taking several.
_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")


def _option_actions(parser):
    """{option string: action} of ``parser``, its long options' unambiguous prefixes included (argparse
    accepts them)."""
    options = dict(parser._option_string_actions)
    if parser.allow_abbrev:
        longs = [o for o in options if o.startswith("--")]
        for option in longs:
            for end in range(3, len(option)):
                prefix = option[:end]
                if prefix not in options and sum(o.startswith(prefix) for o in longs) == 1:
                    options[prefix] = parser._option_string_actions[option]
    return options


def _takes(action):
    """How many words follow a flag: an int, or "?" (zero or one), "*" (any), "..." (the rest)."""
    nargs = action.nargs
    if nargs is None:
        return 1
    if isinstance(nargs, int):
        return nargs
    if nargs == argparse.OPTIONAL:
        return "?"
    if nargs == argparse.REMAINDER:
        return "..."
    return "*"  # "+" and "*"


def flags_before_overrides(parser, words):
    """``words`` (a subcommand's arguments) with every known flag of ``parser`` and its values moved in
    front of the other words, keeping each group's order. A word that is not a known flag (an override key
    or value, a negative number) stays among the overrides; ``--`` ends the reordering. A flag taking the
    rest of the line (predict's old ``--opts``) goes last, followed by all the overrides. A flag taking
    several values (``--input a.jpg b.jpg``) takes the words up to the next flag or config key (``MODEL.X``)."""
    options = _option_actions(parser)

    def flag_at(k):
        word = words[k]
        return options.get(word.partition("=")[0]) if word.startswith("-") else None

    flags, rest, remainder_flag, i = [], [], [], 0
    while i < len(words):
        word, action = words[i], flag_at(i)
        if word == "--":
            rest.extend(words[i:])
            break
        i += 1
        if action is None:
            rest.append(word)
            continue
        takes = _takes(action)
        if takes == "...":
            remainder_flag = [word]
            continue
        flags.append(word)
        if "=" in word:
            continue
        if takes == "?":
            if i < len(words) and not words[i].startswith("-"):
                flags.append(words[i])
                i += 1
        elif takes == "*":
            while i < len(words) and words[i] != "--" and flag_at(i) is None and not _CONFIG_KEY.match(words[i]):
                flags.append(words[i])
                i += 1
        else:
            flags.extend(words[i:i + takes])
            i += takes
    return flags + remainder_flag + rest
