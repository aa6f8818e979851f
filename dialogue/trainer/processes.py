"""The processes of a training run, through ``accelerate``: one process, or many (CPU cores, GPUs, nodes).

``csrl train`` started plainly is one process; started by a launcher it is one of ``world_size`` processes that
train one model together (data parallel). Each process plays its own episodes; gradients are all-reduced by
PyTorch's ``DistributedDataParallel`` (which ``accelerate`` wraps the model in), so every process holds the same
weights after each update; what is written to the run folder is written once, by the main process.

    torchrun --standalone --nproc_per_node 2 $(command -v csrl) train ...     # 2 CPU processes (gloo)
    accelerate launch --num_processes 8 $(command -v csrl) train ...          # 8 GPUs (nccl)

Without CUDA the processes talk over gloo (``Accelerator(cpu=True)``): ``accelerate launch --cpu`` starts only one
process, so CPU runs use ``torchrun``, which also sets one thread per process.
"""

from __future__ import annotations

import contextlib
import hashlib

import torch


def state():
    """``accelerate``'s view of the processes (CPU + gloo without CUDA); set up on first use, then shared.

    Not cached here: transformers' ``Trainer`` (SFT) resets and rebuilds this shared state, keeping the process
    group, so each call asks for the current one.
    """
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def world_size() -> int:
    """How many processes train the run (1 when not launched by a distributed launcher)."""
    return state().num_processes


def rank() -> int:
    """This process's index among them (0 is the main process)."""
    return state().process_index


def is_main() -> bool:
    """Whether this process writes the run folder and prints."""
    return state().is_main_process


def wait() -> None:
    """Block until every process got here (a no-op for one process)."""
    state().wait_for_everyone()


def main_first():
    """A context: the main process runs the block first (building a cached stage), then the others (loading it)."""
    return state().main_process_first() if world_size() > 1 else contextlib.nullcontext()


def from_main(make):
    """``make()`` run by the main process alone and its result sent to every process (it must pickle)."""
    if world_size() == 1:
        return make()
    from accelerate.utils import broadcast_object_list

    made = [make() if is_main() else None]
    return broadcast_object_list(made, from_process=0)[0]


def gather(items: list) -> list:
    """Every process's ``items`` (picklable), concatenated in rank order, on every process."""
    if world_size() == 1:
        return list(items)
    from accelerate.utils import gather_object

    return gather_object(list(items))


def mean_across(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the processes (every process passes the same keys)."""
    if world_size() == 1:
        return dict(values)
    gathered = gather([values])
    return {name: sum(g[name] for g in gathered) / len(gathered) for name in values}


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model as the update must call it: itself for one process, wrapped in DDP for several.

    Call the wrapper (its ``forward``) in the update so DDP all-reduces the gradients; other methods of
    ``model`` (generation, scoring without gradients) run on ``model`` itself, unsynchronised.
    """
    if world_size() == 1:
        return model
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available()).prepare_model(model)


def parameter_digest(model: torch.nn.Module) -> str:
    """A short hash of the trainable parameters' bytes: equal on every process while they stay in step."""
    digest = hashlib.sha1()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            digest.update(name.encode())
            digest.update(parameter.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


__all__ = [
    "from_main",
    "gather",
    "is_main",
    "main_first",
    "mean_across",
    "parameter_digest",
    "rank",
    "state",
    "wait",
    "world_size",
    "wrap",
]
