"""One entry point per workflow stage. Each takes plain paths and config dicts (as Snakemake holds them) and
knows nothing of Snakemake, so the tests run exactly what the workflow runs."""

from __future__ import annotations

import functools
import logging
import os
import platform
import re
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import h5py
import numpy as np
import torch

from . import __version__
from .attack_io import best_restart_success, class_keeping, read_record, save_attack
from .attacks import Adversary, AttackConfig, pgd, pgd_adversary
from .costs import TRAINING_ATTACK
from .data import (FontsSpec, evaluation_subset, read_font_list, read_font_set, read_glyph_bank, read_labels,
                   read_ranges, read_split, split_size, training_subset, write_fonts)
from .device import configure_torch, resolve_device
from .fonts import (build_glyph_bank, default_font_dirs, discover_font_files, extract_fonts, fetch_archive,
                    font_set_digest, font_set_manifest, pinned_font_files, sha256_of)
from .grid import n_grid
from .io import atomic_path, read_json, write_json
from .models import load_classifier, save_classifier
from .onmanifold import (ClassDecoders, clamped_shares, decode_variables, decoded_images, latent_box,
                         learned_manifold_adversary, learned_manifold_attack, transformation_adversary,
                         true_manifold_adversary, true_manifold_attack)
from .stacked import resolve_engine, train_stacked
from .training import TrainConfig, error_rate, predict, train_classifier
from .transformer import PRESETS, TransformRanges
from .vaegan import VAEGANConfig, load_vaegan, reconstruction_error, sample, save_vaegan, train_vaegan


log = logging.getLogger(__name__)


def log_to(path: str | os.PathLike) -> None:
    """Send stderr (tracebacks, tqdm, logging) to the job's log file, line-buffered."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stderr = open(path, "w", buffering=1)  # noqa: SIM115 (lives as long as the job)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, force=True,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def attack_config(section: dict, **overrides) -> AttackConfig:
    """Build an AttackConfig from a config section, ignoring keys that are not attack settings; the radius of
    attacks through a decoder is called `eta` in the config (as in the paper) and `eps` here."""
    names = {f.name for f in fields(AttackConfig)}
    section = {("eps" if k == "eta" else k): v for k, v in section.items()}
    return AttackConfig(**{**{k: v for k, v in section.items() if k in names}, **overrides})


def fetch_fonts(archive_cfg: dict, archive_path: str, out_dir: str) -> None:
    """Download (or reuse) the pinned font archive and extract its font files into `out_dir`."""
    if not archive_cfg["url"]:
        raise ValueError("fonts.source is 'archive' but fonts.archive.url is empty; set the archive's URL")
    digest = fetch_archive(archive_cfg["url"], archive_path, archive_cfg["sha256"])
    files = extract_fonts(archive_path, out_dir)
    log.info("archive %s (sha256 %s): %d font files extracted to %s", archive_path, digest, len(files), out_dir)


def build_fonts(fonts_cfg: dict, out: str, archive_dir: str | None = None) -> None:
    """Find fonts, build the glyph bank, render both FONTS splits, and write `results/data/fonts.h5`."""
    if fonts_cfg["source"] == "archive":
        dirs = [archive_dir] + list(fonts_cfg["extra_dirs"])
    elif fonts_cfg["source"] == "pinned":  # the set's own files wherever they are: every other font is ignored
        dirs = default_font_dirs(True, True, fonts_cfg["extra_dirs"])
    else:
        dirs = default_font_dirs(fonts_cfg["include_matplotlib"], fonts_cfg["include_system"], fonts_cfg["extra_dirs"])
    if fonts_cfg["source"] == "pinned":
        manifest = font_set_manifest(fonts_cfg["pinned"])
        paths = pinned_font_files(manifest, dirs)
        font_set = f"pinned set {fonts_cfg['pinned']}"
        log.info("pinned font set %s: all %d listed files found with their sha256", manifest, len(paths))
    else:
        paths = discover_font_files(dirs)
        font_set = f"{fonts_cfg['source']} fonts"
        log.info("looked in %s: %d font files", dirs, len(paths))
    bank, kept, verdicts = build_glyph_bank(paths, fonts_cfg["max_fonts"], fonts_cfg["shuffle_seed"],
                                            fonts_cfg["min_recognized"], point_size=fonts_cfg["point_size"],
                                            searched=tuple(str(d) for d in dirs), order=fonts_cfg["order"])
    for v in verdicts:
        if not v.kept:
            log.info("dropped %s: %s", v.path, v.reason)
    digests = [sha256_of(p) for p in kept]
    set_digest = font_set_digest(digests)
    log.info("kept %d fonts (%s, font-set sha256 %s): %s", len(kept), font_set, set_digest,
             ", ".join(p.name for p in kept))
    spec = FontsSpec(fonts_cfg["per_font_class_train"], fonts_cfg["per_font_class_test"],
                     replace(PRESETS[fonts_cfg["ranges"]], convention=fonts_cfg["geometry"]), fonts_cfg["seed"])
    r = spec.ranges
    write_fonts(out, bank, spec, [str(p) for p in kept], attrs={
        "dataset": "fonts", "ranges": fonts_cfg["ranges"], "ranges_low": r.low.numpy(), "ranges_high": r.high.numpy(),
        "geometry": r.convention, "seed": spec.seed, "n_fonts": len(kept), "letters": "ABCDEFGHIJ",
        "font_set": font_set, "font_set_sha256": set_digest}, font_sha256=digests)
    log.info("wrote %s: %d train, %d test images", out, split_size(out, "train"), split_size(out, "test"))


def write_font_list(fonts_h5: str, out: str) -> None:
    """The fonts of a FONTS file as a manifest in `sha256sum` format (digest, two spaces, font file), in the glyph
    bank's order, so that two users can compare their font sets line by line (`diff`, `sha256sum -c`)."""
    rows = read_font_list(fonts_h5)
    with atomic_path(out) as tmp:
        tmp.write_text("".join(f"{digest}  {name}\n" for digest, name in rows))
    log.info("wrote %s: %d fonts", out, len(rows))


