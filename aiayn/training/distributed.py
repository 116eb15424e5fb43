"""Data-parallel training on PyTorch's own engine: torchrun starts the processes and sets RANK,
WORLD_SIZE, LOCAL_RANK and the rendezvous; this module joins the group (gloo on the CPU, NCCL on
CUDA) and offers the few collective operations the trainer needs.

    torchrun --nproc_per_node 2 -m aiayn train --out RUN ...          # one machine
    torchrun --nnodes 2 --node_rank R --nproc_per_node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29400 -m aiayn train --out RUN ...  # two machines

Without torchrun it is a group of one and every operation is the identity; under torchrun, even
with one process, the process group and DDP are used (`torchrun --nproc_per_node 1` checks that
path on one GPU).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from aiayn.errors import InputError

# Rank 0 validates and writes checkpoints while the others wait at their next collective.
GROUP_TIMEOUT = datetime.timedelta(hours=2)


@dataclass
class Group:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "gloo"
    active: bool = False  # started by torchrun: a process group, even of one process (DDP, NCCL or gloo)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def join(cls, device_type: str) -> "Group":
        """The process group torchrun describes in the environment (or a group of one)."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1 and "TORCHELASTIC_RUN_ID" not in os.environ:  # not started by torchrun
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        backend = "nccl" if device_type == "cuda" else "gloo"
        device_id = None
        if device_type == "cuda":  # one GPU per process, the process's own from the start
            if local_rank >= torch.cuda.device_count():
                raise InputError(f"process {local_rank} of this machine has no GPU: it has "
                                 f"{torch.cuda.device_count()} (give --nproc_per_node at most that)")
            device_id = torch.device("cuda", local_rank)
            torch.cuda.set_device(device_id)
        if not dist.is_initialized():
            dist.init_process_group(backend, timeout=GROUP_TIMEOUT, device_id=device_id)
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, backend, active=True)

    def device(self, name: str) -> torch.device:
        """This process's device: on CUDA under torchrun, the GPU of its local rank."""
        device = torch.device(name)
        if device.type == "cuda" and self.active:
            if device.index is not None:
                raise InputError(f"--device {name}: under torchrun each process takes the GPU of its local "
                                 "rank; give --device cuda")
            device = torch.device("cuda", self.local_rank)
        return device

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over the processes (in place, and returned)."""
        if self.active:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every process's tensor (all of the same shape), in rank order, where `tensor` lives."""
        if not self.active:
            return [tensor]
        # NCCL moves CUDA tensors only.
        moved = tensor.to(torch.device("cuda", self.local_rank)) if self.backend == "nccl" else tensor
        gathered = [torch.empty_like(moved) for _ in range(self.world_size)]
        dist.all_gather(gathered, moved)
        return [g.to(tensor.device) for g in gathered]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def leave(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()
