"""The descendants train on the translator's engine: periodic checkpoints, bitwise exact resume after
a kill (the translator's kill -9 tests: tests/training), and under torchrun the updates of one
process accumulating the same batches."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aiayn import checkpoint
from aiayn.cli import main

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
# As in tests/training/test_distributed.py: no dropout, and an eps that compares gradients, not signs.
COMMON = ["--preset", "tiny", "--vocab-size", "300", "--warmup", "20", "--eval-every", "1000", "--log-every", "1",
          "--save-every", "4", "--seed", "3"]


@pytest.fixture(scope="module")
def verbs(number_corpus, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The arguments of every descendant's training verb: train-lm, pretrain-mlm and train-classifier
    on the number words (labels: the parity of the number a sentence names), train-vit on the digits."""
    root = tmp_path_factory.mktemp("labelled")
    lines = number_corpus["train_en"].read_text().splitlines()[:600]
    labelled = root / "train.tsv"
    labelled.write_text("sentence\tlabel\n" + "".join(f"{s}\t{len(s) % 2}\n" for s in lines))
    return {"train-lm": ["train-lm", "--text", str(number_corpus["train_en"]), "--batch-tokens", "600", *COMMON],
            "pretrain-mlm": ["pretrain-mlm", "--text", str(number_corpus["train_en"]), "--batch-tokens", "600", *COMMON],
            "train-classifier": ["train-classifier", "--train", str(labelled), "--batch-tokens", "600", *COMMON],
            "train-vit": ["train-vit", *COMMON[4:]]}  # the ViT has its own size and no vocabulary


ALL_VERBS = ["train-lm", "pretrain-mlm", "train-classifier", "train-vit"]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["train_loss"]) for r in records(run) if "train_loss" in r]


def weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step_{step:08d}" / "model.safetensors"))


@pytest.mark.parametrize("verb", ALL_VERBS)
def test_a_run_cut_short_resumes_bitwise_with_the_same_logged_losses(verb: str, verbs, tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main([*verbs[verb], "--out", str(straight), "--max-steps", "12"]) == 0
    # A run killed after step 6 was logged, before its checkpoint was written (step 4's was).
    assert main([*verbs[verb], "--out", str(resumed), "--max-steps", "6"]) == 0
    shutil.rmtree(checkpoint.step_checkpoints(resumed)[-1])
    with open(resumed / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "train_lo')  # and a record torn by the kill
    assert main([verb, "--resume", str(resumed), "--max-steps", "12"]) == 0
    a, b = weights(straight, 12), weights(resumed, 12)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert losses(straight) == losses(resumed) and [s for s, _ in losses(resumed)] == list(range(1, 13))


@pytest.mark.parametrize("verb", ALL_VERBS)
def test_two_processes_make_the_updates_of_one_accumulating_two_batches(verb: str, verbs, tmp_path: Path) -> None:
    common = [*verbs[verb], "--dropout", "0", "--adam-eps", "1e-4", "--max-steps", "6"]
    done = subprocess.run([*TORCHRUN, "--nproc-per-node", "2", "-m", "aiayn", *common, "--out", str(tmp_path / "ddp")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[:3000] + done.stderr[:3000]
    assert main([*common, "--out", str(tmp_path / "accumulate"), "--accumulate", "2"]) == 0
    ddp, accumulated = weights(tmp_path / "ddp", 6), weights(tmp_path / "accumulate", 6)
    assert max((ddp[k] - accumulated[k]).abs().max().item() for k in ddp) < 1e-5
    assert [round(loss, 4) for _, loss in losses(tmp_path / "ddp")] == \
        [round(loss, 4) for _, loss in losses(tmp_path / "accumulate")]


def test_resume_takes_no_data_and_only_a_run_of_the_verbs_kind(verbs, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "lm"
    assert main([*verbs["train-lm"], "--out", str(run), "--max-steps", "2"]) == 0
    capsys.readouterr()
    for argv, named in ((["train-lm", "--resume", str(run), "--text", "x.txt"], "--text: not with --resume"),
                        (["train-classifier", "--resume", str(run)], "a language-model run, not a classifier")):
        assert main([*argv, "--max-steps", "3"]) == 2
        err = capsys.readouterr().err.strip()
        assert named in err and len(err.splitlines()) == 1
    assert main(["train", "--resume", str(run), "--max-steps", "3"]) == 0  # any kind
    assert checkpoint.step_checkpoints(run)[-1].name == "step_00000003"


def test_a_descendants_run_averages_and_plots(verbs, tmp_path: Path) -> None:
    from aiayn.family.classifier import TextClassifier

    run = tmp_path / "classifier"
    assert main([*verbs["train-classifier"], "--out", str(run), "--max-steps", "8"]) == 0
    assert main(["average", str(run), "--last", "2"]) == 0
    averaged = load_file(str(run / "checkpoints" / "average" / "model.safetensors"))
    a, b = weights(run, 4), weights(run, 8)
    assert all(torch.allclose(averaged[k], (a[k] + b[k]) / 2, atol=1e-6) for k in averaged)
    assert TextClassifier.from_checkpoint(run).classify(["three"])  # the average is what a run directory gives
    assert main(["plot", str(run), "--out", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_a_masked_batch_always_predicts_a_token(tmp_path: Path) -> None:
    """A last batch of a few short rows may draw no token to mask at 15%: one is masked anyway."""
    from aiayn.family.classifier import MaskedLanguageModelTask
    from aiayn.family.runs import FamilyRun, Rows
    from aiayn.model import ModelConfig
    from aiayn.training.config import TrainConfig

    rows = Rows.of([[1, 7], [1, 8]])  # [CLS] + one subword each
    options = {"kind": "masked-lm", "mask_rate": 0.01, "mask_id": 5, "text_form": {}, "pack": None}
    run = FamilyRun(tmp_path, ModelConfig.preset("tiny", vocab_size=20), TrainConfig(max_steps=1), options, None,
                    rows.arrays("train"))
    task = MaskedLanguageModelTask(run)
    for index in range(20):
        batch = task.read(np.arange(2), (2, 0), (0, index))
        inputs, positions, target = batch.tensors
        assert batch.n_items >= 1 and set(target.tolist()) <= {7, 8}
