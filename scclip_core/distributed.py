"""Process-group helpers for `torchrun`: one process per device, images sharded by index.

With no launcher (no WORLD_SIZE in the environment) everything here is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessInfo:
    """This process's place in the run; `device` is the one its model should live on."""

    rank: int
    world_size: int
    device: str
    started_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list[Any]) -> list[Any]:
        """This process's share of `items`: every world_size-th one, starting at its rank."""
        return items[self.rank :: self.world_size]


def start(device: str | None = None) -> ProcessInfo:
    """Join the process group `torchrun` describes (env://), or run alone when there is none.

    The backend is NCCL when CUDA is available and gloo otherwise. `device` overrides the default,
    which is `cuda:<LOCAL_RANK>` with CUDA (also for a bare "cuda") and `cpu` without.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if device is None or device == "cuda":
        device = f"cuda:{local_rank}" if use_cuda else "cpu"
    if dist.is_initialized():
        return ProcessInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device, started_group=False)
    if use_cuda and torch.device(device).index is not None:
        torch.cuda.set_device(torch.device(device))
    if world_size == 1:
        return ProcessInfo(rank=0, world_size=1, device=device, started_group=False)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return ProcessInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device, started_group=True)


def stop(info: ProcessInfo) -> None:
    """Leave the process group if `start` created it."""
    if info.started_group and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _reduce_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def sum_across(array: np.ndarray) -> np.ndarray:
    """Element-wise sum of `array` over all processes (int64 or float64 kept exact)."""
    if not _active():
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(_reduce_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


def max_across(value: float) -> float:
    """The largest `value` over all processes."""
    if not _active():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's `obj`, on every process (any picklable value)."""
    if not _active():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier() -> None:
    if _active():
        dist.barrier()