def build_torchvision(name: str, root: str, out: str, download: bool, system: bool = True) -> None:
    """EMNIST (digits) or Fashion-MNIST from `root` (else the system folders if `system`, else downloaded there
    when allowed) into the shared layout."""
    from .datasets import convert  # torchvision: only this stage needs it

    convert(name, root, out, download, system)


def load_tensors(data_path: str, split: str, device: torch.device,
                 rows: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of one split (or of `rows` of it) on `device`."""
    data = read_split(data_path, split, rows)
    return torch.from_numpy(data["images"]).to(device), torch.from_numpy(data["labels"]).to(device)


def load_decoders(vaegan_paths: list[str], device: torch.device) -> ClassDecoders:
    """The class-specific VAE-GANs of one dataset, in class order (path i holds class i)."""
    if not vaegan_paths:
        raise ValueError("the learned manifold needs the VAE-GAN of every class; none were given")
    return ClassDecoders([load_vaegan(p, device) for p in vaegan_paths]).to(device)


def transformation_ranges(data_path: str, section: dict) -> TransformRanges:
    """Bounds of adversarial transformations: the FONTS sampling ranges (and geometry) where configured, else the
    config's `bounds` under its `geometry`."""
    if section["fonts_use_data_ranges"]:
        try:
            return read_ranges(data_path)
        except RuntimeError:
            pass  # a dataset without a true manifold stores no ranges
    ranges = TransformRanges(**section["bounds"], convention=section["geometry"])
    ranges.validate()
    return ranges


def training_adversary(mode: str, data_path: str, train: dict, images: torch.Tensor, labels: torch.Tensor,
                       cls_cfg: dict, vaegan_paths: list[str]) -> Adversary | None:
    """What makes the adversarial half of each batch in `mode` (None for normal training)."""
    device = images.device
    if mode == "normal":
        return None
    if mode == "adversarial":
        return pgd_adversary(images)
    if mode == "onmanifold_true":
        if "codes" not in train:
            raise ValueError(f"{data_path} has no transformation codes: onmanifold_true needs FONTS, whose true "
                             "manifold is known; use onmanifold_learned for other datasets")
        glyphs = torch.from_numpy(read_glyph_bank(data_path)[0]).to(device)
        return true_manifold_adversary(glyphs, torch.from_numpy(train["font"]).to(device),
                                       torch.from_numpy(train["codes"]).to(device), read_ranges(data_path))
    if mode == "onmanifold_learned":
        decoders = load_decoders(vaegan_paths, device)
        latents = decoders.encode_mean(images, labels)
        setting = cls_cfg["onmanifold_attack"]["latent_box"]
        log.info("training latents outside [-%g, %g]: %s; latent box: %s", decoders.bound, decoders.bound,
                 clamped_shares(latents, decoders.bound), setting)
        # The box of a model trained on the first n images (data_range: their own ranges), made once per n.
        box = functools.cache(lambda n: latent_box(latents[:n], labels[:n], setting, decoders.bound))
        return learned_manifold_adversary(decoders, latents, box)
    if mode == "transformation":
        return transformation_adversary(images, transformation_ranges(data_path, cls_cfg["transformation_attack"]))
    raise ValueError(f"unknown training mode '{mode}'")


def train_setting(data_path: str, model_paths: list[str], metrics_paths: list[str], dataset: str, mode: str,
                  n_train: int | list[int], seeds: list[int], cls_cfg: dict, device_name: str = "auto",
                  threads: int = 1, vaegan_paths: list[str] | None = None) -> list[dict]:
    """Train the classifiers of one setting (dataset, mode, N), one per seed, on the first `n_train` images of
    the fixed permutation; write each one's model and metrics. `n_train` may also give one N per model: the
    settings of several N then train in one job (`classifiers.lock_step: all_n`).

    The data, the adversary (decoders, latents) and the test set are loaded once for all models. The engine
    (`classifiers.engine`) trains them stacked in lock step or one after another; both give each model
    what training it alone gives (tests/test_stacked.py)."""
    n_of = [int(n_train)] * len(seeds) if isinstance(n_train, int) else [int(n) for n in n_train]
    if not len(model_paths) == len(metrics_paths) == len(seeds) == len(n_of):
        raise ValueError(f"one model and one metrics path per seed are needed: seeds {list(seeds)}, N {n_of}, "
                         f"models {list(model_paths)}, metrics {list(metrics_paths)}")
    device = resolve_device(device_name)
    configure_torch(threads, device)
    engine = resolve_engine(cls_cfg["engine"], device)
    subset = training_subset(split_size(data_path, "train"), max(n_of), cls_cfg["subset_seed"])
    train_data = read_split(data_path, "train", subset)  # nested subsets: model m trains on the first n_of[m]
    images = torch.from_numpy(train_data["images"]).to(device)
    labels = torch.from_numpy(train_data["labels"]).to(device)
    section = TRAINING_ATTACK.get(mode)
    cfgs = [TrainConfig(mode=mode, epochs=cls_cfg["epochs"], batch_size=cls_cfg["batch_size"], lr=cls_cfg["lr"],
                        lr_decay=cls_cfg["lr_decay"], weight_decay=cls_cfg["weight_decay"], seed=int(seed),
                        adversarial_fraction=cls_cfg["adversarial_fraction"],
                        attack=attack_config(cls_cfg[section]) if section else AttackConfig()) for seed in seeds]
    adversary = training_adversary(mode, data_path, train_data, images, labels, cls_cfg, vaegan_paths or [])
    trained = []  # (model, history, seconds) per model
    if engine == "stacked":
        start = time.perf_counter()
        models, histories = train_stacked(images, labels, cfgs, adversary=adversary, n_train=n_of)
        seconds = time.perf_counter() - start
        trained = [(model, history, seconds) for model, history in zip(models, histories)]
    else:
        for cfg, n in zip(cfgs, n_of):
            start = time.perf_counter()
            # A model of N images alone: its adversary's examples are those of its own training set.
            own = functools.partial(adversary, blocks=(n,)) if adversary and len(set(n_of)) > 1 else adversary
            model, history = train_classifier(images[:n], labels[:n], cfg, adversary=own)
            trained.append((model, history, time.perf_counter() - start))
    test_images, test_labels = load_tensors(data_path, "test", device)
    out = []
    for cfg, n, (model, history, seconds), model_path, metrics_path in zip(cfgs, n_of, trained, model_paths,
                                                                          metrics_paths):
        metrics = {
            "dataset": dataset, "mode": mode, "n_train": n, "seed": cfg.seed, "epochs": cfg.epochs,
            "test_error": error_rate(model, test_images, test_labels),
            "train_error": error_rate(model, images[:n], labels[:n]),
            "n_test": len(test_labels), "train_seconds": seconds, "history": history,
            "engine": engine,
            "trained_with_seeds": [c.seed for c in cfgs] if engine == "stacked" else [cfg.seed],
            "trained_with_n": n_of if engine == "stacked" else [n],
            "config": {k: v for k, v in cls_cfg.items() if k == section or k not in TRAINING_ATTACK.values()},
            "vaegans": list(vaegan_paths or []),
            "device": str(device), "threads": threads, "torch": torch.__version__, "package": __version__,
            "python": platform.python_version(),
        }
        save_classifier(model, model_path)
        write_json(metrics_path, metrics)
        log.info("%s %s N=%d seed=%d: test error %.4f (%.1fs, %s)", dataset, mode, n, cfg.seed,
                 metrics["test_error"], seconds, engine)
        out.append(metrics)
    return out


def for_each_model(stage, *per_model_paths: list[str]) -> list:
    """Run `stage(*paths)` for the models of one setting (dataset, mode, N), one after another in this process:
    each result is exactly the one a process of its own makes, and the process start-up (importing torch and
    the package, about 1.5 s) is paid once per setting."""
    if len({len(paths) for paths in per_model_paths}) > 1:
        raise ValueError(f"one path per model is needed in each list, got {[list(p) for p in per_model_paths]}")
    return [stage(*paths) for paths in zip(*per_model_paths)]


def seeds_of(paths: list[str]) -> list[int]:
    """The seeds of a setting job's models, read from their folders (`.../seed{seed}/model.pt`): a job learns
    its seeds from its outputs, so that dropping a seed from the config reruns nothing."""
    return [folder_number(path, 1, "seed") for path in paths]


def n_train_of(paths: list[str]) -> list[int]:
    """The N of each model of a job, read from its folder (`.../N{n}/seed{seed}/model.pt`)."""
    return [folder_number(path, 2, "N") for path in paths]


def folder_number(path: str, up: int, prefix: str) -> int:
    """The number in the folder `up` levels above `path`, named `prefix` and the number."""
    match = re.fullmatch(rf"{prefix}(\d+)", Path(path).parents[up - 1].name)
    if not match:
        name = {"seed": "a seed folder (.../seed<number>/)", "N": "an N folder (.../N<number>/seed<number>/)"}[prefix]
        raise ValueError(f"{path} is not in {name}; the {prefix} cannot be read from it")
    return int(match.group(1))


def train_judge(data_path: str, model_path: str, metrics_path: str, dataset: str, cls_cfg: dict, judge_cfg: dict,
                device_name: str = "auto", threads: int = 1) -> dict:
    """Train the dataset's judge: a normally trained classifier on every training image, with a seed of its own
    and `judge_cfg["epochs"]`; it takes part in no attack and no verdict, and says whether a successful
    on-manifold example still shows its class (`judge_onmanifold`)."""
    settings = {**cls_cfg, "epochs": judge_cfg["epochs"], "engine": "sequential"}
    (metrics,) = train_setting(data_path, [model_path], [metrics_path], dataset, "normal",
                               split_size(data_path, "train"), [judge_cfg["seed"]], settings, device_name, threads)
    return metrics


def judge_onmanifold(judge_path: str, judge_metrics: str, records: dict[str, list[str]], outs: list[str],
                     device_name: str = "auto", threads: int = 1) -> list[dict]:
    """Per model, the class-keeping rates (`attack_io.class_keeping`) of its on-manifold records, by the judge
    (its model and metrics.json); `records` maps the record's name (onmanifold, onmanifold_learned) to one record
    per model, as `outs`."""
    if any(len(paths) != len(outs) for paths in records.values()):
        raise ValueError(f"one record per model is needed for each of {list(records)}: {len(outs)} models")
    device = resolve_device(device_name)
    configure_torch(threads, device)
    judge = load_classifier(judge_path, device)
    judge_error = read_json(judge_metrics)["test_error"]
    docs = []
    for i, out in enumerate(outs):
        doc = {name: {**class_keeping(judge, paths[i]), "record": paths[i]} for name, paths in records.items()}
        doc["judge"] = {"model": judge_path, "test_error": judge_error}
        write_json(out, doc)
        log.info("%s: %s", out, doc)
        docs.append(doc)
    return docs


def attack_pgd(data_path: str, model_path: str, out: str, pgd_cfg: dict, device_name: str = "auto",
               threads: int = 1) -> dict:
    """Attack the fixed evaluation subset of the test set with L_inf PGD and write the per-example record."""
    device = resolve_device(device_name)
    configure_torch(threads, device)
    subset = evaluation_subset(split_size(data_path, "test"), pgd_cfg["n_test"], pgd_cfg["seed"])
    images, labels = load_tensors(data_path, "test", device, rows=subset)
    cfg = attack_config(pgd_cfg, early_stop=True)
    model = load_classifier(model_path, device)
    start = time.perf_counter()
    result = pgd(model, images, labels, cfg, indices=torch.from_numpy(subset), progress=True)
    seconds = time.perf_counter() - start
    rates = save_attack(out, result, subset, cfg, attrs={"seconds": seconds, "device": str(device),
                                                          "model": str(model_path)})
    log.info("PGD on %d images in %.1fs: %s", len(subset), seconds, rates)
    return rates


def attack_onmanifold(data_path: str, model_path: str, out: str, manifold: str, onm_cfg: dict,
                      vaegan_paths: list[str] | None = None, device_name: str = "auto", threads: int = 1) -> dict:
    """Attack the on-manifold evaluation subset through the true decoder (FONTS) or the class VAE-GANs."""
    device = resolve_device(device_name)
    configure_torch(threads, device)
    subset = evaluation_subset(split_size(data_path, "test"), onm_cfg["n_test"], onm_cfg["seed"])
    data = read_split(data_path, "test", subset)
    images = torch.from_numpy(data["images"]).to(device)
    labels = torch.from_numpy(data["labels"]).to(device)
    cfg = attack_config(onm_cfg, early_stop=True)
    model = load_classifier(model_path, device)
    index = torch.from_numpy(subset)
    learned: dict[str, dict] = {}  # what only a learned-manifold record holds
    start = time.perf_counter()
    if manifold == "true":
        if "codes" not in data:
            raise ValueError(f"{data_path} has no true manifold (no transformation codes); attack the learned one")
        codes = torch.from_numpy(data["codes"]).to(device)
        glyphs = torch.from_numpy(read_glyph_bank(data_path)[0]).to(device)
        result, decode = true_manifold_attack(model, glyphs, torch.from_numpy(data["font"]).to(device), labels,
                                              codes, read_ranges(data_path), cfg, index, progress=True)
        clean_latent = codes
    elif manifold == "learned":
        decoders = load_decoders(vaegan_paths or [], device)
        means = decoders.encode_mean(images, labels)
        setting = onm_cfg["latent_box"]
        low, high = latent_box(means, labels, setting, decoders.bound)
        clean_latent = torch.maximum(torch.minimum(means, high), low)
        result, decode = learned_manifold_attack(model, decoders, clean_latent, labels, cfg, index, progress=True,
                                                 box=(low, high))
        learned = {"extra": {"encoder_mean": means, "latent_low": low, "latent_high": high},
                   "attrs": {"latent_box": setting, "latent_bound": decoders.bound},
                   "stats": clamped_shares(means, decoders.bound)}
        log.info("test latents outside [-%g, %g]: %s; latent box: %s", decoders.bound, decoders.bound,
                 learned["stats"], setting)
    else:
        raise ValueError(f"manifold must be 'true' or 'learned', got '{manifold}'")
    seconds = time.perf_counter() - start
    rates = save_attack(out, result, subset, cfg, images=decoded_images(result, decode),
                        extra={"clean_latent": clean_latent, "test_pred": predict(model, images),
                               "clean_decoded": decode_variables(clean_latent, decode),
                               **learned.get("extra", {})},
                        attrs={"manifold": manifold, "seconds": seconds, "device": str(device),
                               "model": str(model_path), "vaegans": [str(p) for p in vaegan_paths or []],
                               **learned.get("attrs", {})},
                        stats=learned.get("stats"))
    log.info("on-manifold (%s) attack on %d images in %.1fs: %s", manifold, len(subset), seconds, rates)
    return rates


def manifold_distances(images: torch.Tensor, data: dict[str, np.ndarray], dist_cfg: dict, true_manifold: tuple | None,
                       local: tuple | None, origins: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Distance of images to the manifold: projection onto the true one given (glyphs, ranges), else the local
    linear approximation given (pca, train images, their PCA features). On the local approximation, `origins`
    (the images the attack started from; None for clean images) give every estimator of `LOCAL_ESTIMATORS`
    under its name, and `distance` is the configured one's."""
    from .distances import LOCAL_ESTIMATORS, distance_to_local_manifold, project_true_manifold

    if true_manifold is not None:
        glyphs, ranges = true_manifold
        device = images.device
        dist, codes, _ = project_true_manifold(
            images, glyphs, torch.from_numpy(data["font"]).to(device), torch.from_numpy(data["labels"]).to(device),
            torch.from_numpy(data["codes"]).to(device), ranges, steps=dist_cfg["steps"], lr=dist_cfg["lr"],
            starts=dist_cfg["starts"], seed=dist_cfg["seed"], indices=torch.from_numpy(data["index"]))
        return {"distance": dist, "codes": codes}
    pca, train_images, train_feats = local
    out = distance_to_local_manifold(images, train_images, pca, k=dist_cfg["neighbours"], train_feats=train_feats,
                                     origins=origins)
    out["affine"] = out["distance"]
    if origins is None:  # clean images: delta = 0 (paper); the mean-centred variant is their affine distance
        out.update(paper=torch.zeros_like(out["distance"]), mean_centred=out["distance"])
    return {"distance": out[dist_cfg["local_estimator"]], "regularized": out["regularized"],
            **{f"distance_{name}": out[name] for name in LOCAL_ESTIMATORS}}


def compute_distances(dataset: str, data_path: str, pgd_path: str, onmanifold_path: str, out: str,
                      dist_cfg: dict, device_name: str = "auto", threads: int = 1) -> dict:
    """Distances to the manifold of clean test images, their PGD and their on-manifold adversarial examples."""
    from .distances import LOCAL_ESTIMATORS, distance_to_perturbation_ratio, fit_pca, pca_features

    device = resolve_device(device_name)
    configure_torch(threads, device)
    start = time.perf_counter()
    keys = ("index", "label", "adversarial", "success", "best_restart", "clean_pred")
    # An on-manifold example starts from its decoded clean latent, where the record has it (else the test image).
    records = {"pgd": read_record(pgd_path, keys),
               "onmanifold": read_record(onmanifold_path, keys, optional=("clean_decoded",))}
    # Both records attack subsets of the same test images: read and measure each clean image once.
    union = np.union1d(records["pgd"]["index"], records["onmanifold"]["index"])
    test = {**read_split(data_path, "test", union), "index": union}
    true_manifold, local = None, None
    if "codes" in test:
        true_manifold = (torch.from_numpy(read_glyph_bank(data_path)[0]).to(device), read_ranges(data_path))
    else:
        train = torch.from_numpy(read_split(data_path, "train")["images"]).to(device)
        pca = fit_pca(train, dim=dist_cfg["pca_dim"])
        local = (pca, train, pca_features(train, pca))
    clean = torch.from_numpy(test["images"]).to(device)
    d_clean = manifold_distances(clean, test, dist_cfg, true_manifold, local)
    arrays: dict[str, np.ndarray] = {"clean/index": union, "clean/distance": d_clean["distance"].cpu().numpy()}
    for name in LOCAL_ESTIMATORS:
        if f"distance_{name}" in d_clean:
            arrays[f"clean/distance_{name}"] = d_clean[f"distance_{name}"].cpu().numpy()
    summary: dict = {"dataset": dataset, "manifold": "true" if local is None else "local linear",
                     "estimator": "projection" if local is None else dist_cfg["local_estimator"],
                     "clean_median_distance": float(np.median(arrays["clean/distance"]))}
    if "regularized" in d_clean:
        summary["clean_n_regularized"] = int(d_clean["regularized"].sum())
    for name, record in records.items():
        rows = np.searchsorted(union, record["index"])
        adversarial = torch.from_numpy(record["adversarial"]).to(device)
        decoded = record.get("clean_decoded")
        origins = clean[torch.from_numpy(rows).to(device)] if decoded is None else torch.from_numpy(decoded).to(device)
        d_adv = manifold_distances(adversarial, {k: v[rows] for k, v in test.items()}, dist_cfg, true_manifold, local,
                                   origins=origins)
        fooled = best_restart_success(record) & (record["clean_pred"] == record["label"])
        perturbation = (adversarial - origins).flatten(1).norm(dim=1)
        for estimator in LOCAL_ESTIMATORS:
            if f"distance_{estimator}" in d_adv:
                arrays[f"{name}/distance_{estimator}"] = d_adv[f"distance_{estimator}"].cpu().numpy()
        ratio = distance_to_perturbation_ratio(d_adv["distance"], perturbation).cpu().numpy()
        arrays.update({f"{name}/index": record["index"], f"{name}/success": fooled,
                       f"{name}/distance_clean": arrays["clean/distance"][rows],
                       f"{name}/distance_adversarial": d_adv["distance"].cpu().numpy(),
                       f"{name}/perturbation_l2": perturbation.cpu().numpy(),
                       f"{name}/distance_to_perturbation": ratio})
        if "regularized" in d_adv:
            arrays[f"{name}/regularized"] = d_adv["regularized"].cpu().numpy()
            summary[f"{name}_n_regularized"] = int(d_adv["regularized"].sum())
        summary[f"{name}_n"] = int(fooled.sum())
        for key, values in (("median_distance", arrays[f"{name}/distance_adversarial"]),
                            ("median_distance_to_perturbation", ratio)):
            summary[f"{name}_{key}"] = float(np.median(values[fooled])) if fooled.any() else float("nan")
    summary["seconds"] = time.perf_counter() - start
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        for key, value in arrays.items():
            h5.create_dataset(key, data=value, compression="gzip", compression_opts=1)
        for key, value in {**summary, **{f"config.{k}": v for k, v in dist_cfg.items()}}.items():
            h5.attrs[key] = value
        h5.attrs["pgd_record"], h5.attrs["onmanifold_record"] = pgd_path, onmanifold_path
    log.info("distances to the manifold for %s: %s", dataset, summary)
    return summary


def vaegan_settings(vaegan_cfg: dict, dataset: str) -> VAEGANConfig:
    """The VAE-GAN settings of one dataset (beta, epochs and the step budget are set per dataset in the config)."""
    return VAEGANConfig(latent_dim=vaegan_cfg["latent_dim"], channels=tuple(vaegan_cfg["channels"]),
                        beta=vaegan_cfg["beta"][dataset], gamma=vaegan_cfg["gamma"], lr=vaegan_cfg["lr"],
                        batch_size=vaegan_cfg["batch_size"], epochs=vaegan_cfg["epochs"][dataset],
                        max_steps=vaegan_cfg["max_steps"][dataset],
                        seed=vaegan_cfg["seed"], truncation=vaegan_cfg["truncation"])


def class_rows(data_path: str, split: str, label: int) -> np.ndarray:
    """Rows of one class in a split."""
    return np.flatnonzero(read_labels(data_path, split) == label)


def train_vaegan_stage(data_path: str, model_path: str, record_path: str, dataset: str, label: int,
                       vaegan_cfg: dict, device_name: str = "auto", threads: int = 1) -> dict:
    """Train the VAE-GAN of one class on all its training images; record its reconstruction error on test."""
    device = resolve_device(device_name)
    configure_torch(threads, device)
    cfg = vaegan_settings(vaegan_cfg, dataset)
    images, _ = load_tensors(data_path, "train", device, rows=class_rows(data_path, "train", label))
    test_images, _ = load_tensors(data_path, "test", device, rows=class_rows(data_path, "test", label))
    start = time.perf_counter()
    model, history = train_vaegan(images, cfg, name=f"vaegan {dataset} class {label}")
    seconds = time.perf_counter() - start
    record = {"dataset": dataset, "label": label, "n_train": len(images), "n_test": len(test_images),
              "reconstruction_error_train": reconstruction_error(model, images),
              "reconstruction_error_test": reconstruction_error(model, test_images),
              "train_seconds": seconds, "history": history, "config": vaegan_cfg, "device": str(device),
              "torch": torch.__version__, "package": __version__}
    save_vaegan(model, model_path, extra={"dataset": dataset, "label": label})
    write_json(record_path, record)
    log.info("VAE-GAN %s class %d: test reconstruction error %.4f (%.1fs)", dataset, label,
             record["reconstruction_error_test"], seconds)
    return record


def vaegan_quality(dataset: str, vaegan_paths: list[str], record_paths: list[str], classifier_path: str,
                   out_csv: str, out_png: str, n_samples: int, seed: int, device_name: str = "auto") -> None:
    """Per class: reconstruction error on test images, and the share of samples a normal classifier trained on
    the real data assigns to the VAE-GAN's class; plus the sample grid for the report."""
    import pandas as pd

    from .figures import vaegan_sample_grid
    from .tables import write_table

    device = resolve_device(device_name)
    classifier = load_classifier(classifier_path, device)
    rows, grid = [], []
    for label, (model_path, record_path) in enumerate(zip(vaegan_paths, record_paths)):
        model = load_vaegan(model_path, device)
        images = sample(model, n_samples, torch.Generator(device="cpu").manual_seed(seed * 1000 + label))
        pred = predict(classifier, images.to(device))
        record = read_json(record_path)
        rows.append({"dataset": dataset, "label": label,
                     "reconstruction_error_test": record["reconstruction_error_test"],
                     "reconstruction_error_train": record["reconstruction_error_train"],
                     "sample_accuracy": float((pred == label).float().mean()), "n_samples": n_samples,
                     "classifier": classifier_path, "model": model_path})
        grid.append(images[:10].cpu().numpy())
    df = pd.DataFrame(rows)
    write_table(df, out_csv)
    vaegan_sample_grid(np.stack(grid), out_png, title=f"{dataset.upper()}: VAE-GAN samples (rows: classes)",
                       dataset=dataset)
    log.info("VAE-GAN quality for %s:\n%s", dataset, df[["label", "reconstruction_error_test", "sample_accuracy"]])


def make_table(metrics_paths: list[str], attack_paths: dict[str, list[str]], out: str,
               class_kept_paths: list[str] | None = None) -> None:
    """Join every model's metrics with its attack records into `results/tables/metrics.csv`.

    `attack_paths` maps attack name (pgd, onmanifold, onmanifold_learned) to one record per model, in order;
    `class_kept_paths`, where given, one judge's class-keeping file per model (`judge_onmanifold`).
    """
    from .tables import metrics_row, metrics_table, write_table  # pandas: only this stage needs it

    for name, paths in {**attack_paths, "class_kept": class_kept_paths or metrics_paths}.items():
        if len(paths) != len(metrics_paths):
            raise ValueError(f"every classifier needs exactly one '{name}' record: {len(metrics_paths)} models, "
                             f"{len(paths)} records")
    rows = [metrics_row(m, {name: paths[i] for name, paths in attack_paths.items()},
                        class_kept_paths[i] if class_kept_paths else None)
            for i, m in enumerate(metrics_paths)]
    write_table(metrics_table(rows), out)


def plot_fig4(table: str, pdf: str, png: str, success_column: str, datasets: list[str] | None = None,
              reference: str | None = None) -> None:
    """Draw Fig. 4 from the metrics table, with the paper's values from its reference table."""
    import pandas as pd

    from .figures import fig4_regular_robustness  # matplotlib and seaborn: only figure stages need them
    from .paper import read_reference

    paper = read_reference(reference) if reference else None
    fig4_regular_robustness(pd.read_csv(table), pdf, png, success_column, datasets, paper)


def plot_fig1(panels: list[dict], pdf: str, png: str, n_examples: int) -> None:
    """Draw Fig. 1 (examples of regular and on-manifold adversarial examples) from the attack records."""
    from .figures import fig1_examples

    fig1_examples(panels, pdf, png, n_examples)


def plot_fig2(panels: list[dict], pdf: str, png: str, paper_distances: str | None = None) -> None:
    """Draw Fig. 2 (distance to the manifold) from the distance files, with the paper's histograms."""
    from .figures import fig2_manifold_distance
    from .paper import read_paper_distances

    fig2_manifold_distance(panels, pdf, png, read_paper_distances(paper_distances) if paper_distances else None)


def plot_fig3(table: str, pdf: str, png: str, success_column: str, reference: str | None = None) -> None:
    """Draw Fig. 3 (on-manifold robustness and generalization) from the metrics table, with the paper's values."""
    import pandas as pd

    from .figures import fig3_onmanifold_robustness
    from .paper import read_reference

    paper = read_reference(reference) if reference else None
    fig3_onmanifold_robustness(pd.read_csv(table), pdf, png, success_column, paper)


def compare_with_paper(table: str, reference: str, out: str, confidence: float = 0.95) -> None:
    """results/tables/paper_comparison.csv: every value that both the paper and this run have, side by side."""
    import pandas as pd

    from .paper import comparison_summary, comparison_table, read_reference
    from .tables import write_table

    comparison = comparison_table(pd.read_csv(table), read_reference(reference), confidence)
    write_table(comparison, out)
    for row in comparison_summary(comparison).itertuples():
        logging.info("%s, %s: %d values, median |run - paper| %.3f", row.figure, row.dataset, row.values,
                     row.median_abs_difference)


def report_claims(table: str, distances: dict[str, dict[int, str]], cfg: dict, json_path: str, md_path: str,
                  comparison: str | None = None, front_page: str | None = None, fonts_data: str | None = None,
                  reference: str | None = None, paper_distances: str | None = None) -> dict:
    """Judge the paper's four claims per dataset and write claims.json and claims.md, each statistic beside the
    same statistic on the paper's own numbers (the calibration); then the summary of the paper comparison, the
    settings that differ from the paper's, and the report's front page."""
    import pandas as pd

    from .claims import (class_keeping_markdown, distance_summary, front_page_rst, judge, second_attack_markdown,
                         second_column, write_claims)
    from .paper import (attach_paper_values, calibrate, comparison_markdown, comparison_summary,
                        paper_reach, read_paper_distances, read_reference, settings_beside_paper)

    floor = cfg["claims"]["offmanifold_distance"]
    summaries = {d: {int(s): distance_summary(p, floor) for s, p in f.items()} for d, f in distances.items()}
    df = pd.read_csv(table)
    checks = judge(df, summaries, cfg, source=str(table))
    column = second_column(cfg["figures"]["success_column"])  # claim 4 under the signed-step attack
    second = judge(df, summaries, {**cfg, "figures": {**cfg["figures"], "success_column": column}},
                   source=str(table)) if column in df else []
    calibration = []
    if reference and paper_distances:
        ref, ref_distances = read_reference(reference), read_paper_distances(paper_distances)
        calibration = calibrate(ref, ref_distances, cfg)
        on_run_grid = calibrate(ref, ref_distances, cfg, functools.partial(n_grid, cfg))
        attach_paper_values(checks, calibration, on_run_grid,
                            reach=lambda key: paper_reach(ref, ref_distances, cfg, key))
    summary = comparison_summary(pd.read_csv(comparison)) if comparison else None
    n_fonts = len(read_glyph_bank(fonts_data)[1]) if fonts_data else None
    settings = settings_beside_paper(cfg, n_fonts, read_font_set(fonts_data) if fonts_data else None)
    appendix = second_attack_markdown(df, checks, second, cfg["datasets"])
    appendix += class_keeping_markdown(df, cfg["datasets"])
    appendix += comparison_markdown(summary, settings) if summary is not None else []
    doc = write_claims(checks, cfg, json_path, md_path, appendix, calibration)
    if front_page:
        with atomic_path(front_page) as tmp:
            tmp.write_text(front_page_rst(doc, summary, settings))
    for claim in doc["claims"]:
        logging.info("claim %d (%s): %s; on the paper's numbers: %s", claim["id"], claim["title"],
                     claim["verdicts"], claim.get("paper_verdicts"))
    return doc
