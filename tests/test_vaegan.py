"""Class-specific VAE-GANs: shapes and output range, truncated sampling, training, divergence, and checkpoints."""

from __future__ import annotations

from dataclasses import replace

import copy
import math
import re

import pytest
import torch
from scipy import stats

from manifold_robustness.models import ClassifierConfig, build_classifier, save_classifier
from manifold_robustness.vaegan import (
    VAEGAN,
    NonFiniteLossError,
    VAEGANConfig,
    encode_mean,
    folded_decoder,
    load_vaegan,
    reconstruction_error,
    sample,
    save_vaegan,
    train_vaegan,
    truncated_normal,
)

SMALL = (8, 16, 32)


def small_config(**kw) -> VAEGANConfig:
    return VAEGANConfig(**{"channels": SMALL, "batch_size": 40, "epochs": 4, "seed": 0, **kw})


@pytest.fixture(scope="module")
def class_images(train_tensors):
    """The 320 training images of letter 0 (8 fonts x 40 transformations)."""
    images, labels = train_tensors
    return images[labels == 0].clone()


@pytest.fixture(scope="module")
def trained(class_images):
    """A small VAE-GAN trained for eight epochs (64 steps) on one class, with its history and config."""
    cfg = small_config(epochs=8)
    model, history = train_vaegan(class_images, cfg, name="letter0", progress=False)
    return model, history, cfg


@pytest.mark.parametrize("bad", [
    {"latent_dim": 0}, {"beta": 0.0}, {"beta": -1.0}, {"gamma": -0.1}, {"lr": 0.0}, {"truncation": 0.0},
    {"channels": ()}, {"channels": (8, 0)}, {"batch_size": 0}, {"epochs": -1},
    {"max_steps": -1},
])
def test_config_validation_names_the_key(bad):
    key, value = next(iter(bad.items()))
    with pytest.raises(ValueError, match=re.escape(f"invalid vaegan {key}: {value!r}")):
        VAEGANConfig(**bad)


def test_config_accepts_gamma_zero_and_lists():
    cfg = VAEGANConfig(gamma=0.0, channels=[4, 8])
    assert cfg.channels == (4, 8)
    assert cfg.model_args() == {"latent_dim": 10, "channels": (4, 8), "in_channels": 1, "image_size": 28}
    with pytest.raises(ValueError, match="image_size"):
        VAEGANConfig(image_size=30)  # 30 is not divisible by 4, the decoder's upsampling factor


@pytest.mark.parametrize("channels", [SMALL, (4, 8)])
def test_shapes(channels):
    model = VAEGAN(VAEGANConfig(channels=channels, latent_dim=6))
    x = torch.rand(5, 1, 28, 28)
    mean, logvar = model.encode(x)
    assert mean.shape == logvar.shape == (5, 6)
    assert model.decode(mean).shape == (5, 1, 28, 28)
    assert model.reconstruct(x).shape == (5, 1, 28, 28)
    assert model.discriminator(x).shape == (5,)


@pytest.mark.parametrize("train_mode", [True, False])
def test_decoder_output_in_unit_interval(train_mode):
    model = VAEGAN(small_config()).train(train_mode)
    z = torch.cat([torch.randn(20, 10), 10 * torch.randn(20, 10), torch.full((3, 10), 10.0),
                   torch.full((3, 10), -10.0), 10 * torch.sign(torch.randn(6, 10))])
    with torch.no_grad():
        out = model.decode(z)
    assert torch.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.std() > 0  # not a constant image


@pytest.mark.parametrize("bound", [0.1, 1.0, 2.0, 6.0])
def test_truncated_normal_within_bounds(bound):
    z = truncated_normal(20_000, 5, bound, torch.Generator().manual_seed(1))
    assert z.shape == (20_000, 5) and z.dtype == torch.float32
    assert z.abs().max() <= bound
    assert z.abs().max() > 0.95 * min(bound, 3.5)  # reaches the bounds (or the far tail), not a narrower law


