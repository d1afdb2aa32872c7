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

    def forward_stacked(self, x: torch.Tensor, models: slice = slice(None)) -> torch.Tensor:
        """(M, b, C, H, W) -> (M, b, classes) as `torch.func.vmap` of `functional_call` over the stacked
        dimension; `models` (a slice of the stack) runs only those models, x then holding their inputs alone.
        vmap's batching rules make the M convolutions one grouped convolution and the linear layers
        batched matmuls, and update the stacked batch-norm buffers in place; they also add reshapes, copies and
        fills, so a step launches about twice the operators of the grouped layout (benchmarks/speed.py)."""
        self.check_stacked(x, models)
        params = {n: self.stacked(n)[models] for n in self._param_names}
        buffers = {n: self.stacked(n)[models] for n in self._buffer_names}
        skeleton = self._skeleton[0]

        def one(p: dict, b: dict, xm: torch.Tensor) -> torch.Tensor:
            return functional_call(skeleton, (p, b), (xm,))

        return vmap(one)(params, buffers, x)

    def count(self, models: slice) -> int:
        return len(range(self.n_models)[models])

    def check_stacked(self, x: torch.Tensor, models: slice = slice(None)) -> None:
        if len(x) != self.count(models):
            raise ValueError(f"expected inputs for {self.count(models)} models along dim 0, got shape "
                             f"{tuple(x.shape)}")

    def forward(self, x: torch.Tensor, models: slice = slice(None)) -> torch.Tensor:
        """A flat batch, model after model (rows [m b, (m + 1) b) go to the m-th model of `models`)."""
        m = self.count(models)
        if len(x) % m:
            raise ValueError(f"a flat batch of {len(x)} rows cannot be split evenly among {m} models")
        out = self.forward_stacked(x.reshape(m, -1, *x.shape[1:]), models)
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

    def forward_stacked(self, x: torch.Tensor, models: slice = slice(None)) -> torch.Tensor:
        self.check_stacked(x, models)
        m, b = x.shape[:2]
        stacked = lambda name: self.stacked(name)[models]  # noqa: E731 (a view: batch norm updates in place)
        h = x.transpose(0, 1).reshape(b, m * x.shape[2], *x.shape[3:])  # (b, M x C, H, W), model-major channels
        for i, layer in enumerate(self._skeleton[0].features):
            name = f"features.{i}"
            if isinstance(layer, nn.Conv2d):
                w = stacked(f"{name}.weight")
                h = F.conv2d(h, w.reshape(m * w.shape[1], *w.shape[2:]), stacked(f"{name}.bias").reshape(-1),
                             stride=layer.stride, padding=layer.padding, groups=m)
            elif isinstance(layer, nn.ReLU):
                h = F.relu(h)
            elif isinstance(layer, nn.BatchNorm2d):
                if self.training:
                    stacked(f"{name}.num_batches_tracked").add_(1)
                h = F.batch_norm(h, stacked(f"{name}.running_mean").view(-1),
                                 stacked(f"{name}.running_var").view(-1), stacked(f"{name}.weight").reshape(-1),
                                 stacked(f"{name}.bias").reshape(-1), self.training, layer.momentum, layer.eps)
            else:
                raise TypeError(f"the grouped layout has no rule for {type(layer).__name__}; use the vmap one")
        h = h.reshape(b, m, -1).transpose(0, 1)  # (M, b, features)
        for fc in ("fc1", "fc2"):
            h = torch.baddbmm(stacked(f"{fc}.bias").unsqueeze(1), h, stacked(f"{fc}.weight").transpose(1, 2))
        return h


LAYOUTS = {"grouped": GroupedClassifier, "vmap": StackedClassifier}


class Rows(nn.Module):
    """Some models of a stack (a slice), seen as one model of a flat batch: what the attacks take. Switching
    its mode switches the whole stack's."""

    def __init__(self, stack: StackedClassifier, models: slice):
        super().__init__()
        self.stack, self.models = stack, models

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack(x, self.models)


