"""Choosing the compute device once, so the same code runs on CPU and GPU, and the two settings that make the
small networks of this study faster without changing what they compute (benchmarks/speed.py measures them)."""

from __future__ import annotations

import logging
import os
import warnings

import torch
from torch.optim.adam import adam as adam_update

log = logging.getLogger(__name__)


def cuda_status() -> tuple[bool, str]:
    """Whether CUDA can be used here, and where it cannot, why: a CPU build of torch, an NVIDIA driver too old
    for the CUDA this torch was built for (torch says so in a warning), or no GPU visible to the process."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if available:
        return True, ""
    if torch.version.cuda is None:
        return False, "this torch is a CPU build (no CUDA); install a CUDA build of torch"
    said = " ".join(str(w.message) for w in caught)
    if "too old" in said.lower():
        return False, (f"the NVIDIA driver is too old for this torch, built for CUDA {torch.version.cuda} ({said.strip()}); "
                       "update the driver or install a torch built for an older CUDA")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return False, ("no GPU is visible to this process (CUDA_VISIBLE_DEVICES="
                   f"{visible if visible is not None else 'unset'}{'; ' + said.strip() if said.strip() else ''}); on a "
                   "cluster the job must ask the scheduler for one (README, Running on a Slurm cluster)")


def resolve_device(name: str = "auto") -> torch.device:
    """Return the device named in the config; `auto` picks CUDA when it can be used, and says why not where a GPU
    build of torch finds none (a driver too old would otherwise pass silently as a CPU run)."""
    if name == "auto":
        available, why = cuda_status()
        if not available and why.startswith("the NVIDIA driver is too old"):
            log.warning("device auto runs on the CPU: %s", why)
        return torch.device("cuda" if available else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        available, why = cuda_status()
        if not available:
            raise RuntimeError(f"config asks for device '{name}' but CUDA cannot be used: {why}; or set device: "
                               "auto or cpu")
    return device


def configure_torch(threads: int, device: torch.device) -> None:
    """Set the intra-op thread count from the job's threads; ask for deterministic CUDA kernels on a GPU."""
    torch.set_num_threads(max(1, int(threads)))
    if device.type == "cuda":
        # CPU kernels used here are deterministic already; the switch costs seconds of imports, so only on CUDA.
        # warn_only: a few CUDA kernels have no deterministic variant.
        torch.use_deterministic_algorithms(True, warn_only=True)


def fast_layout(module: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """Channels-last weights on the CPU: oneDNN's convolutions then run in NHWC, measured 1.2-1.4x faster for
    these 4x4 convolutions at batch 100 (benchmarks/speed.py). Results agree to float rounding. On CUDA the
    module is left as it is: NHWC pays off there for half precision, which this study does not use."""
    if torch.device(device).type == "cpu":
        module.to(memory_format=torch.channels_last)
    return module


class Adam:
    """Adam with decoupled state, stepping through torch's own fused Adam kernel (`torch.optim.adam.adam`).

    The update is torch.optim.Adam(fused=True)'s, bit for bit (tests/test_training.py). The Optimizer class is
    not used because constructing one imports torch._dynamo, about 1 s of start-up in every job of the workflow
    (a hundred training and VAE-GAN jobs in the quick study). Parameters without a gradient are skipped, as
    there. `lr` may be changed between steps.
    """

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("Adam got no parameters that require gradients")
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        pick = lambda items: [items[i] for i in live]  # noqa: E731
        params = pick(self.params)
        self._update(params, [p.grad for p in params], pick(self.exp_avg), pick(self.exp_avg_sq), pick(self.steps),
                     self.lr)

    @torch.no_grad()
    def step_rows(self, rows: list[tuple[slice, float]]) -> None:
        """One step of stacked parameters (models along the first dimension) for the models in each slice, each
        slice at its own learning rate; models in no slice are left as they are, state included. The stepped
        models share one step count (they have all stepped at every step so far, as in the stacked engine)."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        for sl, lr in rows:
            params = [self.params[i][sl] for i in live]  # views: the kernel updates the stacks in place
            # The kernel counts the step in the tensors it is given: the shared counts where one call steps
            # all, copies where several do (the counts then move once, below).
            steps = [self.steps[i] if len(rows) == 1 else self.steps[i].clone() for i in live]
            self._update(params, [self.params[i].grad[sl] for i in live], [self.exp_avg[i][sl] for i in live],
                         [self.exp_avg_sq[i][sl] for i in live], steps, lr)
        if len(rows) > 1:
            for i in live:
                self.steps[i].add_(1)

    def _update(self, params, grads, exp_avg, exp_avg_sq, steps, lr: float) -> None:
        adam_update(params, grads, exp_avg, exp_avg_sq, [], steps, foreach=False, fused=True, amsgrad=False,
                    beta1=self.betas[0], beta2=self.betas[1], lr=lr, weight_decay=self.weight_decay, eps=self.eps,
                    maximize=False)
