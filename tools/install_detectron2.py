#!/usr/bin/env python
"""Install detectron2 v0.6's Python package (no C++ ops) into the running interpreter's environment.

detectron2 is not on PyPI. The sdist ``pb1-detectron2==0.6`` carries v0.6's Python files (identical to
upstream tag v0.6) but not its C++ sources, so its own setup.py cannot build. This script fetches the
sdist with pip, replaces its setup.py with one that packages only the Python code -- ``detectron2`` plus
``detectron2.projects.{deeplab,point_rend,panoptic_deeplab}`` mapped as upstream's setup.py maps them --
and installs it with v0.6's runtime dependencies minus its ``black`` pin. The missing ``detectron2._C``
and the other v0.6-on-a-modern-stack issues are handled at run time by ``box2seg.compat``.

Usage: python tools/install_detectron2.py [--sdist-dir DIR]
"""
import argparse
import glob
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request

SDIST = "pb1-detectron2==0.6"
SDIST_FILES = ("pb1-detectron2-0.6.tar.gz", "pb1_detectron2-0.6.tar.gz")
SIMPLE_INDEX = "https://pypi.org/simple/pb1-detectron2/"

# detectron2 v0.6's install_requires, without black==21.4b2 (a formatter pin that breaks modern stacks).
RUNTIME_REQUIRES = [
    "Pillow>=7.1",
    "matplotlib",
    "pycocotools>=2.0.2",
    "termcolor>=1.1",
    "yacs>=0.1.8",
    "tabulate",
    "cloudpickle",
    "tqdm>4.29.0",
    "tensorboard",
    "fvcore>=0.1.5,<0.1.6",
    "iopath>=0.1.7,<0.1.10",
    "future",
    "pydot",
    "omegaconf>=2.1",
    "hydra-core>=1.1",
]

PROJECTS = {
    "detectron2.projects.point_rend": "projects/PointRend/point_rend",
    "detectron2.projects.deeplab": "projects/DeepLab/deeplab",
    "detectron2.projects.panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
}

PYTHON_ONLY_SETUP = '''\
from setuptools import find_packages, setup

PROJECTS = {projects!r}
setup(
    name="pb1-detectron2",
    version="0.6",
    description="detectron2 v0.6, Python files only (no C++ ops), installed by box2seg",
    packages=find_packages(include=("detectron2", "detectron2.*")) + list(PROJECTS),
    package_dir=PROJECTS,
    package_data={{"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]}},
    python_requires=">=3.6",
    install_requires={requires!r},
)
'''


def pip(*args):
    cmd = [sys.executable, "-m", "pip", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.check_call(cmd)


def download_from_index(dest, index=SIMPLE_INDEX):
    """Fetch the sdist through the package index's JSON API (PEP 691), checking its sha256.

    ``pip download`` prepares the sdist's metadata, and recent pips refuse it there: its ``all`` extra
    names panopticapi by direct URL, which PyPI distributions may not declare."""
    request = urllib.request.Request(index, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    (entry,) = [f for f in files if f["filename"] in SDIST_FILES]
    target = os.path.join(dest, entry["filename"])
    with urllib.request.urlopen(entry["url"], timeout=300) as response:
        data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["hashes"]["sha256"]:
        raise RuntimeError(f"{entry['url']}: sha256 {digest} does not match the index's {entry['hashes']['sha256']}")
    with open(target + ".part", "wb") as f:
        f.write(data)
    os.replace(target + ".part", target)
    return target


def fetch_sdist(dest):
    existing = [os.path.join(dest, name) for name in SDIST_FILES if os.path.exists(os.path.join(dest, name))]
    if existing:
        return existing[0]
    try:
        return download_from_index(dest)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"install_detectron2: index download failed ({e}); trying pip download", flush=True)
    # --no-build-isolation: the sdist's setup.py imports torch to read its metadata.
    pip("download", "--no-deps", "--no-build-isolation", "--no-binary", ":all:", SDIST, "-d", dest)
    existing = glob.glob(os.path.join(dest, "pb1*detectron2-0.6.tar.gz"))
    if not existing:
        sys.exit(f"install_detectron2: pip did not leave the {SDIST} sdist in {dest}")
    return existing[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sdist-dir", default=os.path.join(".cache", "sdist"), help="where the sdist is kept")
    args = parser.parse_args()
    os.makedirs(args.sdist_dir, exist_ok=True)
    sdist = fetch_sdist(args.sdist_dir)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(tmp)
        (root,) = [os.path.join(tmp, d) for d in os.listdir(tmp)]
        with open(os.path.join(root, "setup.py"), "w") as f:
            f.write(PYTHON_ONLY_SETUP.format(projects=PROJECTS, requires=RUNTIME_REQUIRES))
        for stale in ("setup.cfg", "pyproject.toml"):
            if os.path.exists(os.path.join(root, stale)):
                os.remove(os.path.join(root, stale))
        pip("install", "--no-build-isolation", root)


if __name__ == "__main__":
    main()
