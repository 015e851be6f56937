"""Engines that spread the per-image jobs over machines: :mod:`.ray_engine` (``--engine ray``, the optional
``ray`` extra). This package itself imports nothing heavy, so it costs nothing without Ray."""
import os
import sys

__all__ = ["LOOPBACK_ENV", "prepare_ray_import"]

# Ray reads this once, when it is imported: "0" makes a node advertise and bind the loopback address (its
# single-machine mode) instead of the machine's network address, on every interface.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def prepare_ray_import(address=None):
    """Before the first ``import ray``: without a cluster ``address`` the local cluster Ray starts listens on
    127.0.0.1 only (a job on a laptop or a shared login node opens no port to the network). Returns whether
    that holds: False when ray was imported already without it (the caller warns)."""
    if address:
        return True
    if "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ENV, "0")
    return os.environ.get(LOOPBACK_ENV) == "0"
