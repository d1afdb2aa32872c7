"""Attacks through decoders (true FONTS manifold, VAE-GAN latents, transformations) and the training modes that
use them, on the small FONTS classifier of conftest."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from manifold_robustness.attacks import (STARTS, AttackConfig, AttackResult, restart_noise, success_rates,
                                        training_config)
from manifold_robustness.onmanifold import (
    ClassDecoders,
    clamped_shares,
    clipped_box,
    decoded_images,
    latent_box,
    learned_manifold_adversary,
    learned_manifold_attack,
    transformation_adversary,
    transformation_attack,
    transformation_box,
    true_manifold_adversary,
    true_manifold_attack,
)
from manifold_robustness.training import MODES, TrainConfig, predict, train_classifier
from manifold_robustness.transformer import IDENTITY_CODE, PRESETS, decode, transform
from manifold_robustness.vaegan import VAEGAN, VAEGANConfig

RANGES = PRESETS["easy"]  # the conftest data are rendered from the easy box


def config(**kw) -> AttackConfig:
    base = {"eps": 0.3, "steps": 10, "step_size": 0.03, "restarts": 2, "layout": "sequential"}
    return AttackConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def test_set(fonts_data, glyph_bank):
    """80 test images with their codes, fonts and labels, and the glyph bank (the true decoder)."""
    d = fonts_data["test"]
    rows = torch.randperm(len(d["labels"]), generator=torch.Generator().manual_seed(1))[:80]
    pick = {k: torch.from_numpy(v)[rows] for k, v in d.items()}
    return {**pick, "rows": rows, "glyphs": torch.from_numpy(glyph_bank[0]).float()}


@pytest.fixture(scope="module")
def decoders() -> ClassDecoders:
    """Ten small, untrained class VAE-GANs with distinct weights: enough for the invariants tested here."""
    models = []
    for c in range(10):
        torch.manual_seed(c)
        models.append(VAEGAN(VAEGANConfig(channels=(8, 16, 32), seed=c)).eval())
    return ClassDecoders(models)


def true_attack(model, s, cfg):
    return true_manifold_attack(model, s["glyphs"], s["font"], s["labels"], s["codes"], RANGES, cfg,
                                indices=s["rows"])


def test_true_manifold_attack_changes_only_the_codes(trained_model, test_set):
    s = test_set
    result, dec = true_attack(trained_model, s, config())
    codes = result.variables  # (n, R, 6)
    low, high = RANGES.low, RANGES.high
    assert ((codes >= low - 1e-6) & (codes <= high + 1e-6)).all()
    assert ((codes - s["codes"][:, None]).abs() <= 0.3 + 1e-6).all()
    images = decoded_images(result, dec)
    # The adversarial image is exactly the true decoder's rendering of the returned codes, same font and class.
    expected = decode(s["glyphs"], s["font"], s["labels"], result.best_variables())
    assert torch.equal(images, expected)
    assert images.min() >= 0 and images.max() <= 1
    pred = predict(trained_model, images)
    best = result.best_restart()
    assert torch.equal(pred, result.pred[torch.arange(len(best)), best])


def test_true_manifold_and_transformation_attacks_render_with_the_ranges_convention(trained_model, test_set):
    s = test_set
    sampling = replace(RANGES, convention="sampling")
    result, dec = true_manifold_attack(trained_model, s["glyphs"], s["font"], s["labels"], s["codes"], sampling,
                                       config(steps=3), indices=s["rows"])
    expected = decode(s["glyphs"], s["font"], s["labels"], result.best_variables(), "sampling")
    assert torch.equal(decoded_images(result, dec), expected)
    result, dec = transformation_attack(trained_model, s["images"], s["labels"], sampling, config(steps=3))
    expected = transform(s["images"], result.best_variables(), "sampling")
    torch.testing.assert_close(decoded_images(result, dec), expected)
    assert not torch.allclose(expected, transform(s["images"], result.best_variables()))


def test_true_manifold_clean_point_is_the_test_image(trained_model, test_set):
    s = test_set
    result, _ = true_attack(trained_model, s, config(eps=0.0, steps=2))
    assert torch.equal(result.clean_pred, predict(trained_model, s["images"]))


def run_attack(attack: str, model, s: dict, decoders, cfg: AttackConfig):
    """One of the three attacks through a decoder on the examples of `s`, keyed by their rows."""
    if attack == "true":
        return true_attack(model, s, cfg)
    if attack == "learned":
        latents = decoders.encode_mean(s["images"], s["labels"])
        return learned_manifold_attack(model, decoders, latents, s["labels"], cfg, s["rows"])
    return transformation_attack(model, s["images"], s["labels"], RANGES, cfg, s["rows"])


@pytest.mark.parametrize("attack", ["true", "learned", "transformation"])
def test_eta_zero_success_is_the_decoded_clean_error(trained_model, test_set, decoders, attack):
    s = test_set
    result, dec = run_attack(attack, trained_model, s, decoders, config(eps=0.0, steps=3))
    clean = decoded_images(result, dec)
    clean_error = (predict(trained_model, clean) != s["labels"]).float()
    assert torch.equal(result.success.float().mean(dim=1), clean_error)
    assert success_rates(result.success, result.correct)["success"] == 0.0


@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize("attack", ["true", "transformation"])
def test_on_manifold_restarts_start_inside_their_box(trained_model, test_set, attack, start):
    """With no steps the kept codes are the engine's start, drawn in the codes' own units and clipped to the box."""
    s = test_set
    cfg = config(eps=0.3, steps=0, restarts=2, early_stop=False, start=start, seed=3)
    if attack == "true":
        result, _ = true_attack(trained_model, s, cfg)
        center = s["codes"]
    else:
        result, _ = transformation_attack(trained_model, s["images"], s["labels"], RANGES, cfg, s["rows"])
        center = torch.tensor(IDENTITY_CODE).expand(len(s["rows"]), 6)
    center, lo, hi = clipped_box(center, 0.3, RANGES.low, RANGES.high)
    v = result.variables
    assert ((v >= lo[:, None]) & (v <= hi[:, None])).all()
    for r in range(2):
        offset = restart_noise(s["rows"], r, (6,), seed=3, start=start)
        expected = torch.minimum(torch.maximum(center + 0.3 * offset, lo), hi)
        torch.testing.assert_close(v[:, r], expected, atol=1e-6, rtol=0)
    assert (v != center[:, None]).any(dim=2).all()  # every restart moved off the clean codes


def test_transformation_with_eta_zero_is_the_identity(trained_model, test_set):
    s = test_set
    result, dec = transformation_attack(trained_model, s["images"], s["labels"], RANGES, config(eps=0.0, steps=2))
    identity = torch.tensor(IDENTITY_CODE)
    assert torch.equal(result.variables, identity.expand_as(result.variables))
    torch.testing.assert_close(decoded_images(result, dec), s["images"], atol=1e-5, rtol=0)  # float32 resampling


def test_transformation_attack_stays_in_its_bounds_and_fools(trained_model, test_set):
    s = test_set
    result, dec = transformation_attack(trained_model, s["images"], s["labels"], RANGES, config())
    v = result.variables
    identity = torch.tensor(IDENTITY_CODE)
    assert ((v >= RANGES.low - 1e-6) & (v <= RANGES.high + 1e-6)).all()
    assert ((v - identity).abs() <= 0.3 + 1e-6).all()
    images = decoded_images(result, dec)
    torch.testing.assert_close(images, transform(s["images"], result.best_variables()))
    rates = success_rates(result.success, result.correct)
    assert rates["success_any"] > 0  # rotations of +-0.3 rad and shifts fool a small classifier sometimes


def test_transformation_ranges_must_contain_the_identity(trained_model, test_set):
    from manifold_robustness.transformer import TransformRanges

    bad = TransformRanges(0.1, 0.1, 1.05, 1.2, 0.1)
    with pytest.raises(ValueError, match="must contain the identity"):
        transformation_attack(trained_model, test_set["images"], test_set["labels"], bad, config())


def test_class_decoders_route_each_example_to_its_class(decoders, test_set):
    z = torch.randn(len(test_set["labels"]), 10) * 3
    labels = test_set["labels"]
    with torch.no_grad():
        out = decoders.decode(z, labels)
        for i in (0, 7, 31):
            single = decoders.models[int(labels[i])].decode(z[i:i + 1])
            torch.testing.assert_close(out[i:i + 1], single)
    assert out.shape == (len(z), 1, 28, 28) and out.min() >= 0 and out.max() <= 1
    means = decoders.encode_mean(test_set["images"], labels, batch_size=7)
    torch.testing.assert_close(means[3:4], decoders.models[int(labels[3])].encode(test_set["images"][3:4])[0])


def double_decoders(decoders: ClassDecoders, layout: str) -> ClassDecoders:
    """float64 copies of the fixture's decoders, with batch norms whose running statistics fold into something
    other than the identity (the untrained fixture's are 0 and 1)."""
    models = [copy.deepcopy(m).double() for m in decoders.models]
    g = torch.Generator().manual_seed(5)
    for m in models:
        for bn in (mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)):
            for t, low, high in ((bn.running_mean, -1, 1), (bn.running_var, 0.5, 2), (bn.weight, 0.5, 1.5),
                                 (bn.bias, -0.5, 0.5)):
                t.data.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) * (high - low) + low)
    return ClassDecoders(models, layout=layout)


