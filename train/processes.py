"""Several training processes (`accelerate launch --num_processes N`): every process trains its
share of each batch, only the main process writes results, and the others wait for it.

Without a launcher this is one process and both helpers are no-ops. The state is accelerate's
`PartialState` (created on first use: with several processes that joins torch.distributed, gloo on
CPU), so the training loop's `Accelerator` and these helpers agree on who is main.
"""

from __future__ import annotations


def force_cpu() -> bool:
    """Whether accelerate must be told to run on the CPU: asked for (`ACCELERATE_USE_CPU`), or
    several processes were launched on a host without CUDA. Without the flag, accelerate leaves
    each launched process on its own (no process group): N processes would each train everything
    and race to write the same output, silently."""
    import os

    import torch
    from accelerate.utils import parse_flag_from_env

    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return parse_flag_from_env("ACCELERATE_USE_CPU") or (several and not torch.cuda.is_available())


def _state():
    from accelerate import PartialState

    return PartialState(cpu=force_cpu())


def is_main() -> bool:
    """True in the process that writes outputs (always True when running alone)."""
    return _state().is_main_process


def num_processes() -> int:
    return _state().num_processes


def barrier() -> None:
    """Every process waits here until all arrive (after the main one has written what the others
    read next, e.g. the teacher's LoRA directory)."""
    _state().wait_for_everyone()
