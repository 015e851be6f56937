"""detectron2 v0.6 on a modern stack; a no-op where the installed detectron2 needs no fix.

Every fix is guarded by a feature test, never by a version string (upstream detectron2 installed from
git also calls itself 0.6), so with upstream detectron2 each one changes nothing. ``apply()`` must run
before any detectron2 module is imported: with Pillow >= 10, ``import detectron2.data`` fails on
``Image.LINEAR`` at class-definition time. ``box2seg/__init__.py`` calls it first thing.

The fixes:
- numpy >= 1.24 removed the aliases ``np.int``, ``np.bool``, ``np.float``, ``np.str`` that v0.6 uses;
- Pillow >= 10 removed ``Image.LINEAR`` (now ``Image.BILINEAR``);
- setuptools >= 81 no longer ships ``pkg_resources`` (``detectron2.model_zoo`` imports it);
- the sdist has no compiled ``detectron2._C``; ``detectron2.layers`` imports it at module level.
  A stand-in module raises a clear error if a C++-only op (deformable / rotated ops) is *called*;
- torch >= 2.6 loads with ``weights_only=True`` by default, which refuses fvcore's checkpoints
  (optimizer, scheduler state). The checkpointer loads the user's own checkpoint files, so it asks for
  full unpickling explicitly;
- v0.6's DefaultTrainer checkpoints only the iteration and hook states, not its inner trainer's
  optimizer, so ``--resume`` restarted momentum from zero; upstream saves it under ``_trainer``;
- v0.6's ``launch`` workers assert CUDA and use NCCL; without a GPU they now use GLOO, so multi-process
  training runs (and is tested) on CPU. ``create_ddp_model`` passes ``device_ids`` only for GPU models,
  and ``find_unused_parameters=True`` for models that set ``ddp_find_unused_parameters`` (Box2Seg's
  training phases leave branches without gradients in some iterations);
- ``fvcore.nn.focal_loss`` and ``detectron2.modeling.box_regression`` call ``torch.jit.script`` at import
  time, and recent torch warns ``torch.jit.script is deprecated`` (a FutureWarning) for it: every box2seg
  command, ``--help`` included, printed it twice. Those two modules are imported here with exactly that
  warning silenced; the filter is scoped to the import
  (``warnings.catch_warnings``), so the user's own ``torch.jit.script`` calls still warn;
- v0.6's SemSegEvaluator divides the mIoU by the number of classes present in the ground truth *or*
  the prediction; upstream fixed it to the classes with ground truth. The fixed formula is applied when
  the buggy one is detected in the source.

Only detectron2's and fvcore's own modules are imported inside the fix functions: they may be imported
only once the fixes before them are in place (numpy aliases, Image.LINEAR, pkg_resources, detectron2._C).
"""
import datetime
import importlib
import importlib.resources
import importlib.util
import inspect
import logging
import os
import sys
import types
import warnings

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

logger = logging.getLogger(__name__)

_APPLIED = []


def _numpy_aliases():
    for name, value in (("int", int), ("bool", bool), ("float", float), ("str", str)):
        if name not in vars(np):  # vars(): no FutureWarning from numpy's module __getattr__
            setattr(np, name, value)
            _APPLIED.append(f"np.{name}")


def _pillow_linear():
    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR
        _APPLIED.append("PIL.Image.LINEAR")


def _pkg_resources():
    if importlib.util.find_spec("pkg_resources") is not None:
        return
    module = types.ModuleType("pkg_resources")

    def resource_filename(package, resource):
        return str(importlib.resources.files(package).joinpath(resource))

    def resource_exists(package, resource):
        return os.path.exists(resource_filename(package, resource))

    module.resource_filename = resource_filename
    module.resource_exists = resource_exists
    sys.modules["pkg_resources"] = module
    _APPLIED.append("pkg_resources")


