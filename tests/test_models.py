"""The paper's classifier: shapes, initialization, and the checkpoint format."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from manifold_robustness.device import fast_layout
from manifold_robustness.models import (
    Classifier,
    ClassifierConfig,
    build_classifier,
    load_classifier,
    save_classifier,
)


def test_output_shape_and_feature_size():
    model = build_classifier()
    out = model(torch.rand(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert model.n_features == 576 and model.fc1.in_features == 576
    assert model.fc1.out_features == 100 and model.fc2.in_features == 100 and model.fc2.out_features == 10
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == 3


def test_other_config():
    cfg = ClassifierConfig(in_channels=3, n_classes=7, channels=(8, 8), hidden=20)
    model = Classifier(cfg)
    assert model.n_features == 8 * 7 * 7
    assert model(torch.rand(2, 3, 28, 28)).shape == (2, 7)


def test_no_nonlinearity_between_fc_layers():
    """fc2(fc1(z)) is affine in the features, as in the original implementation."""
    model = build_classifier().eval()
    z1, z2 = torch.randn(2, 576)
    lhs = model.fc2(model.fc1(0.3 * z1 + 0.7 * z2))
    rhs = 0.3 * model.fc2(model.fc1(z1)) + 0.7 * model.fc2(model.fc1(z2))
    torch.testing.assert_close(lhs, rhs, atol=1e-5, rtol=1e-5)


def test_glorot_initialization():
    torch.manual_seed(0)
    model = build_classifier()
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 5
    for layer in layers:
        assert torch.count_nonzero(layer.bias) == 0
        w = layer.weight.detach()
        receptive = w[0, 0].numel() if w.dim() > 2 else 1
        fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert w.abs().max() <= bound + 1e-7
        assert w.abs().max() > 0.9 * bound  # uniform on [-bound, bound], not a narrower default init
        assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.2)


def test_save_load_round_trip(tmp_path, trained_model, test_tensors):
    path = tmp_path / "models" / "model.pt"
    save_classifier(trained_model, path)
    loaded = load_classifier(path)
    assert isinstance(loaded, Classifier) and not loaded.training
    images = test_tensors[0][:64]
    with torch.no_grad():
        assert torch.equal(loaded(images), trained_model.eval()(images))
    for key, value in trained_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt) == {"state_dict", "model_args"}
    assert ckpt["model_args"]["channels"] in ([16, 32, 64], (16, 32, 64))
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_round_trip_of_non_default_config(tmp_path):
    cfg = ClassifierConfig(channels=(4, 8, 8), hidden=12)
    # Loading puts the weights in the CPU's fast layout; the same layout gives bit-identical outputs.
    model = fast_layout(Classifier(cfg), "cpu").eval()
    path = tmp_path / "small.pt"
    save_classifier(model, path, cfg)
    loaded = load_classifier(path)
    assert loaded.fc1.out_features == 12
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_load_missing_file(tmp_path):
    with pytest.raises(RuntimeError, match="delete it and rerun its training rule"):
        load_classifier(tmp_path / "absent.pt")


def test_load_truncated_file(tmp_path, trained_model):
    path = tmp_path / "model.pt"
    save_classifier(trained_model, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match="cannot load classifier"):
        load_classifier(path)


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, "random"])
def test_load_corrupt_file_raises_runtime_error(tmp_path, content):
    path = tmp_path / "model.pt"
    path.write_bytes(np.random.default_rng(0).bytes(1000) if content == "random" else content)
    with pytest.raises(RuntimeError, match="cannot load classifier"):
        load_classifier(path)


@pytest.mark.parametrize("build, said, visible, expected", [
    (None, "", None, "this torch is a CPU build"),
    ("13.0", "CUDA initialization: The NVIDIA driver on your system is too old (found version 11040).", "0",
     "the NVIDIA driver is too old for this torch, built for CUDA 13.0"),
    ("13.0", "", "", "no GPU is visible to this process (CUDA_VISIBLE_DEVICES=)"),
    ("13.0", "", None, "no GPU is visible to this process (CUDA_VISIBLE_DEVICES=unset)"),
])
def test_a_job_that_asks_for_cuda_and_cannot_have_it_fails_at_once_saying_why(monkeypatch, caplog, build, said,
                                                                                visible, expected) -> None:
    """device: cuda fails before any work with the cause (CPU build, driver too old, no GPU given to the job);
    device: auto then runs on the CPU, saying so where the driver is too old rather than passing silently."""
    import warnings

    import manifold_robustness.device as dev

    def unavailable() -> bool:
        if said:
            warnings.warn(said)
        return False

    monkeypatch.setattr(dev.torch.cuda, "is_available", unavailable)
    monkeypatch.setattr(dev.torch.version, "cuda", build)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(RuntimeError, match="CUDA cannot be used") as err:
        dev.resolve_device("cuda")
    assert expected in str(err.value)
    with caplog.at_level("WARNING", logger="manifold_robustness.device"):
        assert dev.resolve_device("auto").type == "cpu"
    assert ("too old" in caplog.text) == ("too old" in expected)
