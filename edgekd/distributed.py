"""Training on several processes (GPUs or nodes) with torch.distributed, started by torchrun.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK for each process it starts; `Ranks.from_env`
joins them into one process group (NCCL on CUDA, gloo on CPU). The distill loop then keeps every
rank in step: the student is under DistributedDataParallel, each rank trains its own
generator(s) and pool share, and the decisions that end or branch an iteration (the clock, a
stop request, a non-finite loss) are agreed by one all-reduce per iteration. Rank 0 alone
writes the run directory, which must be one every node sees (a shared filesystem).
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import EdgekdError


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_type: str) -> "Ranks":
        """One process (no torchrun), or this process's place in the group torchrun started."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        return cls(dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))

    def agree(self, seconds: float, stop: bool, non_finite: bool, device) -> tuple[float, bool, bool]:
        """Rank 0's clock, and whether any rank asked to stop or saw a non-finite loss."""
        if self.world == 1:
            return seconds, stop, non_finite
        t = torch.tensor([seconds if self.main else 0.0, float(stop), float(non_finite)], dtype=torch.float64,
                         device=device)
        dist.all_reduce(t)
        return t[0].item(), t[1].item() > 0, t[2].item() > 0

    def gather(self, obj) -> list | None:
        """Every rank's `obj` on rank 0 (None elsewhere)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world if self.main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def check_resumable(self, saved_world: int):
        if saved_world != self.world:
            raise EdgekdError(f"the run was checkpointed by {saved_world} process(es); resume it with the same "
                              f"number (now {self.world})")

    def close(self):
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
