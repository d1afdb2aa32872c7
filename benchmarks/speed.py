"""The study's pieces against plain references, measured side by side in one run on the same model and data.

Each section times the package's implementation and a reference that computes the same thing the obvious way
(torchattacks' PGD; a plain PyTorch training loop; attacks, projections and VAE-GAN training written as one
plain loop, restart after restart, every example for every step), alternating the two `--repeats` times and
comparing their fastest runs. Success rates and errors are printed beside the speeds, so a faster number can
be checked to mean the same result. The `stacked` section compares the stacked training engine (the seeds of a
setting in lock step) with training them one after another, and counts the operators each launches per
training image. The last section prints the GPU-hour estimate of the paper grid.

The fixture (FONTS rendered from this machine's fonts, a normal and an adversarially trained classifier, ten
small class VAE-GANs) is built once and kept in benchmarks/out/fixture.
Run: .venv/bin/python benchmarks/speed.py [--device auto|cpu|cuda] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from manifold_robustness.attacks import AttackConfig, pgd, restart_noise, success_rates
from manifold_robustness.data import FontsSpec, make_fonts, read_glyph_bank, read_split, write_dataset
from manifold_robustness.device import configure_torch, resolve_device
from manifold_robustness.distances import _project_batch, project_true_manifold, start_codes
from manifold_robustness.fonts import build_glyph_bank, default_font_dirs, discover_font_files
from manifold_robustness.models import build_classifier, load_classifier, save_classifier
from manifold_robustness.onmanifold import ClassDecoders, clipped_box, learned_manifold_attack
from manifold_robustness.training import TrainConfig, error_rate, train_classifier
from manifold_robustness.transformer import PRESETS, decode
from manifold_robustness.vaegan import VAEGANConfig, l1_error, load_vaegan, save_vaegan, train_vaegan

sys.path.insert(0, str(Path(__file__).resolve().parent))
import paper_estimate  # noqa: E402 (a sibling script)

OUT = Path(__file__).resolve().parent / "out" / "fixture"
# Adversarial training of the fixture: the paper's attack inside training (40 steps of 0.01 in the eps-ball).
TRAINING_ATTACK = AttackConfig(eps=0.3, steps=40, step_size=0.01, restarts=1, early_stop=False)
# The quick study's VAE-GAN (config/config.yaml): the fixture's are trained for its 5 epochs, the benchmark for 1.
VAEGAN_CFG = VAEGANConfig(channels=(16, 32, 64), epochs=5)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def side_by_side(device: torch.device, repeats: int, ours: Callable[[], dict], theirs: Callable[[], dict],
                 ) -> tuple[float, float, dict, dict]:
    """Run both `repeats` times, alternating; return the fastest times and the last results of each."""
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    results: dict[str, dict] = {}
    for _ in range(repeats):
        for name, fn in (("theirs", theirs), ("ours", ours)):
            sync(device)
            start = time.perf_counter()
            results[name] = fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return min(times["ours"]), min(times["theirs"]), results["ours"], results["theirs"]


def report(title: str, unit: str, work: float, t_ours: float, t_theirs: float, ours: dict, theirs: dict,
           reference: str) -> float:
    """Print one comparison: throughputs, their ratio and the results beside them; returns the ratio."""
    ratio = t_theirs / t_ours
    print(f"\n{title}")
    print(f"  {'package':>10}: {work / t_ours:12,.0f} {unit}/s  ({t_ours:.2f} s)  {fmt(ours)}")
    print(f"  {reference:>10}: {work / t_theirs:12,.0f} {unit}/s  ({t_theirs:.2f} s)  {fmt(theirs)}")
    print(f"  speed-up: {ratio:.2f}x")
    return ratio


def fmt(values: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


# ---------------------------------------------------------------------------------------------------------------
# Fixture
# ---------------------------------------------------------------------------------------------------------------


def shuffled(data_path: Path, split: str) -> dict[str, np.ndarray]:
    """A split in a seeded random order: files store it font by font, and the benchmarks take prefixes."""
    data = read_split(data_path, split)
    order = np.random.default_rng(0).permutation(len(data["labels"]))
    return {key: values[order] for key, values in data.items()}


def fixture(device: torch.device) -> dict:
    """FONTS data, a normal and an adversarial classifier and ten class VAE-GANs, built once on the CPU."""
    OUT.mkdir(parents=True, exist_ok=True)
    data_path = OUT / "fonts.h5"
    if not data_path.exists():
        bank, kept, _ = build_glyph_bank(discover_font_files(default_font_dirs(True, True, [])), 1000, 0)
        splits = make_fonts(bank, FontsSpec(30, 10, PRESETS["moderate"], 0))
        write_dataset(data_path, splits, bank, [str(p) for p in kept], attrs={"dataset": "fonts"})
    train, test = shuffled(data_path, "train"), shuffled(data_path, "test")
    x, y = torch.from_numpy(train["images"]), torch.from_numpy(train["labels"])
    models = {}
    for mode, n in (("normal", 4000), ("adversarial", 4000)):
        path = OUT / f"{mode}.pt"
        if not path.exists():
            cfg = TrainConfig(mode=mode, epochs=10, attack=TRAINING_ATTACK)
            model, _ = train_classifier(x[:n], y[:n], cfg, progress=False)
            save_classifier(model, path)
        models[mode] = load_classifier(path, device)
    vaegans = []
    for c in range(10):
        path = OUT / f"vaegan{c}.pt"
        if not path.exists():
            model, _ = train_vaegan(x[y == c], VAEGAN_CFG, progress=False)
            save_vaegan(model, path)
        vaegans.append(load_vaegan(path, device))
    tensors = {f"{split}_{k}": torch.from_numpy(d[k]).to(device) for split, d in (("train", train), ("test", test))
               for k in ("images", "labels", "font", "codes")}
    return {**tensors, "models": models, "decoders": ClassDecoders(vaegans).to(device),
            "glyphs": torch.from_numpy(read_glyph_bank(data_path)[0]).to(device)}


# ---------------------------------------------------------------------------------------------------------------
# References: the same computations, written as plain loops
# ---------------------------------------------------------------------------------------------------------------


def plain_training(x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> torch.nn.Module:
    """A plain PyTorch loop: data in memory, Adam with weight decay, the same batches and learning rates."""
    torch.manual_seed(cfg.seed)
    model = build_classifier().to(x.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for epoch in range(cfg.epochs):
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * cfg.lr_decay ** epoch
        for batch in torch.randperm(len(x), generator=shuffle).to(x.device).split(cfg.batch_size):
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def plain_torchattacks_pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig) -> dict:
    """torchattacks.PGD, one call per restart; an example counts as fooled by a restart if its output is."""
    import torchattacks

    attack = torchattacks.PGD(model, eps=cfg.eps, alpha=cfg.step_size, steps=cfg.steps, random_start=True)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    fooled = []
    for _ in range(cfg.restarts):
        adv = attack(x, y)
        with torch.no_grad():
            fooled.append(model(adv).argmax(1) != y)
    return rates(torch.stack(fooled, 1), correct)


def plain_latent_attack(model: torch.nn.Module, decoders: ClassDecoders, z: torch.Tensor, y: torch.Tensor,
                        cfg: AttackConfig, indices: torch.Tensor) -> dict:
    """Signed-gradient attack on latents, restart after restart, every example for every step, through the
    VAE-GANs' own decoders (eval mode) class by class; an example is fooled by a restart if any iterate is
    misclassified (the package's definition)."""

    def decode(v: torch.Tensor) -> torch.Tensor:
        out = v.new_zeros(len(v), 1, 28, 28)
        for c, vaegan in enumerate(decoders.models):
            rows = (y == c).nonzero().squeeze(1)
            out = out.index_put((rows,), vaegan.decode(v[rows]))
        return out

    bound = torch.tensor(decoders.bound)
    center, lo, hi = clipped_box(z, cfg.eps, -bound, bound)
    with torch.no_grad():
        correct = model(decode(center)).argmax(1) == y
    fooled = []
    for r in range(cfg.restarts):
        noise = restart_noise(indices, r, tuple(z.shape[1:]), cfg.seed).to(z)
        v = torch.maximum(torch.minimum(center + cfg.eps * noise, hi), lo)
        hit = torch.zeros(len(y), dtype=torch.bool, device=z.device)
        for t in range(cfg.steps + 1):
            v = v.detach().requires_grad_(True)
            logits = model(decode(v))
            hit |= logits.argmax(1) != y
            if t == cfg.steps:
                break
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), v)
            v = torch.maximum(torch.minimum(v + cfg.step_size * grad.sign(), hi), lo)
        fooled.append(hit)
    return rates(torch.stack(fooled, 1), correct)


