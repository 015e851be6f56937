"""Engines that run the per-image jobs: the local process pool / this process (the defaults, no extra
needed) or Ray (:mod:`.ray_engine`, the optional ``ray`` extra: ``pip install -e '.[ray]'``).

:func:`grabcut_engine` and :func:`export_engine` turn the commands' ``--engine`` / ``--address`` into an
engine object for :func:`box2seg.data.grabcut_job.prepare_dataset` and
:func:`box2seg.export.export_dataset`; every engine writes the same files.
"""
from ..data.grabcut_job import LocalEngine
from ..export.inference import LocalExportEngine
from .loopback import LOOPBACK_ENV, prepare_ray_import

__all__ = ["ENGINES", "grabcut_engine", "export_engine", "prepare_ray_import", "LOOPBACK_ENV"]

ENGINES = ("local", "ray")


def _ray_engines(address):
    """(RayGrabCutEngine, RayExportEngine), imported only for ``--engine ray``: ray costs a second at import,
    and the loopback mode must be chosen (from ``address``) before ray is imported."""
    prepare_ray_import(address)
    from .ray_engine import RayExportEngine, RayGrabCutEngine

    return RayGrabCutEngine, RayExportEngine


def grabcut_engine(name="local", address=None):
    """The engine of ``prepare-grabcut --engine NAME [--address ADDR]``."""
    if name == "local":
        return LocalEngine()
    if name == "ray":
        return _ray_engines(address)[0](address=address)
    raise ValueError(f"unknown engine {name!r}: expected one of {', '.join(ENGINES)}")


def export_engine(name="local", address=None, workers=None, allow_partial_weights=False):
    """The engine of ``export --engine NAME [--address ADDR] [--workers N]``."""
    if name == "local":
        return LocalExportEngine(allow_partial_weights=allow_partial_weights)
    if name == "ray":
        return _ray_engines(address)[1](address=address, actors=workers,
                                        allow_partial_weights=allow_partial_weights)
    raise ValueError(f"unknown engine {name!r}: expected one of {', '.join(ENGINES)}")
