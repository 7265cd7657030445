"""Data-parallel training on `torch.distributed`, launched by `torchrun`; one process alone
runs the same code with `Dist()` (world size 1), where every collective is a no-op.

- DDP by default: each process holds the whole model; gradients are averaged across processes
  once per optimizer step (`no_sync` on the inner micro-batches of gradient accumulation).
- FSDP2 (`torch.distributed.fsdp.fully_shard`) with `fsdp=True`: parameters, gradients and
  optimizer state sharded, each `nn.ModuleList` entry (the Transformer layers) a unit of its own.
- Data: `RankSlice` hands process r batches r, r+W, r+2W, ... of the one global batch stream, so
  W processes with batch b and gradient accumulation A see exactly the batches that one process
  with batch b and accumulation W*A sees, and the stream's position is the same on every rank.
- Preparation: every process tokenizes its part of the corpus, rank 0 joins the parts
  (`plmkit.data.shards.prepare_corpus` with `ranks=` a `Dist`, through its `gather`).
- Checkpoints: rank 0 writes the full (unsharded) model and optimizer state; they load onto any
  number of processes, so a run resumes on a different world size.

The trainer calls the objective through `ObjectiveModule`, so that DDP's and FSDP's forward
hooks see the whole objective (which may call several methods of the model), and stays
objective-agnostic.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.distributed as tdist
from torch import Tensor, nn

Batch = dict[str, Tensor]


class ObjectiveModule(nn.Module):
    """`objective(model, batch)` as a module's forward, for the DDP / FSDP wrappers."""

    def __init__(self, model: nn.Module, objective: Callable[[nn.Module, Batch], Any]) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: Batch) -> Any:
        return self.objective(self.model, batch)


class RankSlice:
    """Batches `rank`, `rank + world`, ... of `source`: this process's share of each round of
    `world` batches. A whole round is read before its batch is yielded, so between batches the
    source's position (`state_dict`) is the same on every rank."""

    def __init__(self, source: Iterable[Batch], rank: int, world: int) -> None:
        self.source, self.rank, self.world = source, rank, world

    def __iter__(self) -> Iterator[Batch]:
        batches = iter(self.source)
        while True:
            round_ = [next(batches, None) for _ in range(self.world)]
            if round_[-1] is None:  # a partial round at the end is dropped on every rank
                return
            yield round_[self.rank]  # type: ignore[misc]

    def __getattr__(self, name: str) -> Any:  # state_dict / load_state_dict, when present
        if name in ("state_dict", "load_state_dict"):
            return getattr(self.source, name)
        raise AttributeError(name)


