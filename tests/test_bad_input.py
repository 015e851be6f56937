"""First contact (issue 13 item 10): what a new user reads and runs before any code of theirs does.
README's steps register the dataset they name, `make` says how to get `box2seg` on PATH, the repository
carries its license and how to cite the paper."""
import os
import re
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(name):
    with open(os.path.join(REPO, name), encoding="utf-8") as f:
        return f.read()


def _section(text, title):
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def _commands(section):
    """The shell commands of a README section's code blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_readme_steps_register_the_dataset_they_name():
    commands = _commands(_section(_read("README.md"), "Using it on your data"))
    assert commands, "no commands in README's 'Using it on your data'"
    variables = dict(re.match(r"^(\w+)=(.*)$", c).groups() for c in commands if re.match(r"^\w+=", c))
    naming = [c for c in commands if "mydata" in c and not re.match(r"^\w+=", c)]
    assert len(naming) >= 4
    for command in naming:
        expanded = re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), command)
        assert re.search(r"--(coco|openimages)-dataset mydata=", expanded), f"does not register mydata: {command}"


def test_readme_says_how_to_activate_the_environment():
    assert "source .venv/bin/activate" in _section(_read("README.md"), "Two commands")


def test_make_prints_how_to_activate():
    out = subprocess.run(["make", "-n", "setup"], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"make unavailable: {out.stderr[-200:]}")
    assert "source .venv/bin/activate" in out.stdout


def test_license_and_citation():
    license_text = _read("LICENSE")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    citing = _section(_read("README.md"), "Citing")
    assert "@inproceedings{kulharia2020box2seg" in citing and "ECCV" in citing
    for author in ("Kulharia", "Chandra", "Agrawal", "Torr", "Tyagi"):
        assert author in citing
    assert "Attention Weighted Loss and Discriminative Feature Learning" in citing
    assert "@misc{wu2019detectron2" in citing