def test_truncated_normal_matches_distribution():
    bound = 2.0
    z = truncated_normal(50_000, 2, bound, torch.Generator().manual_seed(2)).double()
    # Standard deviation of N(0, 1) truncated to [-2, 2]: sqrt(1 - 2 b phi(b) / (2 Phi(b) - 1)) = 0.8796.
    phi, cdf = math.exp(-bound ** 2 / 2) / math.sqrt(2 * math.pi), 0.5 * (1 + math.erf(bound / math.sqrt(2)))
    expected_std = math.sqrt(1 - 2 * bound * phi / (2 * cdf - 1))
    assert expected_std == pytest.approx(0.8796, abs=1e-4)
    assert float(z.std()) == pytest.approx(expected_std, abs=0.01)
    assert abs(float(z.mean())) < 0.01
    assert stats.kstest(z.flatten().numpy(), stats.truncnorm(-bound, bound).cdf).pvalue > 1e-3


def test_step_budget_stops_within_an_epoch_and_matches_the_unbudgeted_run(class_images):
    cfg = small_config(epochs=3)  # 80 images in batches of 40: 2 steps per epoch
    images = class_images[:80]
    budgeted, history = train_vaegan(images, replace(cfg, max_steps=3), progress=False)
    assert [(h["epoch"], h["images"], h["steps"]) for h in history] == [(0, 80, 2), (1, 40, 3)]
    # The budget only stops early: a budget of 2 steps is exactly one unbudgeted epoch (2 steps).
    one_epoch, _ = train_vaegan(images, replace(cfg, epochs=1), progress=False)
    two_steps, _ = train_vaegan(images, replace(cfg, max_steps=2), progress=False)
    for a, b in zip(one_epoch.state_dict().values(), two_steps.state_dict().values()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(budgeted.state_dict().values(),
                                                     one_epoch.state_dict().values()))
    unlimited, history = train_vaegan(images, replace(cfg, max_steps=0), progress=False)
    assert [h["steps"] for h in history] == [2, 4, 6]


def test_truncated_normal_seeded():
    a = truncated_normal(10, 3, 2.0, torch.Generator().manual_seed(5))
    b = truncated_normal(10, 3, 2.0, torch.Generator().manual_seed(5))
    c = truncated_normal(10, 3, 2.0, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_training_lowers_loss_and_reconstruction_error(trained, class_images):
    model, history, cfg = trained
    assert isinstance(model, VAEGAN) and not model.training and model.cfg == cfg
    assert [h["epoch"] for h in history] == list(range(cfg.epochs))
    assert set(history[0]) == {"epoch", "loss", "kl", "l1", "gan", "disc", "images", "steps", "seconds"}
    assert history[-1]["loss"] < 0.2 * history[0]["loss"]
    assert history[-1]["l1"] < history[0]["l1"]
    for h in history:
        assert h["loss"] == pytest.approx(h["kl"] + cfg.beta * h["l1"] + cfg.gamma * h["gan"], rel=1e-5)
        assert h["kl"] >= 0 and h["l1"] > 0 and h["disc"] > 0
    torch.manual_seed(cfg.seed)
    untrained = VAEGAN(cfg)  # exactly the model training started from
    before, after = reconstruction_error(untrained, class_images), reconstruction_error(model, class_images)
    # Predicting the class's mean image everywhere (error 0.084): a trained model must clearly beat it (0.045).
    mean_image = float((class_images - class_images.mean(0)).abs().mean())
    assert after < 0.2 * before and after < 0.75 * mean_image


def test_training_is_seeded(class_images):
    cfg = small_config(epochs=1)
    a, history_a = train_vaegan(class_images[:80], cfg, progress=False)
    b, history_b = train_vaegan(class_images[:80], cfg, progress=False)
    c, _ = train_vaegan(class_images[:80], small_config(epochs=1, seed=1), progress=False)
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value), key
    assert [h["loss"] for h in history_a] == [h["loss"] for h in history_b]
    assert not torch.equal(a.decoder.fc.weight, c.decoder.fc.weight)


def test_gamma_zero_trains_a_plain_vae(class_images):
    cfg = small_config(epochs=2, gamma=0.0)
    model, history = train_vaegan(class_images[:80], cfg, progress=False)
    torch.manual_seed(cfg.seed)
    untrained = VAEGAN(cfg)
    for key, value in untrained.discriminator.state_dict().items():  # the discriminator is never used
        assert torch.equal(model.discriminator.state_dict()[key], value), key
    assert not torch.equal(model.decoder.fc.weight, untrained.decoder.fc.weight)
    assert all(h["gan"] == 0.0 and h["disc"] == 0.0 for h in history)
    assert history[-1]["loss"] == pytest.approx(history[-1]["kl"] + cfg.beta * history[-1]["l1"], rel=1e-5)


