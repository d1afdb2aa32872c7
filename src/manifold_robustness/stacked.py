"""Training the models of one setting (its seeds) in lock step, as one stacked model.

The M classifiers of a setting share their architecture, data, batch size and schedule; only the seed differs.
A stacked model holds their parameters and batch-norm buffers stacked along a new leading dimension
(`torch.func.stack_module_state`) and runs them as one network, in one of two layouts:
- `grouped` (the default): the paper's classifier written out for M models, convolutions with groups=M and
  the linear layers as batched matmuls. A step launches about as many operators as one model's step, for M
  times the images.
- `vmap`: `torch.func.vmap` of `functional_call` over the stacked dimension. Its batching rules make the
  same grouped convolutions and batched matmuls, plus reshapes, copies and fills: about twice the operators
  of `grouped` per step (benchmarks/speed.py counts them), for any architecture.

Each model keeps everything of its own, exactly as `training.train_classifier` gives it with that seed:
- its initialization (the global seed set to its seed before it is built);
- its batch order (a generator seeded with its seed);
- its attack starts (the seed of each of its rows, `AttackConfig.seed` as a tuple);
- its batch-norm statistics (buffers stacked, updated in place under vmap);
- its Adam state (the update is elementwise, so stacking changes nothing).
The loss is the sum of the M models' mean losses, so each model's gradient is that of its own loss. The
adversarial modes attack the batches of all M at once: each model's input gradient depends only on its own
rows. tests/test_stacked.py checks the equivalence, for both layouts, in float64.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm import tqdm

from .attacks import Adversary, training_config
from .device import Adam
from .models import Classifier, ClassifierConfig, build_classifier
from .training import TrainConfig, attack_seed, check_adversary, clean_count, epoch_record, learning_rate

ENGINES = ("auto", "sequential", "stacked")


def resolve_engine(engine: str, device: torch.device) -> str:
    """How a setting's models are trained: stacked on a GPU, where small batches leave it launch-bound; one
    after another on the CPU, where stacking measured no faster (benchmarks/speed.py, section `stacked`)."""
    if engine not in ENGINES:
        raise ValueError(f"classifiers.engine must be one of {ENGINES}, got '{engine}'")
    if engine != "auto":
        return engine
    return "stacked" if device.type == "cuda" else "sequential"


class StackedClassifier(nn.Module):
    """M classifiers of one architecture run as one module: the `vmap` layout, for any architecture, and the
    base of the grouped one.

    `forward_stacked` maps (M, b, C, H, W) to (M, b, classes), model m seeing only x[m]. `forward` takes a
    flat batch of M * b rows, model after model (rows [m b, (m + 1) b) go to model m), so the attacks, which
    see a model as a function of a flat batch, run on all M models at once. `train()` and `eval()` switch the
    batch norms of all M. Parameters and buffers are those of the M models stacked along a new first
    dimension, under their names in the model (dots written as `__`).
    """

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        if not models:
            raise ValueError("a stacked model needs at least one model")
        params, buffers = stack_module_state(list(models))
        self.n_models = len(models)
        self._param_names, self._buffer_names = list(params), list(buffers)
        for name, value in params.items():
            self.register_parameter(self._key(name), nn.Parameter(value.detach().clone()))
        for name, value in buffers.items():
            self.register_buffer(self._key(name), value.clone())
        # The architecture without storage. Kept in a list so that it is not registered as a submodule (its
        # parameters are not the stacked model's).
        self._skeleton = [copy.deepcopy(models[0]).to("meta")]
        self.train(models[0].training)

    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "__")

    def stacked(self, name: str) -> torch.Tensor:
        """The stacked parameter or buffer of the models' `name` (e.g. `fc1.weight`), shape (M, ...)."""
        return getattr(self, self._key(name))

    def train(self, mode: bool = True) -> StackedClassifier:
        super().train(mode)
        self._skeleton[0].train(mode)
        return self

    def forward_stacked(self, x: torch.Tensor) -> torch.Tensor:
        """(M, b, C, H, W) -> (M, b, classes) as `torch.func.vmap` of `functional_call` over the stacked
        dimension. vmap's batching rules make the M convolutions one grouped convolution and the linear layers
        batched matmuls, and update the stacked batch-norm buffers in place; they also add reshapes, copies and
        fills, so a step launches about twice the operators of the grouped layout (benchmarks/speed.py)."""
        self.check_stacked(x)
        params = {n: self.stacked(n) for n in self._param_names}
        buffers = {n: self.stacked(n) for n in self._buffer_names}
        skeleton = self._skeleton[0]

        def one(p: dict, b: dict, xm: torch.Tensor) -> torch.Tensor:
            return functional_call(skeleton, (p, b), (xm,))

        return vmap(one)(params, buffers, x)

    def check_stacked(self, x: torch.Tensor) -> None:
        if len(x) != self.n_models:
            raise ValueError(f"expected inputs for {self.n_models} models along dim 0, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) % self.n_models:
            raise ValueError(f"a flat batch of {len(x)} rows cannot be split evenly among {self.n_models} models")
        out = self.forward_stacked(x.reshape(self.n_models, -1, *x.shape[1:]))
        return out.reshape(len(x), *out.shape[2:])

    def unstack(self, model_cfg: ClassifierConfig = ClassifierConfig()) -> list[Classifier]:
        """The M models as plain classifiers (in eval mode, on the stacked model's device)."""
        names = self._param_names + self._buffer_names
        models = []
        for m in range(self.n_models):
            model = build_classifier(model_cfg).to(self.stacked(names[0]).device)
            model.load_state_dict({n: self.stacked(n)[m].detach().clone() for n in names})
            models.append(model.eval())
        return models


class GroupedClassifier(StackedClassifier):
    """The paper's classifier (`models.Classifier`) for M models written out as one network: the M models'
    channels side by side, convolutions with groups=M, batch norm over all M x C channels (each channel holds
    one model's data, so its statistics are that model's), the linear layers as batched matmuls. A step
    launches about the operators of one model's step, for M times the images."""

    def forward_stacked(self, x: torch.Tensor) -> torch.Tensor:
        self.check_stacked(x)
        m, b = x.shape[:2]
        h = x.transpose(0, 1).reshape(b, m * x.shape[2], *x.shape[3:])  # (b, M x C, H, W), model-major channels
        for i, layer in enumerate(self._skeleton[0].features):
            name = f"features.{i}"
            if isinstance(layer, nn.Conv2d):
                w = self.stacked(f"{name}.weight")
                h = F.conv2d(h, w.reshape(m * w.shape[1], *w.shape[2:]), self.stacked(f"{name}.bias").reshape(-1),
                             stride=layer.stride, padding=layer.padding, groups=m)
            elif isinstance(layer, nn.ReLU):
                h = F.relu(h)
            elif isinstance(layer, nn.BatchNorm2d):
                if self.training:
                    self.stacked(f"{name}.num_batches_tracked").add_(1)
                h = F.batch_norm(h, self.stacked(f"{name}.running_mean").view(-1),
                                 self.stacked(f"{name}.running_var").view(-1), self.stacked(f"{name}.weight").reshape(-1),
                                 self.stacked(f"{name}.bias").reshape(-1), self.training, layer.momentum, layer.eps)
            else:
                raise TypeError(f"the grouped layout has no rule for {type(layer).__name__}; use the vmap one")
        h = h.reshape(b, m, -1).transpose(0, 1)  # (M, b, features)
        for fc in ("fc1", "fc2"):
            h = torch.baddbmm(self.stacked(f"{fc}.bias").unsqueeze(1), h, self.stacked(f"{fc}.weight").transpose(1, 2))
        return h


LAYOUTS = {"grouped": GroupedClassifier, "vmap": StackedClassifier}


def check_settings(cfgs: Sequence[TrainConfig]) -> None:
    """Models trained in lock step must differ in their seed alone."""
    if not cfgs:
        raise ValueError("no models to train: the setting has no seeds")
    shared = {replace(c, seed=0) for c in cfgs}
    if len(shared) > 1:
        raise ValueError(f"models trained together must differ only in their seed; got settings {sorted(map(str, shared))}")
    seeds = [c.seed for c in cfgs]
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"each stacked model needs a seed of its own, got {seeds}")