class _MissingCppOps(types.ModuleType):
    """Stands in for ``detectron2._C`` when detectron2 was installed without its C++ ops. The build
    descriptors that ``collect_env_info`` (``default_setup``) reads say so; any op raises a clear error."""

    @staticmethod
    def get_compiler_version():
        return "none: detectron2 installed without its C++ ops (box2seg)"

    @staticmethod
    def get_cuda_version():
        return "none: detectron2 installed without its C++ ops (box2seg)"

    @staticmethod
    def has_cuda():
        return False

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(
            f"detectron2._C.{name} is a compiled C++ op, and this detectron2 was installed without its C++ "
            "ops (box2seg's pure-Python install). Box2Seg does not need it; for deformable or rotated ops, "
            "install detectron2 from source: pip install --no-build-isolation "
            "'git+https://github.com/facebookresearch/detectron2.git'"
        )


def _detectron2_c():
    if "detectron2._C" in sys.modules:
        return
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        return
    for location in spec.submodule_search_locations:
        for entry in os.listdir(location):
            if entry.startswith("_C.") and entry.endswith((".so", ".pyd")):
                return  # a compiled build: nothing to do
    sys.modules["detectron2._C"] = _MissingCppOps("detectron2._C")
    _APPLIED.append("detectron2._C")


def has_cpp_ops():
    """Whether detectron2's compiled ops exist (COCOEvaluator's fast path needs them)."""
    return not isinstance(sys.modules.get("detectron2._C"), _MissingCppOps)


# The one warning silenced: torch's deprecation of torch.jit.script, raised by fvcore's import-time calls.
JIT_SCRIPT_WARNING = r"`torch\.jit\.script` is deprecated"


# The modules that call torch.jit.script when imported (fvcore's focal losses, detectron2's box coders).
JIT_SCRIPTING_MODULES = ("fvcore.nn.focal_loss", "detectron2.modeling.box_regression")


def _quiet_jit_script_imports():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=JIT_SCRIPT_WARNING, category=FutureWarning)
        for name in JIT_SCRIPTING_MODULES:
            if name not in sys.modules and importlib.util.find_spec(name.partition(".")[0]) is not None:
                importlib.import_module(name)  # detectron2 / fvcore: after the fixes before this one


def _checkpoint_weights_only():
    if "weights_only" not in inspect.signature(torch.load).parameters:
        return
    from fvcore.common import checkpoint as fv_checkpoint  # fvcore: after the fixes

    source = inspect.getsource(fv_checkpoint.Checkpointer._load_file)
    if "weights_only" in source:
        return

    def _load_file(self, f):
        # The user's own checkpoint (model, optimizer, scheduler, iteration): trusted, fully unpickled.
        return torch.load(f, map_location=torch.device("cpu"), weights_only=False)

    fv_checkpoint.Checkpointer._load_file = _load_file
    _APPLIED.append("fvcore Checkpointer weights_only")


def _trainer_optimizer_state():
    from detectron2.engine import defaults  # detectron2: after the fixes

    cls = defaults.DefaultTrainer
    if "state_dict" in vars(cls):
        return

    def state_dict(self):
        state = super(cls, self).state_dict()
        state["_trainer"] = self._trainer.state_dict()
        return state

    def load_state_dict(self, state):
        super(cls, self).load_state_dict(state)
        if "_trainer" in state:  # checkpoints written before this fix have no optimizer state
            self._trainer.load_state_dict(state["_trainer"])

    cls.state_dict = state_dict
    cls.load_state_dict = load_state_dict
    _APPLIED.append("DefaultTrainer optimizer state")