def test_absurd_learning_rate_raises_naming_step_and_last_loss(class_images):
    # Adam moves every weight by about lr in the first step, so with lr 1e10 the log-variances reach ~1e10
    # and exp(logvar) overflows in the second step's KL term.
    cfg = small_config(lr=1e10)
    with pytest.raises(NonFiniteLossError, match=r"^vaegan letter0: non-finite loss .*epoch 0 step 1; "
                                                 r"last finite total loss [0-9.e+]+\. Try a lower vaegan lr"):
        train_vaegan(class_images[:80], cfg, name="vaegan letter0", progress=False)


def test_nan_images_raise_on_first_step(class_images):
    images = class_images[:80].clone()
    images[::2] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"epoch 0 step 0; last finite total loss none"):
        train_vaegan(images, small_config(), name="broken", progress=False)
    assert issubclass(NonFiniteLossError, RuntimeError)


@pytest.mark.parametrize("start_training", [True, False])
def test_sample_and_encode_mean_restore_mode(trained, class_images, start_training):
    model = copy.deepcopy(trained[0]).train(start_training)
    images = sample(model, 12, torch.Generator().manual_seed(0))
    assert model.training == start_training
    assert images.shape == (12, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert not images.requires_grad
    means = encode_mean(model, class_images[:30], batch_size=7)
    assert model.training == start_training
    assert means.shape == (30, 10) and not means.requires_grad
    with torch.no_grad():
        expected = copy.deepcopy(model).eval().encode(class_images[:30])[0]
    torch.testing.assert_close(means, expected, atol=1e-5, rtol=1e-5)  # batching does not change eval results


def test_sample_is_seeded_and_truncated(trained):
    model = trained[0]
    a = sample(model, 8, torch.Generator().manual_seed(3))
    b = sample(model, 8, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    z = truncated_normal(8, model.cfg.latent_dim, model.cfg.truncation, torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(a, model.decode(z))


def test_reconstruction_error_definition(trained, class_images):
    model = trained[0]
    images = class_images[:50]
    with torch.no_grad():
        expected = (model.decode(model.encode(images)[0]) - images).abs().mean()
    assert reconstruction_error(model, images, batch_size=16) == pytest.approx(float(expected), rel=1e-5)


def test_save_load_round_trip(tmp_path, trained):
    model, _, cfg = trained
    path = tmp_path / "vaegan" / "class0.pt"
    save_vaegan(model, path, extra={"label": 0, "n_train": 320})
    loaded = load_vaegan(path)
    assert isinstance(loaded, VAEGAN) and not loaded.training and loaded.cfg == cfg
    z = truncated_normal(16, cfg.latent_dim, 2.0, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), model.decode(z))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt) == {"state_dict", "model_args", "config", "extra"}
    assert ckpt["model_args"]["channels"] == list(SMALL) and ckpt["config"]["beta"] == cfg.beta
    assert ckpt["extra"] == {"label": 0, "n_train": 320}
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_load_errors_name_the_file_and_the_fix(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match=r"(?s)corrupt\.pt.*delete it and rerun its vaegan rule"):
        load_vaegan(corrupt)
    with pytest.raises(RuntimeError, match=r"(?s)missing\.pt.*delete it and rerun its vaegan rule"):
        load_vaegan(tmp_path / "missing.pt")
    classifier = tmp_path / "classifier.pt"  # a valid checkpoint of another kind
    save_classifier(build_classifier(), classifier, ClassifierConfig())
    with pytest.raises(RuntimeError, match=r"(?s)classifier\.pt.*delete it and rerun its vaegan rule"):
        load_vaegan(classifier)


def test_folded_decoder_decodes_the_same_images_without_batch_norm(trained):
    model, _, cfg = trained
    model.train()  # folding must use the running statistics whatever mode the model is in
    folded = folded_decoder(model.decoder)
    assert model.training, "folding must not change the original's mode"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters())
    z = truncated_normal(50, cfg.latent_dim, cfg.truncation, torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.eval().decode(z)
        torch.testing.assert_close(folded(z), expected, atol=1e-5, rtol=1e-4)
    # Gradients w.r.t. the latent agree too (the attacks follow them).
    za, zb = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(folded(za).pow(2).sum(), za)
    (gb,) = torch.autograd.grad(model.decode(zb).pow(2).sum(), zb)
    torch.testing.assert_close(ga, gb, atol=1e-4, rtol=1e-3)