def stacked_adversarial_batch(model: StackedClassifier, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor,
                              cfgs: Sequence[TrainConfig], epoch: int, adversary: Adversary) -> torch.Tensor:
    """`training.adversarial_batch` for M models at once: x (M, b, ...), y and batch (M, b). One attack runs
    on the adversarial rows of all M, each row's start drawn from its own model's seed."""
    k = clean_count(x.shape[1], cfgs[0])
    if k == x.shape[1]:
        return x
    pos, labels = batch[:, k:].reshape(-1), y[:, k:].reshape(-1)
    attack = replace(training_config(cfgs[0].attack), seed=tuple(attack_seed(c, epoch) for c in cfgs),
                     batch_size=len(pos))
    adversarial = adversary(model, pos, labels, attack).detach()
    return torch.cat([x[:, :k], adversarial.reshape(len(cfgs), -1, *x.shape[2:])], dim=1)


def train_stacked(images: torch.Tensor, labels: torch.Tensor, cfgs: Sequence[TrainConfig],
                  model_cfg: ClassifierConfig = ClassifierConfig(), progress: bool = True,
                  adversary: Adversary | None = None, layout: str = "grouped",
                  ) -> tuple[list[nn.Module], list[list[dict]]]:
    """Train one fresh classifier per config (the configs differ only in their seed) on (images, labels), in
    lock step as one stacked model (`layout`: grouped or vmap); returns the models and each one's per-epoch
    history, as `train_classifier` would for each. The seconds of an epoch are those of the whole stack."""
    if layout not in LAYOUTS:
        raise ValueError(f"stacked layout must be one of {tuple(LAYOUTS)}, got '{layout}'")
    check_settings(cfgs)
    cfg = cfgs[0]
    adversary = check_adversary(cfg, adversary, images)
    device, n, m = images.device, len(images), len(cfgs)
    models = []
    for c in cfgs:
        torch.manual_seed(c.seed)
        models.append(build_classifier(model_cfg).to(device))
    model = LAYOUTS[layout](models)
    optimizer = Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    shuffles = [torch.Generator().manual_seed(c.seed) for c in cfgs]
    histories: list[list[dict]] = [[] for _ in cfgs]
    bar = tqdm(range(cfg.epochs), desc=f"train {m} stacked {cfg.mode} N={n}", disable=not progress, mininterval=5)
    for epoch in bar:
        optimizer.lr = learning_rate(epoch, cfg)
        start = time.perf_counter()
        total, count = torch.zeros(m, dtype=torch.float64, device=device), 0
        model.train()
        orders = torch.stack([torch.randperm(n, generator=g) for g in shuffles]).to(device)
        for batch in orders.split(cfg.batch_size, dim=1):
            x, y = images[batch], labels[batch]
            if cfg.mode != "normal":
                x = stacked_adversarial_batch(model, x, y, batch, cfgs, epoch, adversary)
            logits = model.forward_stacked(x)
            losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(m, -1).mean(dim=1)
            optimizer.zero_grad()
            losses.sum().backward()
            optimizer.step()
            total, count = total + losses.detach().double() * y.shape[1], count + y.shape[1]
        seconds = time.perf_counter() - start
        for c, history, loss in zip(cfgs, histories, (total / count).tolist()):
            history.append(epoch_record(epoch, c, loss, seconds))
        bar.set_postfix(loss=f"{float(total.mean()) / count:.3f}")
    return model.unstack(model_cfg), histories
