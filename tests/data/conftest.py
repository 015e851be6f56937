"""Shared by the data tests: datasets registered for one test (the scenes themselves are in tests/conftest.py)."""
import uuid

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog


@pytest.fixture
def registered():
    names = []

    def register(dicts, classes=("a", "b", "c")):
        name = f"test_grabcut_{uuid.uuid4().hex[:8]}"
        DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])
        MetadataCatalog.get(name).set(thing_classes=list(classes))
        names.append(name)
        return name

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
