"""A Vision Transformer (Dosovitskiy et al. 2021) on scikit-learn's bundled handwritten digits
(1,797 images of 8 x 8 pixels, 16 grey levels; no download): the encoder of §3 over 2 x 2 patches,
a class token and learned positions; and a picture of which patches the class token attends to."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from aiayn import checkpoint
from aiayn.family.loop import Outcome, Schedule, fit, forever
from aiayn.errors import InputError
from aiayn.family.store import config_field, device_of, load_weights, open_checkpoint
from aiayn.files import check_output_dir
from aiayn.model import AttentionMaps, ModelConfig
from aiayn.model.family import ImageShape, VisionTransformer

VIT = "vision-transformer"
TEST_FRACTION = 0.25  # of the digits, held out for the reported accuracy (stratified, fixed seed)
VALID_FRACTION = 0.1  # of the rest, held out to choose the state that is kept


@dataclasses.dataclass
class Digits:
    """scikit-learn's digits as [N, 1, 8, 8] float tensors in [0, 1]: training, validation
    (which state to keep) and test (the accuracy reported) images and labels."""

    train_images: Tensor
    train_labels: Tensor
    valid_images: Tensor
    valid_labels: Tensor
    test_images: Tensor
    test_labels: Tensor

    @classmethod
    def load(cls, seed: int = 0) -> "Digits":
        try:
            from sklearn.datasets import load_digits
            from sklearn.model_selection import train_test_split
        except ImportError:
            raise InputError("the digits come with scikit-learn: pip install -e '.[family]'") from None

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
        labels = torch.tensor(digits.target)
        rest, test = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION, random_state=seed,
                                      stratify=digits.target)
        train, valid = train_test_split(rest, test_size=VALID_FRACTION, random_state=seed,
                                        stratify=digits.target[rest])
        return cls(images[train], labels[train], images[valid], labels[valid], images[test], labels[test])


def accuracy(model: VisionTransformer, images: Tensor, labels: Tensor) -> float:
    with torch.no_grad():
        return (model(images.to(device_of(model))).argmax(dim=-1).cpu() == labels).float().mean().item()


def train_vit(out: Path, model_config: ModelConfig, schedule: Schedule, image: ImageShape = ImageShape(),
              batch_size: int = 64, overwrite: bool = False) -> tuple[Outcome, float]:
    """Train on the digits' training split, keep the state with the best validation accuracy, and
    write it at `out` with its accuracy on the test split (which chose nothing)."""
    check_output_dir(out, "checkpoint", checkpoint.is_checkpoint, overwrite)
    data = Digits.load()
    config = dataclasses.replace(model_config, n_decoder_layers=0)
    torch.manual_seed(schedule.seed)
    model = VisionTransformer(config, image, n_classes=10)
    generator = torch.Generator().manual_seed(schedule.seed)

    def epoch(e: int) -> list[Tensor]:
        order = torch.randperm(len(data.train_labels), generator=generator)
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    def loss_of(net: VisionTransformer, rows: Tensor) -> tuple[Tensor, int]:
        # No augmentation: the digits are centred and scaled already (shifting them by a pixel
        # lost 4 points of test accuracy).
        logits = net(data.train_images[rows].to(device_of(net))).float()
        return F.cross_entropy(logits, data.train_labels[rows].to(logits.device), reduction="sum"), len(rows)

    outcome = fit(model, forever(epoch), loss_of, schedule,
                  lambda net: accuracy(net, data.valid_images, data.valid_labels))
    model.load_state_dict(outcome.best_state)
    test_accuracy = accuracy(model.eval(), data.test_images, data.test_labels)
    checkpoint.save_checkpoint(out, model, None, {"kind": VIT, "image": dataclasses.asdict(image), "classes": 10,
                                                  "valid_accuracy": outcome.best_score, "test_accuracy": test_accuracy,
                                                  "history": outcome.history})
    return outcome, test_accuracy


def load_vit(path: str | Path, announce: bool = False) -> VisionTransformer:
    directory, config, model_config = open_checkpoint(path, VIT, announce)
    try:
        image = ImageShape(**config_field(config, "image", dict, directory))
    except (TypeError, ValueError):
        raise checkpoint.CheckpointError(f"{directory / 'config.json'}: field 'image' is not an image shape") from None
    model = VisionTransformer(model_config, image, config_field(config, "classes", int, directory, minimum=2))
    return load_weights(model, directory)


def class_token_attention(model: VisionTransformer, image: Tensor, layer: int = -1) -> tuple[Tensor, int]:
    """How much the class token attends to each patch (a layer's heads averaged), as a grid of the
    image's patches; and the predicted class."""
    maps = AttentionMaps(decoder_self=None, cross=None)
    with torch.no_grad():
        predicted = int(model(image[None], record=maps).argmax())
    side = model.image.size // model.image.patch
    weights = maps.encoder[layer][0].float().mean(dim=0)[0, 1:]  # class token's row, patches only
    return weights.reshape(side, side), predicted


def draw_class_token_attention(model: VisionTransformer, image: Tensor, label: int, out: str | Path,
                               layer: int = -1) -> Path:
    """The digit and, beside it, its patches shaded by the class token's attention."""
    from matplotlib.figure import Figure

    weights, predicted = class_token_attention(model, image, layer)
    figure = Figure(figsize=(6.4, 3.2))
    left, right = figure.subplots(1, 2)
    left.imshow(image[0].numpy(), cmap="gray_r")
    left.set_title(f"digit {label}, predicted {predicted}", fontsize=10)
    right.imshow(image[0].numpy(), cmap="gray_r")
    patch = model.image.patch
    right.imshow(np.kron(weights.numpy(), np.ones((patch, patch))), cmap="viridis", alpha=0.6,
                 extent=(-0.5, model.image.size - 0.5, model.image.size - 0.5, -0.5))
    n_layers = len(model.encoder.layers)
    right.set_title(f"class token's attention, layer {layer % n_layers + 1} of {n_layers}", fontsize=10)
    for axis in (left, right):
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    return Path(out)