def _cpu_distributed_worker(
    local_rank, main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout=None
):
    """detectron2's launch worker, choosing GLOO when there is no GPU."""
    from detectron2.utils import comm  # detectron2: after the fixes

    has_gpu = torch.cuda.is_available()
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    dist.init_process_group(
        backend="NCCL" if has_gpu else "GLOO",
        init_method=dist_url,
        world_size=world_size,
        rank=global_rank,
        timeout=timeout or datetime.timedelta(minutes=30),
    )
    num_machines = world_size // num_gpus_per_machine
    for i in range(num_machines):
        group = dist.new_group(list(range(i * num_gpus_per_machine, (i + 1) * num_gpus_per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    if has_gpu:
        torch.cuda.set_device(local_rank)
    comm.synchronize()
    main_func(*args)


def _cpu_launch():
    from detectron2.engine import defaults  # detectron2: after the fixes

    launch = importlib.import_module("detectron2.engine.launch")  # the module, not the function
    worker = launch._distributed_worker
    if worker is not _cpu_distributed_worker and 'backend="NCCL"' in inspect.getsource(worker):
        launch._distributed_worker = _cpu_distributed_worker
        _APPLIED.append("launch on CPU (GLOO)")

    create = defaults.create_ddp_model
    if getattr(create, "_box2seg_fixed", False):
        return

    def create_ddp_model(model, **kwargs):
        params = list(model.parameters())
        if "device_ids" not in kwargs and params and params[0].device.type == "cpu":
            kwargs["device_ids"] = None  # CPU DistributedDataParallel takes no device ids
        if getattr(model, "ddp_find_unused_parameters", False):
            # A model whose iterations leave some parameters without gradients (Box2Seg's pre-training and
            # attention phases, switched-off loss terms) says so; DDP otherwise fails at the next iteration.
            kwargs.setdefault("find_unused_parameters", True)
        return create(model, **kwargs)

    create_ddp_model._box2seg_fixed = True
    defaults.create_ddp_model = create_ddp_model


def fixed_miou(conf_matrix):
    """mIoU over the classes with at least one ground-truth pixel (ignore row/column last)."""
    conf = np.asarray(conf_matrix, dtype=np.float64)[:-1, :-1]
    tp = np.diagonal(conf)
    pos_gt = conf.sum(axis=0)  # v0.6 indexes the matrix as [pred, gt]
    pos_pred = conf.sum(axis=1)
    valid = pos_gt > 0
    if not valid.any():
        return float("nan")
    return float(np.mean(tp[valid] / (pos_gt + pos_pred - tp)[valid]))


def _sem_seg_miou():
    from detectron2.evaluation import sem_seg_evaluation  # detectron2: after the fixes

    cls = sem_seg_evaluation.SemSegEvaluator
    if getattr(cls.evaluate, "_box2seg_fixed", False):
        return
    if "/ np.sum(iou_valid)" not in inspect.getsource(cls.evaluate):
        return
    original = cls.evaluate

    def evaluate(self):
        results = original(self)
        if results is not None and "sem_seg" in results:
            results["sem_seg"]["mIoU"] = 100 * fixed_miou(self._conf_matrix)
        return results

    evaluate._box2seg_fixed = True
    cls.evaluate = evaluate
    _APPLIED.append("SemSegEvaluator mIoU")


def check_detectron2():
    if importlib.util.find_spec("detectron2") is None:
        raise ImportError(
            "box2seg needs detectron2, which is not on PyPI. Either run `make test` / `make demo` in the "
            "box2seg checkout (installs detectron2 v0.6's Python package into .venv), or run "
            "`python tools/install_detectron2.py`, or install upstream with internet access: "
            "pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'"
        )


def apply():
    """Apply every needed fix once. Safe to call repeatedly."""
    if getattr(apply, "_done", False):
        return
    check_detectron2()
    if any(name == "detectron2.data" or name.startswith("detectron2.data.") for name in sys.modules):
        logger.warning("box2seg: detectron2.data was imported before box2seg; import box2seg first.")
    _numpy_aliases()
    _pillow_linear()
    _pkg_resources()
    _detectron2_c()
    _quiet_jit_script_imports()
    _checkpoint_weights_only()
    _sem_seg_miou()
    _trainer_optimizer_state()
    _cpu_launch()
    apply._done = True


def applied_fixes():
    """Names of the fixes this process needed (empty with upstream detectron2 on an old stack)."""
    return list(_APPLIED)
