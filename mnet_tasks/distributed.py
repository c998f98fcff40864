"""What every process of a distributed run must agree on; each function is a no-op outside one."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def gather_objects(item: Any) -> list[Any]:
    """Every rank's ``item``, in rank order (``[item]`` outside distributed runs)."""
    if not is_distributed():
        return [item]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, item)
    return gathered


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on any process: ranks that must take a decision together (stop, skip a batch) would
    otherwise wait for one another forever."""
    if not is_distributed():
        return flag
    value = torch.tensor(int(flag))
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value)