def test_grouped_decoding_gives_each_example_its_own_decoder_and_gradient(decoders, test_set):
    """The grouped layout (one network for all classes, a padded slot per example) against the per-class one:
    the same images and the same gradient w.r.t. the latents, in float64, for a batch with an empty class, a
    class of one and a crowded one (the width of the padding)."""
    per_class, grouped = (double_decoders(decoders, layout) for layout in ("per_class", "grouped"))
    labels = test_set["labels"][:30].clone()
    labels[labels == 4] = 5  # class 4 empty
    labels[:9] = 2  # class 2 crowded
    labels[9] = 7
    labels[10:][labels[10:] == 7] = 6  # class 7 holds one example
    z = (torch.randn(len(labels), 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2
         ).requires_grad_(True)
    weight = torch.rand(len(labels), 1, 28, 28, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    images = {}
    for name, dec in (("per_class", per_class), ("grouped", grouped)):
        out = dec.decode(z, labels)
        images[name] = (out, torch.autograd.grad((out * weight).sum(), z)[0])
    torch.testing.assert_close(images["grouped"][0], images["per_class"][0], atol=1e-12, rtol=0)
    torch.testing.assert_close(images["grouped"][1], images["per_class"][1], atol=1e-12, rtol=0)
    for i in (0, 9, 20):  # and each is the class VAE-GAN's own decoding (batch norms unfolded)
        own = per_class.models[int(labels[i])].decode(z[i:i + 1])
        torch.testing.assert_close(images["grouped"][0][i:i + 1], own, atol=1e-12, rtol=0)
    one_by_one = torch.cat([grouped.decode(z[i:i + 1], labels[i:i + 1]) for i in range(len(labels))])
    torch.testing.assert_close(one_by_one, images["grouped"][0], atol=1e-12, rtol=0)


def test_learned_attack_is_the_same_through_either_decoder_layout(trained_model, decoders, test_set):
    s = test_set
    model = copy.deepcopy(trained_model).double()
    results = []
    for layout in ("per_class", "grouped"):
        dec = double_decoders(decoders, layout)
        latents = dec.encode_mean(s["images"][:24].double(), s["labels"][:24])
        results.append(learned_manifold_attack(model, dec, latents, s["labels"][:24], config(steps=5),
                                               s["rows"][:24])[0])
    for field in ("clean_pred", "success", "pred"):
        assert torch.equal(getattr(results[1], field), getattr(results[0], field))
    # The losses are the model's on the decoded images: they tell the layouts' images apart even where the
    # untrained decoders' images are misclassified from the start and the attack keeps its starting points.
    torch.testing.assert_close(results[1].loss, results[0].loss, atol=1e-9, rtol=0)
    torch.testing.assert_close(results[1].variables, results[0].variables, atol=1e-9, rtol=0)


def test_decoder_layouts_reject_what_they_cannot_decode(decoders):
    with pytest.raises(ValueError, match="decoder layout must be one of"):
        ClassDecoders(decoders.models[:2], layout="vmap")
    mixed = [decoders.models[0], VAEGAN(VAEGANConfig(channels=(8, 16))).eval()]
    with pytest.raises(ValueError, match="decoders of one shape"):
        ClassDecoders(mixed, layout="grouped")
    two = ClassDecoders(decoders.models[:2], layout="grouped")
    with pytest.raises(ValueError, match=r"labels must be classes 0\.\.1, got 3"):
        two.decode(torch.zeros(2, 10), torch.tensor([0, 3]))


def test_learned_latents_stay_in_eta_box_and_truncation_box(trained_model, decoders, test_set):
    s = test_set
    # Start some latents near and beyond the box edge: the box is clipped to [-2, 2] first.
    latents = decoders.encode_mean(s["images"], s["labels"])
    latents[:10] = 1.9
    latents[10:20] = -2.5
    result, dec = learned_manifold_attack(trained_model, decoders, latents, s["labels"], config(eps=0.3),
                                          s["rows"])
    v = result.variables
    center = latents.clamp(-2, 2)[:, None]
    assert v.abs().max() <= 2.0 + 1e-6
    assert ((v - center).abs() <= 0.3 + 1e-6).all()
    images = decoded_images(result, dec)
    assert images.min() >= 0 and images.max() <= 1


@pytest.mark.parametrize("attack", ["true", "learned"])
def test_more_steps_never_lower_the_on_manifold_success(trained_model, test_set, decoders, attack):
    s = test_set
    rates = []
    for steps in (2, 8, 20):
        cfg = config(eps=0.2, steps=steps, step_size=0.02)
        if attack == "true":
            result, _ = true_attack(trained_model, s, cfg)
        else:
            latents = decoders.encode_mean(s["images"], s["labels"])
            result, _ = learned_manifold_attack(trained_model, decoders, latents, s["labels"], cfg, s["rows"])
        rates.append(result.success)
    for fewer, more in zip(rates, rates[1:]):
        assert (more >= fewer).all()  # same starts, first success kept: a success can only stay


def test_learned_attack_batched_equals_one_by_one(trained_model, decoders, test_set):
    s = test_set
    latents = decoders.encode_mean(s["images"], s["labels"])[:12]
    cfg = config(steps=5)
    model = copy.deepcopy(trained_model).double()
    dec = ClassDecoders([copy.deepcopy(m).double() for m in decoders.models])
    batch, _ = learned_manifold_attack(model, dec, latents.double(), s["labels"][:12], cfg, s["rows"][:12])
    for i in range(12):
        one, _ = learned_manifold_attack(model, dec, latents[i:i + 1].double(), s["labels"][i:i + 1], cfg,
                                         s["rows"][i:i + 1])
        assert torch.equal(one.success[0], batch.success[i])
        torch.testing.assert_close(one.variables[0], batch.variables[i], atol=1e-9, rtol=0)


@pytest.mark.parametrize("mode", [m for m in MODES if m != "normal"])
def test_every_adversarial_mode_trains_and_restores(train_tensors, fonts_data, glyph_bank, decoders, mode):
    images, labels = train_tensors[0][:300], train_tensors[1][:300]
    d = fonts_data["train"]
    adversary = {
        "adversarial": None,  # PGD on the training images is the default
        "onmanifold_true": true_manifold_adversary(torch.from_numpy(glyph_bank[0]).float(),
                                                   torch.from_numpy(d["font"][:300]),
                                                   torch.from_numpy(d["codes"][:300]), RANGES),
        "onmanifold_learned": learned_manifold_adversary(decoders, decoders.encode_mean(images, labels)),
        "transformation": transformation_adversary(images, RANGES),
    }[mode]
    cfg = TrainConfig(mode=mode, epochs=1, seed=0, attack=config(steps=2, restarts=1))
    model, history = train_classifier(images, labels, cfg, progress=False, adversary=adversary)
    assert not model.training and len(history) == 1 and history[0]["loss"] > 0
    assert all(not p.requires_grad for p in decoders.parameters())  # the decoders are never trained


def test_adversarial_modes_need_an_adversary(train_tensors):
    images, labels = train_tensors
    with pytest.raises(ValueError, match="needs an adversary"):
        train_classifier(images[:100], labels[:100], TrainConfig(mode="transformation", epochs=1), progress=False)


def test_onmanifold_training_examples_are_renderings_of_nearby_codes(train_tensors, fonts_data, glyph_bank,
                                                                     trained_model):
    """With eta = 0 the adversary returns the training images themselves (re-rendered from their codes); with
    eta > 0 it moves them along the manifold, within the code box."""
    images, labels = train_tensors
    d = fonts_data["train"]
    glyphs = torch.from_numpy(glyph_bank[0]).float()
    font, codes = torch.from_numpy(d["font"]), torch.from_numpy(d["codes"])
    adversary = true_manifold_adversary(glyphs, font, codes, RANGES)
    pos = torch.arange(20, 40)
    same = adversary(trained_model, pos, labels[pos], config(eps=0.0, restarts=1, early_stop=False))
    torch.testing.assert_close(same.clamp(0, 1), images[pos], atol=1e-6, rtol=0)
    moved = adversary(trained_model, pos, labels[pos], config(restarts=1, early_stop=False))
    assert moved.shape == (20, 1, 28, 28) and not moved.requires_grad
    assert moved.min() >= 0 and moved.max() <= 1
    assert ((moved - images[pos]).abs().amax(dim=(1, 2, 3)) > 0.1).float().mean() > 0.5


def test_clamped_shares_count_latents_and_coordinates_outside_the_prior_box():
    latents = torch.zeros(4, 10)
    latents[0, 3], latents[0, 7] = 2.5, -2.01
    latents[1, :] = 2.0  # on the edge: inside
    latents[2, 0] = -3.0
    latents[3, 5] = -1.99
    assert clamped_shares(latents, 2.0) == {"clamped_latent_share": 0.5, "clamped_coordinate_share": 3 / 40}
    assert clamped_shares(latents, 3.5) == {"clamped_latent_share": 0.0, "clamped_coordinate_share": 0.0}


def test_latent_box_is_the_prior_box_or_each_class_own_range():
    latents = torch.tensor([[0.0, 5.0], [1.0, -3.0], [-4.0, 0.5], [2.0, 2.0], [0.5, 0.5]])
    labels = torch.tensor([3, 3, 7, 7, 3])
    low, high = latent_box(latents, labels, "data_range", 2.0)
    assert low.tolist() == [[0.0, -3.0], [0.0, -3.0], [-4.0, 0.5], [-4.0, 0.5], [0.0, -3.0]]
    assert high.tolist() == [[1.0, 5.0], [1.0, 5.0], [2.0, 2.0], [2.0, 2.0], [1.0, 5.0]]
    low, high = latent_box(latents, labels, "prior", 2.0)
    assert (low == -2.0).all() and (high == 2.0).all() and low.shape == latents.shape
    with pytest.raises(ValueError, match="latent box must be one of"):
        latent_box(latents, labels, "pooled", 2.0)


def spread_latents(decoders, s):
    """Encoder means with a tenth of the coordinates beyond the prior's box, as trained encoders give them."""
    latents = decoders.encode_mean(s["images"], s["labels"])
    latents[::4, 2] = 2.6
    latents[1::4, 5] = -3.3
    return latents


def test_data_range_box_moves_no_clean_latent(trained_model, decoders, test_set):
    s = test_set
    latents = spread_latents(decoders, s)
    low, high = latent_box(latents, s["labels"], "data_range", decoders.bound)
    still, _ = learned_manifold_attack(trained_model, decoders, latents, s["labels"], config(eps=0.0, steps=2),
                                       s["rows"], box=(low, high))
    assert torch.equal(still.variables, latents[:, None].expand_as(still.variables))  # the center is the mean
    result, dec = learned_manifold_attack(trained_model, decoders, latents, s["labels"], config(eps=0.3),
                                          s["rows"], box=(low, high))
    v = result.variables
    assert ((v - latents[:, None]).abs() <= 0.3 + 1e-6).all()
    assert ((v >= low[:, None] - 1e-6) & (v <= high[:, None] + 1e-6)).all()
    assert (v.abs() > decoders.bound).any()  # the prior's box no longer binds
    torch.testing.assert_close(decoded_images(result, dec), decoders.decode(result.best_variables(), s["labels"]))


def test_prior_box_keeps_every_latent_in_the_truncation_box(trained_model, decoders, test_set):
    s = test_set
    latents = spread_latents(decoders, s)
    box = latent_box(latents, s["labels"], "prior", decoders.bound)
    result, _ = learned_manifold_attack(trained_model, decoders, latents, s["labels"], config(eps=0.3), s["rows"],
                                        box=box)
    v = result.variables
    assert v.abs().max() <= decoders.bound + 1e-6
    assert ((v - latents.clamp(-2, 2)[:, None]).abs() <= 0.3 + 1e-6).all()
    default, _ = learned_manifold_attack(trained_model, decoders, latents, s["labels"], config(eps=0.3), s["rows"])
    assert torch.equal(default.variables, v)  # no box given: the prior's


@pytest.fixture(scope="module")
def wide_vaegans(decoders):
    """The tiny VAE-GANs with encoder means stretched to a spread like trained ones' (std about 1.5)."""
    models = [copy.deepcopy(m) for m in decoders.models]
    with torch.no_grad():
        for m in models:
            m.encoder.mean.weight.mul_(25)
            m.encoder.mean.bias.fill_(0.5)
    return models


def test_latent_box_setting_reaches_the_attack_and_training_stages(tmp_path, fonts_data, glyph_bank,
                                                                   trained_model, wide_vaegans):
    """stages.attack_onmanifold and stages.training_adversary build the box from the config's latent_box: the
    record's clean latents are the encoder means (data_range) or their clipping (prior), its shares of latents
    outside the prior's box are those of the means whatever the setting, and the metrics table carries them."""
    import h5py
    import numpy as np

    from manifold_robustness import stages
    from manifold_robustness.attack_io import load_success_rates
    from manifold_robustness.data import write_dataset
    from manifold_robustness.io import write_json
    from manifold_robustness.models import save_classifier
    from manifold_robustness.tables import metrics_row
    from manifold_robustness.vaegan import save_vaegan

    data = tmp_path / "fonts.h5"
    write_dataset(data, fonts_data, glyph_bank[0], [str(p) for p in glyph_bank[1]])
    paths = [str(tmp_path / f"class{c}.pt") for c in range(10)]
    for m, path in zip(wide_vaegans, paths):
        save_vaegan(m, path)
    model = tmp_path / "model.pt"
    save_classifier(trained_model, model)
    dec = ClassDecoders(wide_vaegans)
    metrics = tmp_path / "metrics.json"
    write_json(metrics, {"dataset": "fashion", "mode": "normal", "n_train": 100, "seed": 0, "test_error": 0.1,
                         "train_error": 0.0, "epochs": 1})
    for setting in ("prior", "data_range"):
        out = tmp_path / f"{setting}.h5"
        onm = {"eta": 0.3, "steps": 3, "step_size": 0.1, "restarts": 2, "n_test": 40, "seed": 0,
               "layout": "sequential", "latent_box": setting}
        stages.attack_onmanifold(str(data), str(model), str(out), "learned", onm, paths, "cpu", 1)
        with h5py.File(out) as h5:
            rows = h5["index"][()]
            means = dec.encode_mean(torch.from_numpy(fonts_data["test"]["images"][rows]),
                                    torch.from_numpy(h5["label"][()]))
            torch.testing.assert_close(torch.from_numpy(h5["encoder_mean"][()]), means)
            clean = torch.from_numpy(h5["clean_latent"][()])
            adversarial = torch.from_numpy(h5["adversarial_latent"][()])
            low, high = torch.from_numpy(h5["latent_low"][()]), torch.from_numpy(h5["latent_high"][()])
            shares = clamped_shares(means, 2.0)
            assert 0 < shares["clamped_coordinate_share"] < shares["clamped_latent_share"] < 1
            assert h5.attrs["config.latent_box"] == setting and h5.attrs["config.latent_bound"] == 2.0
            for key, value in shares.items():
                assert h5.attrs[f"stat.{key}"] == pytest.approx(value)
        assert ((adversarial >= low - 1e-6) & (adversarial <= high + 1e-6)).all()
        assert ((adversarial - clean).abs() <= 0.3 + 1e-6).all()
        if setting == "data_range":
            torch.testing.assert_close(clean, means)
        else:
            torch.testing.assert_close(clean, means.clamp(-2, 2))
            assert (low == -2).all() and (high == 2).all()
        rates = load_success_rates(out)
        assert rates["latent_box"] == setting and rates["manifold"] == "learned"
        row = metrics_row(metrics, {"onmanifold": out, "onmanifold_learned": out})
        assert row["onmanifold_learned_clamped_share"] == pytest.approx(shares["clamped_coordinate_share"])
        assert row["onmanifold_learned_clamped_latent_share"] == pytest.approx(shares["clamped_latent_share"])
        assert row["onmanifold_learned_latent_box"] == setting

    train = {k: v[:60] for k, v in fonts_data["train"].items()}
    images, labels = torch.from_numpy(train["images"]), torch.from_numpy(train["labels"])
    means = dec.encode_mean(images, labels)
    pos = torch.arange(60)
    for setting, center in (("prior", means.clamp(-2, 2)), ("data_range", means)):
        cls_cfg = {"onmanifold_attack": {"eta": 0.0, "latent_box": setting}}
        adversary = stages.training_adversary("onmanifold_learned", str(data), train, images, labels, cls_cfg,
                                              paths)
        made = adversary(trained_model, pos, labels, config(eps=0.0, steps=1, restarts=1, early_stop=False))
        torch.testing.assert_close(made, dec.decode(center, labels))
    assert np.isnan(metrics_row(metrics, {})["onmanifold_learned_clamped_share"])


def test_clamped_shares_of_no_latents_are_undefined():
    shares = clamped_shares(torch.empty(0, 10), 2.0)
    assert set(shares) == {"clamped_latent_share", "clamped_coordinate_share"}
    assert all(v != v for v in shares.values())  # NaN


def test_latent_box_keeps_each_of_three_classes_apart():
    """With three classes a box computed from the wrong rows shows (with two, the other class is the right one)."""
    latents = torch.tensor([[0.0], [1.0], [5.0], [6.0], [-3.0], [-2.0]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    low, high = latent_box(latents, labels, "data_range", 2.0)
    assert low.squeeze(1).tolist() == [0.0, 0.0, 5.0, 5.0, -3.0, -3.0]
    assert high.squeeze(1).tolist() == [1.0, 1.0, 6.0, 6.0, -2.0, -2.0]


def test_class_decoders_are_frozen(decoders):
    """Built here, not taken from the shared fixture, so that this test is one that constructs them."""
    frozen = ClassDecoders([copy.deepcopy(m) for m in decoders.models[:2]])
    assert not any(p.requires_grad for p in frozen.parameters())


def test_clipped_box_takes_its_bounds_to_the_center():
    """float32 bounds around a float64 center on another device (`meta`): the box is the center's."""
    center = torch.tensor([[0.5, 3.0], [-3.0, 0.0]], dtype=torch.float64)
    low, high = torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 2.0])
    c, lo, hi = clipped_box(center, 0.3, low, high)
    assert c.dtype == lo.dtype == hi.dtype == torch.float64
    assert c.tolist() == [[0.5, 2.0], [-1.0, 0.0]]
    assert lo.tolist() == [[0.2, 1.7], [-1.0, -0.3]] and hi.tolist() == [[0.8, 2.0], [-0.7, 0.3]]
    on_meta = clipped_box(center.to("meta"), 0.3, low, high)
    assert {t.device.type for t in on_meta} == {"meta"}


def restarts_result(variables: torch.Tensor, loss: torch.Tensor) -> AttackResult:
    n, r = loss.shape
    return AttackResult(labels=torch.zeros(n, dtype=torch.long), clean_pred=torch.zeros(n, dtype=torch.long),
                        variables=variables, success=torch.zeros(n, r, dtype=torch.bool), loss=loss,
                        pred=torch.zeros(n, r, dtype=torch.long), steps_to_success=torch.full((n, r), -1))


def test_decoded_images_of_one_restart_or_of_the_best():
    """Restart 1 has the higher loss: the best restart's images are restart 1's, restart 0's are its own; rows are
    the examples' positions, passed in batches, and no example gives an empty (0, 1, 28, 28) batch."""
    variables = torch.arange(5 * 2 * 3, dtype=torch.float32).view(5, 2, 3)
    result = restarts_result(variables, torch.tensor([[0.0, 1.0]]).expand(5, 2))
    seen = []

    def decode(v: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        seen.append(rows.tolist())
        return (v.sum(1) + 100 * rows).view(-1, 1, 1, 1).expand(-1, 1, 28, 28)

    best = decoded_images(result, decode, batch_size=2)
    first = decoded_images(result, decode, restart=0)
    assert best[:, 0, 0, 0].tolist() == [(variables[i, 1].sum() + 100 * i).item() for i in range(5)]
    assert first[:, 0, 0, 0].tolist() == [(variables[i, 0].sum() + 100 * i).item() for i in range(5)]
    assert seen == [[0, 1], [2, 3], [4], [0, 1, 2, 3, 4]]
    with torch.device("meta"):  # the rows are made on the variables' device, not the default one
        assert torch.equal(decoded_images(result, decode, restart=0), first)
    empty = decoded_images(restarts_result(variables[:0], torch.zeros(0, 2)), decode)
    assert empty.shape == (0, 1, 28, 28)


def test_transformation_box_admits_ranges_whose_edge_is_the_identity():
    from manifold_robustness.transformer import TransformRanges

    tight = TransformRanges(translation=0.0, shear=0.1, scale_min=1.0, scale_max=1.0, rotation=0.2)
    center, lo, hi = transformation_box(3, 0.3, tight, torch.device("cpu"))
    identity = torch.tensor(IDENTITY_CODE).expand(3, 6)
    assert torch.equal(center, identity)
    assert torch.equal(lo[:, [0, 1, 4]], identity[:, [0, 1, 4]]) and torch.equal(hi[:, [0, 1, 4]],
                                                                                 identity[:, [0, 1, 4]])
    on_meta = transformation_box(3, 0.3, tight, torch.device("meta"))
    assert {t.device.type for t in on_meta} == {"meta"}


@pytest.mark.parametrize("attack", ["true", "learned", "transformation"])
def test_on_manifold_attacks_create_nothing_on_the_default_device(trained_model, test_set, decoders, attack):
    """With the default device set to `meta`, a tensor made without the inputs' device breaks the result."""
    s = {k: v[:12] if k != "glyphs" else v for k, v in test_set.items()}
    want, _ = run_attack(attack, trained_model, s, decoders, config(steps=3))
    with torch.device("meta"):
        got, _ = run_attack(attack, trained_model, s, decoders, config(steps=3))
    for name in ("variables", "success", "loss", "pred", "clean_pred"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name


@pytest.mark.parametrize("mode", ["true", "learned", "transformation"])
def test_adversaries_key_each_start_to_the_training_position(train_tensors, fonts_data, glyph_bank, decoders,
                                                             trained_model, mode):
    """A training image's adversarial example does not depend on the batch it is drawn in: its random start is
    keyed by its position in the training set, so positions 7, 3, 12 alone give the rows of a batch 0..15."""
    images, labels = train_tensors
    d = fonts_data["train"]
    if mode == "true":
        adversary = true_manifold_adversary(torch.from_numpy(glyph_bank[0]).float(), torch.from_numpy(d["font"]),
                                            torch.from_numpy(d["codes"]), RANGES)
    elif mode == "learned":
        adversary = learned_manifold_adversary(decoders, decoders.encode_mean(images[:16], labels[:16]))
    else:
        adversary = transformation_adversary(images, RANGES)
    cfg = training_config(config(steps=3))
    pos = torch.tensor([7, 3, 12])
    batch = adversary(trained_model, torch.arange(16), labels[:16], cfg)
    alone = adversary(trained_model, pos, labels[pos], cfg)
    torch.testing.assert_close(alone, batch[pos], atol=1e-5, rtol=0)
    assert not torch.allclose(alone, batch[:3], atol=1e-3)  # the positions, not the rows, key the starts


class OnTheGrid(torch.nn.Module):
    """Class 0 for images whose every pixel is a multiple of 1/255 exactly, else class 1; the zero term gives the
    logits a gradient (of 0) for the attack."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        on_grid = ((x * 255).round() == x * 255).flatten(1).all(1).float()
        logits = torch.zeros(len(x), 10, dtype=x.dtype)
        logits[:, 0], logits[:, 1] = on_grid, 1 - on_grid
        return logits + 0 * x.flatten(1).sum(1, keepdim=True)


def test_transformation_attack_predicts_on_the_images_themselves(test_set):
    """The clean point is the image itself: resampled at the identity it differs by round-off (about 3e-6), which
    this model tells apart."""
    images = (test_set["images"][:8] * 255).round() / 255
    labels = torch.zeros(8, dtype=torch.long)
    model = OnTheGrid()
    resampled = transform(images, torch.tensor(IDENTITY_CODE).expand(8, 6))
    assert (model(images).argmax(1) == 0).all() and (model(resampled).argmax(1) == 1).any()
    result, _ = transformation_attack(model, images, labels, RANGES, config(steps=1, restarts=1))
    assert torch.equal(result.clean_pred, labels)
