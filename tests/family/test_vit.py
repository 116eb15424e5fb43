"""The encoder over image patches (ViT): training on the digits and the class token's attention."""
from __future__ import annotations

import json
from pathlib import Path

from aiayn.cli import main
from aiayn.family.vit import Digits, accuracy, load_vit


def test_a_short_training_learns_digits_and_draws_its_attention(tmp_path: Path) -> None:
    run = tmp_path / "vit"
    assert main(["train-vit", "--out", str(run), "--max-steps", "200", "--eval-every", "100", "--log-every", "50"]) == 0
    model, digits = load_vit(run), Digits.load()
    assert (len(digits.train_labels), len(digits.valid_labels), len(digits.test_labels)) == (1212, 135, 450)
    reported = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]["test_accuracy"]
    assert reported == accuracy(model, digits.test_images, digits.test_labels) > 0.8
    out = tmp_path / "attention.png"
    assert main(["attention", "--checkpoint", str(run), "--image", "3", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["attention", "--checkpoint", str(run), "--image", "999", "--out", str(out)]) == 2