def check_settings(cfgs: Sequence[TrainConfig], n_train: Sequence[int] | None = None) -> None:
    """Models trained in lock step must differ in their seed (and their N) alone, each pair (seed, N) once."""
    if not cfgs:
        raise ValueError("no models to train: the setting has no seeds")
    shared = {replace(c, seed=0) for c in cfgs}
    if len(shared) > 1:
        raise ValueError(f"models trained together must differ only in their seed; got settings {sorted(map(str, shared))}")
    keys = [(c.seed, n) for c, n in zip(cfgs, n_train or [0] * len(cfgs))]
    if len(set(keys)) < len(keys):
        seeds = [c.seed for c in cfgs]
        raise ValueError(f"each stacked model needs a seed of its own (per N), got seeds {seeds}"
                         + (f" for N {list(n_train)}" if n_train else ""))


def stacked_adversarial_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: torch.Tensor,
                              cfgs: Sequence[TrainConfig], epochs: Sequence[int], adversary: Adversary,
                              blocks: Sequence[int] | None = None) -> torch.Tensor:
    """`training.adversarial_batch` for M models at once: x (M, b, ...), y and batch (M, b), model m in its
    epoch `epochs[m]`. One attack runs on the adversarial rows of all M, each row's start drawn from its own
    model's seed; `blocks`, the N of each model when the stack holds models of several N, goes to the
    adversary (whose examples may depend on the training set: the learned manifold's data-range box)."""
    k = clean_count(x.shape[1], cfgs[0])
    if k == x.shape[1]:
        return x
    pos, labels = batch[:, k:].reshape(-1), y[:, k:].reshape(-1)
    attack = replace(training_config(cfgs[0].attack), seed=tuple(attack_seed(c, e) for c, e in zip(cfgs, epochs)),
                     batch_size=len(pos))
    extra = {"blocks": tuple(blocks)} if blocks is not None else {}
    adversarial = adversary(model, pos, labels, attack, **extra).detach()
    return torch.cat([x[:, :k], adversarial.reshape(len(cfgs), -1, *x.shape[2:])], dim=1)


def runs(values: Sequence) -> list[slice]:
    """Maximal slices of equal consecutive values."""
    out, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            out.append(slice(start, i))
            start = i
    return out


