"""How large a pack is: the memory a member takes in a pack's step, how many members run at once on the
device (a chunk), the device's free memory, and a pack's step timed against its members alone."""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch

from mrfbench.models import MultimodalVAE
from mrfbench.pack import Pack, PackAdam, member_generators, train_step
from mrfbench.training import TrainConfig, adam, forked_rng


def saved_storages(model: MultimodalVAE, batch: torch.Tensor) -> tuple[list[int], list[int]]:
    """The sizes in bytes of the tensors a forward of a copy of ``model`` on a copy of ``batch`` saves for the
    backward pass, each storage once: its activations, and the parameters it saves (the operands the
    batched products of a pack read from the stack). The batch is copied so that a batch that is a view of
    a whole data split (which some layers save as they are given it) counts as the batch."""
    probe = copy.deepcopy(model)
    parameters = {p.untyped_storage().data_ptr() for p in probe.parameters()}
    saved: dict[tuple, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        saved[(tensor.untyped_storage().data_ptr(), tensor.device)] = tensor.untyped_storage().nbytes()
        return tensor

    with forked_rng(batch.device), torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        probe.loss(batch.clone())
    return ([size for (pointer, _), size in saved.items() if pointer not in parameters],
            [size for (pointer, _), size in saved.items() if pointer in parameters])


CPU_CHUNK_BYTES = 32 << 20  # the largest tensor a chunk of members may save on a CPU. Beyond it batched
# operations stream their operands through memory rather than cache, and a pack steps slower than its
# members alone. 15 copula members on 2 idle cores, member-steps per second against 15 single runs: MMVAE+
# (DReG, K = 10) at batch 64, whose largest tensor is 10 MiB a member, 0.96x / 0.91x in chunks of 1 / 3
# and 0.64x / 0.59x in chunks of 5 / 15; MMVAE at batch 256 (4 MiB) 1.02x in chunks of 3 to 8, 0.83x in one;
# the GMRF, MoPoE and ALMRF (1 MiB) and the NN-MRF at batch 64 (2 MiB) gain most in one chunk of 15


@dataclass(frozen=True)
class Footprint:
    """What one member holds in a pack's step: ``state``, its parameters, gradients and Adam's two moments
    (four copies), for the whole step, and ``activations`` (``saved_storages``) while its chunk runs;
    ``largest``, the largest tensor its step saves, a parameter or an activation."""

    state: int
    activations: tuple[int, ...]
    largest: int

    @classmethod
    def of(cls, model: MultimodalVAE, batch: torch.Tensor, precision: str = "fp32") -> Footprint:
        """Measured on one forward of a copy of ``model`` on ``batch`` in ``precision``."""
        parameters = sum(p.numel() * p.element_size() for p in model.parameters())
        with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            activations, saved_parameters = saved_storages(model, batch)
        return cls(4 * parameters, tuple(activations), max([1, *activations, *saved_parameters]))

    @property
    def total(self) -> int:
        return self.state + sum(self.activations)

    def chunk(self, device: torch.device) -> int | None:
        """How many members a pack runs in one forward and backward: all of them (None) on a GPU, and on a
        CPU as many as keep the largest tensor of their step within ``CPU_CHUNK_BYTES``."""
        return None if device.type != "cpu" else max(1, CPU_CHUNK_BYTES // self.largest)

    def pack_bytes(self, size: int, chunk: int | None) -> int:
        """Peak memory of a pack of ``size`` that runs ``chunk`` members at a time."""
        return size * self.state + min(size, chunk or size) * sum(self.activations)

    def capacity(self, budget: float, chunk: int | None) -> int:
        """The most members whose pack fits ``budget`` bytes."""
        whole = int(budget // self.total)
        return whole if chunk is None or whole < chunk else int((budget - chunk * sum(self.activations)) // self.state)


def member_bytes(model: MultimodalVAE, batch: torch.Tensor) -> int:
    """Memory one member takes in a step of a pack that runs all its members at once (``Footprint``)."""
    return Footprint.of(model, batch).total


def pack_chunk(model: MultimodalVAE, batch: torch.Tensor, precision: str = "fp32") -> int | None:
    """How many members a pack of ``model`` training on batches like ``batch`` in ``precision`` runs in one
    forward and backward (``Footprint.chunk``)."""
    return None if batch.device.type != "cpu" else Footprint.of(model, batch, precision).chunk(batch.device)


def step_times(model: MultimodalVAE, batch: torch.Tensor, k: int, chunk: int | None, precision: str = "fp32",
               steps: int = 3) -> tuple[float, float]:
    """Seconds a training step takes for a pack of ``k`` copies of ``model`` (``chunk`` of them at a time, as
    ``pack_chunk`` gives) and for the model alone (medians
    of ``steps`` timed steps each, interleaved, after one untimed), on copies and fresh generators: nothing of
    ``model`` or torch's random state changes. Where a step is bound by its arithmetic rather than by
    overheads (on a CPU: large batches, many samples per point), a pack can be slower than its members one
    after another."""
    cpu_state = torch.random.get_rng_state()
    device = batch.device
    with forked_rng(device):
        pack = Pack([copy.deepcopy(model) for _ in range(k)], [TrainConfig()] * k,
                    [member_generators(0, cpu_state, device) for _ in range(k)], chunk)
        optimizer, beta = PackAdam(pack.params.stacked.values()), pack.betas.float().to(device)
        alone = copy.deepcopy(model)
        alone_optimizer = adam(alone.parameters(), 1e-3)
        x = batch.expand(k, *batch.shape)

        def pack_step():
            train_step(pack, optimizer, x, beta, [1e-3] * k, [True] * k, precision)

        def alone_step():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = alone.loss(batch).loss
            alone_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            alone_optimizer.step()

        def timed(step) -> float:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - start

        pack_step(), alone_step()
        times = [(timed(pack_step), timed(alone_step)) for _ in range(steps)]
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def free_memory(device: torch.device) -> int:
    """Bytes the device can still give: free CUDA memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as handle:
        fields = dict(line.split(":", 1) for line in handle)
    return int(fields["MemAvailable"].split()[0]) * 1024
