"""Training curves as a picture: loss, learning rate and the validation score of a run of any kind
(BLEU for a translator, accuracy for a classifier or ViT, perplexity for a language model)."""
from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: drawing a file never switches a notebook's backend

from aiayn.errors import InputError


TRAIN_FIELDS = ("step", "train_loss", "lr")
VALID_FIELDS = ("step", "valid_nll", "valid_bleu")  # a translator's validation record
# The validation score each kind logs, and how to title it.
SCORES = {"valid_bleu": "validation BLEU (greedy, sacreBLEU)", "valid_accuracy": "validation accuracy",
          "valid_ppl": "validation perplexity"}


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise InputError(f"{path}: no metrics (is {run_dir} a training run?)")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path}, line {number}: not a JSON record") from None
        if not isinstance(record, dict):
            raise InputError(f"{path}, line {number}: not a JSON object")
        for kind, needed in (("train_loss", TRAIN_FIELDS), ("valid_loss", VALID_FIELDS)):
            missing = [f for f in needed if kind in record and not isinstance(record.get(f), (int, float))]
            if missing:
                raise InputError(f"{path}, line {number}: no number for {', '.join(missing)}")
        records.append(record)
    if not any("train_loss" in r for r in records):
        raise InputError(f"{path}: no training steps logged yet")
    return records


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw RUN/metrics.jsonl into a PNG (default RUN/curves.png) and return its path."""
    records = read_metrics(run_dir)
    train = [r for r in records if "train_loss" in r]
    valid = [r for r in records if "valid_loss" in r]
    figure = Figure(figsize=(15, 4))
    loss_axis, lr_axis, bleu_axis = figure.subplots(1, 3)
    loss_axis.plot([r["step"] for r in train], [r["train_loss"] for r in train], label="train loss")
    if all("train_nll" in r for r in train):
        loss_axis.plot([r["step"] for r in train], [r["train_nll"] for r in train], label="train NLL", alpha=0.7)
    if valid:
        loss_axis.plot([r["step"] for r in valid], [r["valid_nll"] for r in valid], "o-", label="validation NLL")
    loss_axis.set(xlabel="step", ylabel="loss per item", title="loss")
    loss_axis.legend()
    lr_axis.plot([r["step"] for r in train], [r["lr"] for r in train])
    lr_axis.set(xlabel="step", ylabel="learning rate", title="learning rate (§5.3)")
    name = next((key for key in SCORES if any(key in r for r in records)), None)
    if name:
        scored = [r for r in records if isinstance(r.get(name), (int, float))]
        bleu_axis.plot([r["step"] for r in scored], [r[name] for r in scored], "o-")
    bleu_axis.set(xlabel="step", title=SCORES.get(name, "validation (none)"))
    for axis in (loss_axis, lr_axis, bleu_axis):
        axis.grid(alpha=0.3)
    figure.suptitle(str(Path(run_dir).name))
    figure.tight_layout()
    out = Path(out) if out else Path(run_dir) / "curves.png"
    figure.savefig(out, dpi=100)
    return out
