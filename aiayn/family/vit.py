"""A Vision Transformer (Dosovitskiy et al. 2021) on scikit-learn's bundled handwritten digits
(1,797 images of 8 x 8 pixels, 16 grey levels; no download): the encoder of §3 over 2 x 2 patches,
a class token and learned positions; and a picture of which patches the class token attends to."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from aiayn import checkpoint
from aiayn.errors import InputError
from aiayn.checkpoint import load_weights, open_checkpoint, resolve_checkpoint
from aiayn.data.batching import MIN_ROWS
from aiayn.family.runs import IGNORED, ClassificationLoss, FamilyRun, accuracy_of, train_family
from aiayn.family.store import config_field, device_of
from aiayn.files import check_output_dir
from aiayn.kinds import VIT
from aiayn.training.config import TrainConfig
from aiayn.training.run import Metrics, is_run
from aiayn.training.task import Autocast, Task, TensorBatch
from aiayn.training.trainer import Trainer
from aiayn.model import AttentionMaps, ModelConfig
from aiayn.model.family import ImageShape, VisionTransformer

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


class DigitsTask(Task):
    """The ViT on the digits' training split, validated on its validation split."""

    kind, second, unit = VIT, "correct", "images"

    def __init__(self, run: FamilyRun):
        image = ImageShape(**run.options["image"])
        super().__init__(VisionTransformer(run.model_config, image, n_classes=run.options["classes"]), None)
        self.image, self.arrays = image, {k: torch.from_numpy(v) for k, v in run.arrays.items()}

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        count = len(self.arrays["train.labels"])  # an image is one "token": batch_tokens images a batch
        return np.ones(count, dtype=np.int64), np.zeros(count, dtype=np.int64)

    def read(self, rows: np.ndarray, widths: tuple[int, int], where: tuple[int, int]) -> TensorBatch:
        # No augmentation: the digits are centred and scaled already (shifting them by a pixel
        # lost 4 points of test accuracy).
        return image_batch(self.arrays["train.images"], self.arrays["train.labels"], torch.from_numpy(rows).long())

    def objective(self) -> ClassificationLoss:
        return ClassificationLoss(self.model)

    @property
    def validates(self) -> bool:
        return True

    def validate(self, autocast: Autocast) -> tuple[dict[str, Any], float]:
        rows = torch.arange(len(self.arrays["valid.labels"]))
        batches = [image_batch(self.arrays["valid.images"], self.arrays["valid.labels"], chunk)
                   for chunk in rows.split(256)]
        score = accuracy_of(self.objective(), batches, autocast)
        return {"valid_accuracy": score}, score

    def checkpoint_config(self) -> dict[str, Any]:
        return {"kind": VIT, "image": dataclasses.asdict(self.image), "classes": self.model.head.out_features}

    def describe(self, metrics: dict[str, Any]) -> str:
        return f"valid accuracy {100 * metrics['valid_accuracy']:.2f}%"


def image_batch(images: Tensor, labels: Tensor, rows: Tensor) -> TensorBatch:
    """The images `rows` (at least MIN_ROWS of them: a padding image is blank, labelled IGNORED)."""
    extra = max(MIN_ROWS - len(rows), 0)
    chosen = torch.cat([images[rows], images.new_zeros(extra, *images.shape[1:])])
    gold = torch.cat([labels[rows].long(), torch.full((extra,), IGNORED)])
    return TensorBatch((chosen, gold), len(rows))


def train_vit(out: Path, model_config: ModelConfig, config: TrainConfig, image: ImageShape = ImageShape(),
              overwrite: bool = False) -> tuple[Trainer, float]:
    """Train on the digits' training split into the run `out` (batches of `config.batch_tokens`
    images), whose checkpoints/best has the best validation accuracy; returns the trainer and that
    checkpoint's accuracy on the test split (which chose nothing), also recorded in metrics.jsonl."""
    data = Digits.load()

    def build() -> FamilyRun:
        check_output_dir(out, "run", is_run, overwrite)
        arrays = {f"{split}.{part}": getattr(data, f"{split}_{part}").numpy()
                  for split in ("train", "valid", "test") for part in ("images", "labels")}
        options = {"kind": VIT, "image": dataclasses.asdict(image), "classes": 10}
        return FamilyRun(out, dataclasses.replace(model_config, n_decoder_layers=0), config, options, None, arrays)

    trainer = train_family(out, config, DigitsTask, build, overwrite)
    if not trainer.group.is_main:
        return trainer, float("nan")  # process 0 scores the test split
    test_accuracy = accuracy(load_vit(out).eval(), data.test_images, data.test_labels)
    Metrics(out).record(event="test", test_accuracy=test_accuracy, checkpoint=str(resolve_checkpoint(out)))
    return trainer, test_accuracy


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