def plain_projection(images: torch.Tensor, glyphs: torch.Tensor, font: torch.Tensor, label: torch.Tensor,
                     codes: torch.Tensor, steps: int, starts: int, indices: torch.Tensor) -> torch.Tensor:
    """Projection onto the true manifold start after start: the package's own projection loop, run once per
    start instead of on all starts folded into one batch; returns the distance of the best start."""
    ranges = PRESETS["moderate"]
    low, high = ranges.low.to(images), ranges.high.to(images)
    best = torch.full((len(images),), float("inf"), device=images.device)
    for begin in start_codes(codes, ranges, starts, 0, indices):
        found = _project_batch(images, glyphs, font, label, begin[None], low, high, steps, 0.09, ranges.convention)
        with torch.no_grad():
            best = torch.minimum(best, (decode(glyphs, font, label, found) - images).flatten(1).norm(dim=1))
    return best


def plain_vaegan(images: torch.Tensor, cfg: VAEGANConfig) -> float:
    """VAE-GAN training with the package's networks and losses, written as a plain loop; returns the mean L1
    of the last epoch."""
    from manifold_robustness.vaegan import VAEGAN, discriminator_loss, generator_loss, kl_divergence

    torch.manual_seed(cfg.seed)
    model = VAEGAN(cfg).to(images.device)
    vae = list(model.encoder.parameters()) + list(model.decoder.parameters())
    opt_vae = torch.optim.Adam(vae, lr=cfg.lr, betas=(0.5, 0.999))
    opt_disc = torch.optim.Adam(model.discriminator.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    model.train()
    for _ in range(cfg.epochs):
        l1_sum = 0.0
        for batch in torch.randperm(len(images)).to(images.device).split(cfg.batch_size):
            x = images[batch]
            mean, logvar = model.encode(x)
            recon = model.decode(mean + (0.5 * logvar).exp() * torch.randn_like(mean))
            fake = torch.cat([recon, model.decode(torch.randn_like(mean))])
            disc = discriminator_loss(model.discriminator, x, fake.detach())
            opt_disc.zero_grad()
            disc.backward()
            opt_disc.step()
            l1 = l1_error(x, recon)
            total = kl_divergence(mean, logvar) + cfg.beta * l1 + cfg.gamma * generator_loss(model.discriminator, x,
                                                                                             fake)
            opt_vae.zero_grad()
            total.backward()
            opt_vae.step()
            l1_sum += float(l1.detach()) * len(x)
    return l1_sum / len(images)


def rates(fooled: torch.Tensor, correct: torch.Tensor) -> dict:
    r = success_rates(fooled.cpu(), correct.cpu())
    return {"success": r["success"], "success_any": r["success_any"], "n_correct": r["n_correct"]}


def compare_rates(key: str, ours: dict, theirs: dict, trials_per_example: int) -> None:
    """Say where the package's rate is below the reference's, and whether by more than the sampling noise.

    The two attacks draw independent random starts, so their rates differ by chance; the gap is measured in
    standard errors of a difference of two proportions over the correctly classified examples (restarts of
    one example are not independent, so for `success` this noise is a lower bound)."""
    gap = theirs[key] - ours[key]
    if gap <= 0:
        return
    n = ours["n_correct"] * trials_per_example
    se = math.sqrt(sum(r[key] * (1 - r[key]) for r in (ours, theirs)) / n) or float("inf")
    verdict = "within the sampling noise of the random starts" if gap <= 2 * se else "LOWER beyond sampling noise"
    print(f"  {key}: the package is lower by {gap:.4f}, {gap / se:.1f} standard errors: {verdict}")


# ---------------------------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------------------------


def bench_pgd(fx: dict, device: torch.device, repeats: int) -> dict[str, float]:
    x, y = fx["test_images"][:1000], fx["test_labels"][:1000]
    out = {}
    # eps 0.3 is the study's budget. At eps 0 no correctly classified example can succeed, so none leaves the
    # batch early: the worst case for the package, which then runs every step like the reference.
    for name, eps in (("normal", 0.3), ("adversarial", 0.3), ("adversarial", 0.0)):
        model = fx["models"][name]
        cfg = AttackConfig(eps=eps, steps=40, step_size=0.01, restarts=5, batch_size=1000)

        def ours(model=model, cfg=cfg) -> dict:
            result = pgd(model, x, y, cfg)
            return rates(result.success, result.correct)

        t_ours, t_theirs, r_ours, r_theirs = side_by_side(
            device, repeats, ours, lambda model=model, cfg=cfg: plain_torchattacks_pgd(model, x, y, cfg))
        out[f"pgd_{name}_eps{eps}"] = report(f"PGD eps {eps}, 40 steps of 0.01, 5 restarts, {len(y)} FONTS test images, "
                                    f"{name} training", "image-restarts", len(y) * cfg.restarts, t_ours, t_theirs,
                                    r_ours, r_theirs, "torchattacks")
        for key in ("success", "success_any"):
            compare_rates(key, r_ours, r_theirs, 1 if key == "success_any" else cfg.restarts)
    return out


def bench_training(fx: dict, device: torch.device, repeats: int) -> dict[str, float]:
    x, y = fx["train_images"][:4000], fx["train_labels"][:4000]
    xt, yt = fx["test_images"], fx["test_labels"]
    cfg = TrainConfig(epochs=3)

    def ours() -> dict:
        model, _ = train_classifier(x, y, cfg, progress=False)
        return {"test_error": error_rate(model, xt, yt)}

    t_ours, t_theirs, r_ours, r_theirs = side_by_side(
        device, repeats, ours, lambda: {"test_error": error_rate(plain_training(x, y, cfg), xt, yt)})
    return {"training": report(f"normal training, N {len(x)}, {cfg.epochs} epochs, batch {cfg.batch_size}, Adam",
                               "images", len(x) * cfg.epochs, t_ours, t_theirs, r_ours, r_theirs, "plain loop")}


# Operators that only describe a tensor (views, shapes) or allocate one: no kernel runs for them.
METADATA_OPS = {"aten::" + name for name in (
    "view", "_unsafe_view", "reshape", "_reshape_alias", "as_strided", "as_strided_", "select", "slice", "permute",
    "transpose", "t", "movedim", "unsqueeze", "squeeze", "expand", "alias", "detach", "lift_fresh", "unbind",
    "split", "narrow", "resolve_conj", "resolve_neg", "empty", "empty_like", "empty_strided", "resize_",
    "result_type", "is_nonzero", "item", "_local_scalar_dense", "numpy_T", "contiguous", "to", "_to_copy")}


def operator_launches(device: torch.device, fn: Callable[[], object]) -> dict[str, int]:
    """What `fn` launches, from the torch profiler: aten operators that do work (leaves of the operator tree,
    views and allocations left out: on a GPU these are the kernels), and on CUDA the kernels themselves."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    events = prof.events()

    def works(event) -> bool:
        return event.name.startswith("aten::") and event.name not in METADATA_OPS

    def below(event) -> bool:  # whether a working operator runs inside this one
        return any(works(c) or below(c) for c in event.cpu_children)

    out = {"operators": sum(1 for e in events if works(e) and not below(e))}
    if device.type == "cuda":
        out["kernels"] = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    return out


def bench_stacked(fx: dict, device: torch.device, repeats: int, stack: list[int]) -> dict[str, float]:
    """M seeds of one setting trained stacked in lock step against one after another (the sequential engine):
    images per second and operators launched per training image, for normal, adversarial and (on a GPU)
    learned-manifold training. Both engines train the same models (tests/test_stacked.py)."""
    from manifold_robustness.onmanifold import learned_manifold_adversary
    from manifold_robustness.stacked import train_stacked

    gpu = device.type == "cuda"
    images, labels = fx["train_images"], fx["train_labels"]
    decoders = fx["decoders"]
    # The quick study's attacks inside training on the CPU (10 and 5 steps), the paper's 40 on a GPU; the
    # paper's random start in both.
    paper = replace(TRAINING_ATTACK, start="distance_direction")
    pgd_attack = paper if gpu else replace(paper, steps=10, step_size=0.075)
    latent_attack = paper if gpu else replace(paper, steps=5, step_size=0.15)
    modes = [("normal", 4000 if gpu else 2000, AttackConfig()), ("adversarial", 2000 if gpu else 500, pgd_attack)]
    if gpu:
        modes.append(("onmanifold_learned", 1000, latent_attack))
    out = {}
    for mode, n, attack in modes:
        x, y = images[:n], labels[:n]
        adversary = None
        if mode == "onmanifold_learned":
            adversary = learned_manifold_adversary(decoders, decoders.encode_mean(x, y))
        for m in stack:
            cfgs = [TrainConfig(mode=mode, epochs=1, seed=s, attack=attack) for s in range(m)]

            def theirs(cfgs=cfgs, x=x, y=y, adversary=adversary) -> dict:
                runs = [train_classifier(x, y, c, progress=False, adversary=adversary) for c in cfgs]
                return {"last_loss_mean": float(np.mean([h[-1]["loss"] for _, h in runs]))}

            # Launches per training image: the difference between runs on 2 x `few` and on `few` images, so
            # that what a run launches once (building, stacking and unstacking the models) drops out.
            few = min(n, 400) // 2

            def per_image(run: Callable[[int], object]) -> dict[str, float]:
                small, large = operator_launches(device, lambda: run(few)), operator_launches(device, lambda: run(2 * few))
                return {unit: (large[unit] - small[unit]) / (m * few) for unit in small}

            sequential = per_image(lambda k, cfgs=cfgs, x=x, y=y, adversary=adversary: [
                train_classifier(x[:k], y[:k], c, progress=False, adversary=adversary) for c in cfgs])
            per_call = 0.0  # part of both counts: the random starts, one draw per attack call whatever its size
            if mode != "normal":
                shape = (1, 28, 28) if mode == "adversarial" else tuple(decoders.encode_mean(x[:1], y[:1]).shape[1:])
                per_call = operator_launches(device, lambda shape=shape, attack=attack: restart_noise(
                    torch.arange(100, device=device), 0, shape, 0, attack.start))["operators"]
                print(f"\n  drawing the random starts: {per_call:.0f} operators per attack call (one per training "
                      f"step of one model, or of the stack), whatever the number of examples")
            for layout in ("grouped", "vmap"):
                def ours(cfgs=cfgs, x=x, y=y, adversary=adversary, layout=layout) -> dict:
                    _, histories = train_stacked(x, y, cfgs, progress=False, adversary=adversary, layout=layout)
                    return {"last_loss_mean": float(np.mean([h[-1]["loss"] for h in histories]))}

                t_ours, t_theirs, r_ours, r_theirs = side_by_side(device, repeats, ours, theirs)
                key = f"stacked_{layout}_{mode}_M{m}"
                steps = f", {attack.steps} attack steps" if mode != "normal" else ""
                out[key] = report(f"{m} seeds stacked ({layout}) vs one after another: {mode} training, N {n}, "
                                  f"1 epoch, batch 100{steps}", "images", m * n, t_ours, t_theirs, r_ours, r_theirs,
                                  "sequential")
                stacked = per_image(lambda k, cfgs=cfgs, x=x, y=y, adversary=adversary, layout=layout: train_stacked(
                    x[:k], y[:k], cfgs, progress=False, adversary=adversary, layout=layout))
                for unit, count in stacked.items():
                    ratio = sequential[unit] / count
                    print(f"  {unit} per training image: stacked {count:.3f}, sequential {sequential[unit]:.3f}: "
                          f"{ratio:.2f}x fewer stacked (M = {m})")
                    out[f"{key}_{unit}_fewer"] = ratio
                    if per_call and unit == "operators":
                        batch = TrainConfig().batch_size
                        rest = (sequential[unit] - per_call / batch) / (count - per_call / (m * batch))
                        print(f"  the same without the random starts: {rest:.2f}x fewer stacked")
                        out[f"{key}_{unit}_fewer_without_starts"] = rest
    return out


def bench_onmanifold(fx: dict, device: torch.device, repeats: int) -> dict[str, float]:
    n = 200
    x, y = fx["test_images"][:n], fx["test_labels"][:n]
    model, decoders = fx["models"]["normal"], fx["decoders"]
    z = decoders.encode_mean(x, y)
    cfg = AttackConfig(eps=0.3, steps=40, step_size=0.01, restarts=5, layout="folded")
    index = torch.arange(n)

    def ours() -> dict:
        result, _ = learned_manifold_attack(model, decoders, z, y, cfg, index)
        return rates(result.success, result.correct)

    t_ours, t_theirs, r_ours, r_theirs = side_by_side(
        device, repeats, ours, lambda: plain_latent_attack(model, decoders, z, y, cfg, index))
    return {"onmanifold": report(f"on-manifold attack (VAE-GAN latents), eta 0.3, 40 steps, 5 restarts, {n} images",
                                 "image-restarts", n * cfg.restarts, t_ours, t_theirs, r_ours, r_theirs,
                                 "plain loop")}


def bench_distances(fx: dict, device: torch.device, repeats: int) -> dict[str, float]:
    n, steps, starts = 100, 100, 4
    x, y = fx["test_images"][:n], fx["test_labels"][:n]
    font, codes, glyphs = fx["test_font"][:n], fx["test_codes"][:n], fx["glyphs"]
    index = torch.arange(n)
    # The study projects adversarial examples: PGD's on the normal model (eps 0.3, one restart).
    x = pgd(fx["models"]["normal"], x, y, AttackConfig(restarts=1)).variables[:, 0]

    def ours() -> dict:
        d, _, _ = project_true_manifold(x, glyphs, font, y, codes, PRESETS["moderate"], steps=steps, lr=0.09,
                                        starts=starts, seed=0, indices=index)
        return {"median_distance": float(d.median())}

    t_ours, t_theirs, r_ours, r_theirs = side_by_side(device, repeats, ours, lambda: {
        "median_distance": float(plain_projection(x, glyphs, font, y, codes, steps, starts, index).median())})
    return {"distances": report(f"projection of PGD examples onto the true manifold, {n} images, {starts} starts x {steps} Adam steps",
                                "images", n, t_ours, t_theirs, r_ours, r_theirs, "per start")}


def bench_vaegan(fx: dict, device: torch.device, repeats: int) -> dict[str, float]:
    x = fx["train_images"][fx["train_labels"] == 0]
    cfg = replace(VAEGAN_CFG, epochs=1)

    def ours() -> dict:
        model, history = train_vaegan(x, cfg, progress=False)
        return {"last_epoch_l1": history[-1]["l1"]}

    t_ours, t_theirs, r_ours, r_theirs = side_by_side(device, repeats, ours,
                                                      lambda: {"last_epoch_l1": plain_vaegan(x, cfg)})
    return {"vaegan": report(f"VAE-GAN training, one class ({len(x)} images), {cfg.epochs} epochs, channels "
                             f"{cfg.channels}", "images", len(x) * cfg.epochs, t_ours, t_theirs, r_ours, r_theirs,
                             "plain loop")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None,
                        help="sections to run: pgd training stacked onmanifold distances vaegan estimate")
    parser.add_argument("--stack", nargs="*", type=int, default=[5],
                        help="models trained together in the stacked section (the paper's 5 seeds by default)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    configure_torch(args.threads, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"device: {device} ({name}); torch {torch.__version__}; best of {args.repeats} runs each, alternating")
    sections = {"pgd": bench_pgd, "training": bench_training,
                "stacked": lambda fx, device, repeats: bench_stacked(fx, device, repeats, args.stack),
                "onmanifold": bench_onmanifold,
                "distances": bench_distances, "vaegan": bench_vaegan}
    chosen = args.only or [*sections, "estimate"]
    fx = fixture(device) if set(chosen) & set(sections) else {}
    ratios: dict[str, float] = {}
    for key in chosen:
        if key in sections:
            ratios.update(sections[key](fx, device, args.repeats))
    if ratios:
        print("\nspeed-ups (package / reference throughput): "
              + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    if "estimate" in chosen:
        print("\nGPU estimate of the paper grid (benchmarks/paper_estimate.py):")
        paper_estimate.main([])


if __name__ == "__main__":
    main()