class Schedule:
    """One model's batches: epoch after epoch, a fresh permutation of its N positions from its own generator,
    split into batches, exactly as `train_classifier` draws them."""

    def __init__(self, cfg: TrainConfig, n: int):
        self.cfg, self.n = cfg, n
        self.per_epoch = -(-n // cfg.batch_size)
        self.total = cfg.epochs * self.per_epoch
        self.shuffle = torch.Generator().manual_seed(cfg.seed)
        self.epoch, self.step, self.batches = -1, 0, []

    def batch(self, t: int) -> torch.Tensor:
        """The positions of global step t (the model's own t-th step)."""
        epoch, self.step = divmod(t, self.per_epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self.batches = list(torch.randperm(self.n, generator=self.shuffle).split(self.cfg.batch_size))
        return self.batches[self.step]

    def epoch_ends(self) -> bool:
        return self.step == self.per_epoch - 1


def train_stacked(images: torch.Tensor, labels: torch.Tensor, cfgs: Sequence[TrainConfig],
                  model_cfg: ClassifierConfig = ClassifierConfig(), progress: bool = True,
                  adversary: Adversary | None = None, layout: str = "grouped",
                  n_train: Sequence[int] | None = None) -> tuple[list[nn.Module], list[list[dict]]]:
    """Train one fresh classifier per config (the configs differ only in their seed) on (images, labels), in
    lock step as one stacked model (`layout`: grouped or vmap); returns the models and each one's per-epoch
    history, as `train_classifier` would for each.

    `n_train`, one per config, trains model m on the first n_train[m] images alone (nested subsets, as
    `data.training_subset` makes them; default: all images for every model). Models of different N share
    the lock step: each draws its own batches from its own N, is in its own epoch (learning rate, attack seed)
    and stops after its own number of steps. The stack is ordered by steps, most first, so the models still
    training are always a leading slice of it: a step runs that slice, split only where batch sizes differ
    (a model's last, smaller batch of an epoch), and Adam steps it slice by slice of equal learning rate.
    The seconds of an epoch are those of the whole stack."""
    if layout not in LAYOUTS:
        raise ValueError(f"stacked layout must be one of {tuple(LAYOUTS)}, got '{layout}'")
    n_train = [len(images)] * len(cfgs) if n_train is None else [int(n) for n in n_train]
    if len(n_train) != len(cfgs) or not all(0 < n <= len(images) for n in n_train):
        raise ValueError(f"n_train needs one N in [1, {len(images)}] per model, got {n_train} for {len(cfgs)} "
                         "models")
    check_settings(cfgs, n_train)
    adversary = check_adversary(cfgs[0], adversary, images)
    device = images.device
    schedules = [Schedule(c, n) for c, n in zip(cfgs, n_train)]
    order = sorted(range(len(cfgs)), key=lambda i: -schedules[i].total)  # stable: ties keep their order
    cfgs, n_train, schedules = [cfgs[i] for i in order], [n_train[i] for i in order], [schedules[i] for i in order]
    models = []
    for c in cfgs:
        torch.manual_seed(c.seed)
        models.append(build_classifier(model_cfg).to(device))
    model = LAYOUTS[layout](models)
    optimizer = Adam(model.parameters(), lr=cfgs[0].lr, weight_decay=cfgs[0].weight_decay)
    histories: list[list[dict]] = [[] for _ in cfgs]
    totals = torch.zeros(len(cfgs), dtype=torch.float64, device=device)  # loss x examples, this epoch
    started = [time.perf_counter()] * len(cfgs)
    steps = schedules[0].total
    several_n = len(set(n_train)) > 1  # then the adversary learns each block's N (even in a run of one N)
    bar = tqdm(range(steps), desc=f"train {len(cfgs)} stacked {cfgs[0].mode} N={sorted(set(n_train))}",
               disable=not progress, mininterval=5)
    model.train()
    for t in bar:
        active = sum(s.total > t for s in schedules)
        batches = [s.batch(t) for s in schedules[:active]]
        epochs = [s.epoch for s in schedules[:active]]
        loss = torch.zeros((), device=device)
        for rows in runs([len(b) for b in batches]):
            batch = torch.stack(batches[rows]).to(device)
            x, y = images[batch], labels[batch]
            if cfgs[0].mode != "normal":
                x = stacked_adversarial_batch(Rows(model, rows), x, y, batch, cfgs[rows], epochs[rows], adversary,
                                              n_train[rows] if several_n else None)
            logits = model.forward_stacked(x, rows)
            losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(len(x), -1).mean(dim=1)
            loss = loss + losses.sum()
            totals[rows] += losses.detach().double() * y.shape[1]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step_rows([(rows, learning_rate(epochs[rows.start], cfgs[0])) for rows in runs(epochs)])
        ending = [m for m in range(active) if schedules[m].epoch_ends()]
        if ending:
            now, mean_loss = time.perf_counter(), (totals / torch.tensor(n_train, device=device)).tolist()
            for m in ending:
                histories[m].append(epoch_record(epochs[m], cfgs[m], mean_loss[m], now - started[m]))
                totals[m], started[m] = 0.0, now
            bar.set_postfix(loss=f"{mean_loss[ending[0]]:.3f}")
    unstacked = model.unstack(model_cfg)
    back = sorted(range(len(order)), key=lambda j: order[j])  # stack position of each input config
    return [unstacked[j] for j in back], [histories[j] for j in back]
