"""Several training processes as one (torchrun): process group, replicated module, agreement.

torchrun starts one process per GPU (or per CPU share) and sets RANK, WORLD_SIZE and
LOCAL_RANK. Every process runs the same training loop on its own share of the data; this
module keeps their decisions identical: gradients averaged by DistributedDataParallel,
losses averaged for the running loss (so divergence and rollback are decided alike), and
the policy's clock-driven decisions (save now?) taken by rank 0 for everyone. Without
torchrun every function here is a no-op on a single process.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

TIMEOUT = datetime.timedelta(minutes=10)  # a process that waits this long on the others gives up


class DistributedError(RuntimeError):
    """A collective failed: another training process stopped answering (killed, crashed, its
    machine went away) or failed its step. The processes cannot go on apart."""


@dataclass(frozen=True)
class Processes:
    rank: int
    world_size: int
    local_rank: int
    backend: str


def from_environment() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) set by torchrun, or None for a single process."""
    if int(os.environ.get('WORLD_SIZE', '1')) <= 1:
        return None
    return int(os.environ['RANK']), int(os.environ['WORLD_SIZE']), int(os.environ.get('LOCAL_RANK', '0'))


def start(device: str) -> tuple[Processes | None, str]:
    """Join the process group torchrun describes (NCCL for GPUs, gloo on CPU); returns it and
    the device this process trains on (its own GPU: cuda:LOCAL_RANK)."""
    env = from_environment()
    if env is None:
        return None, device
    rank, world_size, local_rank = env
    use_gpu = device.startswith('cuda') or (device == 'auto' and torch.cuda.is_available())
    if use_gpu:
        if not torch.cuda.is_available():
            raise ValueError(f'device {device!r} requested but no CUDA GPU is available')
        torch.cuda.set_device(local_rank)
        device = f'cuda:{local_rank}'
    elif device == 'auto':
        device = 'cpu'
    backend = 'nccl' if use_gpu else 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
    return Processes(rank, world_size, local_rank, backend), device


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def replicate(module: nn.Module, device: torch.device) -> nn.Module:
    """The module as DistributedDataParallel when several processes train (rank 0's weights
    are broadcast to all), else the module itself."""
    if not active():
        return module
    ids = [device.index] if device.type == 'cuda' else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def _guard(what: str, call):
    try:
        return call()
    except RuntimeError as exc:  # DistBackendError is one
        raise DistributedError(f'{what}: another training process stopped answering ({exc})') from exc


def mean_of(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each value averaged over all processes (one collective for the whole dict)."""
    if not active():
        return values
    keys = list(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])
    _guard('averaging losses', lambda: dist.all_reduce(stacked))
    stacked /= dist.get_world_size()
    return dict(zip(keys, stacked.unbind()))


def agree(flag: bool) -> bool:
    """Rank 0's decision, for every process."""
    if not active():
        return flag
    device = 'cuda' if dist.get_backend() == 'nccl' else 'cpu'
    value = torch.tensor([int(flag)], device=device)
    _guard('agreeing on a decision', lambda: dist.broadcast(value, src=0))
    return bool(value.item())


def barrier() -> None:
    if active():
        _guard('waiting for the other processes', dist.barrier)