@dataclasses.dataclass
class Dist:
    """This process's place in the process group (`init()`), and the collectives the trainer
    needs; with `world == 1` each is the identity."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    fsdp: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        """This process's accelerator (by LOCAL_RANK), else the CPU."""
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def wrap(self, model: nn.Module, objective: Callable[[nn.Module, Batch], Any]) -> nn.Module:
        """The module the trainer calls with a batch: DDP, FSDP2 or plain."""
        module = ObjectiveModule(model, objective)
        if self.fsdp:
            from torch.distributed.fsdp import fully_shard

            layers = {id(m): m for lst in model.modules() if isinstance(lst, nn.ModuleList)
                      for m in lst}
            for layer in layers.values():
                fully_shard(layer)
            return fully_shard(module)
        if self.world == 1:
            return module
        device_ids = [self.local_rank] if torch.cuda.is_available() else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids,
                                                   find_unused_parameters=True)

    def sync_gradients(self, wrapped: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
        """A context for one backward: gradients are reduced across processes only if `sync`."""
        if isinstance(wrapped, nn.parallel.DistributedDataParallel) and not sync:
            return wrapped.no_sync()
        if self.fsdp:
            wrapped.set_requires_gradient_sync(sync)  # type: ignore[operator]
        return contextlib.nullcontext()

    def mean(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each scalar averaged over the processes (one all-reduce for all of them)."""
        if self.world == 1 or not values:
            return values
        stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
        tdist.all_reduce(stacked)
        return dict(zip(values, stacked / self.world, strict=True))

    def total(self, value: Tensor | int) -> Tensor | int:
        """`value` summed over the processes."""
        if self.world == 1:
            return value
        tensor = torch.as_tensor(value, device=self.device(), dtype=torch.float64)
        tdist.all_reduce(tensor)
        return tensor

    def any(self, flag: bool) -> bool:
        """Whether `flag` is set on any process."""
        if self.world == 1:
            return flag
        tensor = torch.tensor(float(flag), device=self.device())
        tdist.all_reduce(tensor, op=tdist.ReduceOp.MAX)
        return bool(tensor)

    def gather(self, obj: Any) -> list[Any]:
        """`obj` of every process, in rank order."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            tdist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (making and saving the tokenizer), the other
        ranks after it (reusing what it wrote)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def grad_norm(self, norm: Tensor) -> Tensor:
        """The total gradient norm as a plain tensor (FSDP returns a DTensor)."""
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def full_model(self, model: nn.Module) -> nn.Module | None:
        """On rank 0 a model with the full weights, to save: `model` itself, or under FSDP a CPU
        copy; None on the other ranks (under FSDP every rank must call this)."""
        if not self.fsdp:
            return model if self.is_main else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(model, options=options)
        if not self.is_main:
            return None
        with torch.random.fork_rng(devices=[]):  # building initializes: keep the RNG as it is
            copy = type(model)(model.config)  # type: ignore[call-arg]
        copy.load_state_dict(state)
        return copy

    def load_model(self, model: nn.Module, weights: Path) -> None:
        """Load a safetensors file of full weights into `model` (sharded under FSDP)."""
        if not self.fsdp:
            safetensors.torch.load_model(model, weights)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        options = StateDictOptions(full_state_dict=True, strict=False)  # tied: saved once
        set_model_state_dict(model, safetensors.torch.load_file(weights), options=options)

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer state to checkpoint, as `optimizer.state_dict()` of one process would
        be (under FSDP gathered on rank 0; every rank must call this)."""
        if not self.fsdp:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = get_optimizer_state_dict(model, optimizer, options=options)
        if not self.is_main:
            return {}  # rank 0 alone holds (and writes) the full state
        index = _param_index(optimizer)  # keyed by position like optimizer.state_dict()
        return {"state": {index[name]: v for name, v in full["state"].items()},
                "param_groups": [{**g, "params": [index[n] for n in g["params"]]}
                                 for g in full["param_groups"]]}

    def load_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                       state: dict) -> None:
        if not self.fsdp:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        names = {i: name for name, i in _param_index(optimizer).items()}
        full = {"state": {names[i]: v for i, v in state["state"].items()},
                "param_groups": [{**g, "params": [names[i] for i in g["params"]]}
                                 for g in state["param_groups"]]}
        options = StateDictOptions(full_state_dict=True, strict=False)  # unused: no state
        set_optimizer_state_dict(model, optimizer, full, options=options)


def _param_index(optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Parameter name -> position in `optimizer.state_dict()` (groups keep `param_names`)."""
    names = [n for g in optimizer.param_groups for n in g["param_names"]]
    return {name: i for i, name in enumerate(names)}


def init(fsdp: bool = False) -> Dist:
    """Join the process group `torchrun` set up (RANK, WORLD_SIZE, LOCAL_RANK), NCCL on GPUs
    and gloo on CPUs; without torchrun, a `Dist` of one process (`fsdp` needs torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 and not fsdp:
        return Dist()
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not tdist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        # --fsdp in a plain process: a group of one, in memory
        store = tdist.HashStore() if "MASTER_ADDR" not in os.environ else None
        tdist.init_process_group(backend, store=store, rank=rank, world_size=world)
    return Dist(rank=rank, world=world, local_rank=local_rank, fsdp=fsdp)
