"""A local Ray cluster that listens on 127.0.0.1 only (a job on a laptop or a shared login node opens no
port to the network). Ray reads its single-machine switch once, when it is imported, so this must run
before the first ``import ray``."""
import os
import sys

__all__ = ["LOOPBACK_ENV", "prepare_ray_import"]

# "0": a node advertises and binds the loopback address (Ray's single-machine mode) instead of the machine's
# network address on every interface.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def prepare_ray_import(address=None):
    """Without a cluster ``address``, ask for the loopback-only mode if ray is not imported yet. Returns
    whether the mode holds (False: ray was imported before without it; the caller warns)."""
    if address:
        return True
    if "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ENV, "0")
    return os.environ.get(LOOPBACK_ENV) == "0"
