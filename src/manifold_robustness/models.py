"""The paper's classifier and its checkpoint format.

Three 4x4 stride-2 convolutions (16, 32, 64 channels), each followed by ReLU and batch norm, then two fully
connected layers 576 -> 100 -> 10 with no nonlinearity between them (as in the original implementation).
Weights use Glorot (Xavier) initialization, biases start at zero.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .device import fast_layout
from .io import atomic_path


@dataclass(frozen=True)
class ClassifierConfig:
    """Shape of the classifier; stored in every checkpoint so the model can be rebuilt from it."""

    in_channels: int = 1
    n_classes: int = 10
    channels: tuple[int, ...] = (16, 32, 64)
    hidden: int = 100
    image_size: int = 28


class Classifier(nn.Module):
    """Maps images (B, C, 28, 28) in [0, 1] to logits (B, n_classes)."""

    def __init__(self, cfg: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch, size = cfg.in_channels, cfg.image_size
        for out_ch in cfg.channels:
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1), nn.ReLU(), nn.BatchNorm2d(out_ch)]
            in_ch, size = out_ch, (size + 2 - 4) // 2 + 1
        self.features = nn.Sequential(*layers)
        self.n_features = in_ch * size * size
        self.fc1 = nn.Linear(self.n_features, cfg.hidden)
        self.fc2 = nn.Linear(cfg.hidden, cfg.n_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform weights and zero biases for every conv and linear layer."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(self.features(x).flatten(1)))


def build_classifier(cfg: ClassifierConfig = ClassifierConfig()) -> Classifier:
    """Factory used by training and tests alike."""
    return Classifier(cfg)


def save_classifier(model: Classifier, path: str | os.PathLike, cfg: ClassifierConfig = ClassifierConfig()) -> None:
    """Save the state dict and the model arguments (no pickled code), atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "model_args": asdict(cfg)}, tmp)


def load_classifier(path: str | os.PathLike, device: torch.device | str = "cpu") -> Classifier:
    """Rebuild a classifier from its checkpoint and return it in eval mode on `device`."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise RuntimeError(f"cannot load classifier {path} ({err}); delete it and rerun its training rule") from err
    args = dict(ckpt["model_args"])
    args["channels"] = tuple(args["channels"])
    model = fast_layout(Classifier(ClassifierConfig(**args)).to(device), device)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
