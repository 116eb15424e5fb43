"""Shared fixtures: the real data beside the checkout, and small generated corpora."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# The project's data lives beside the checkout (../shared/data); AIAYN_SHARED_DATA points elsewhere.
SHARED_DATA = Path(os.environ.get("AIAYN_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
MULTI30K = SHARED_DATA / "multi30k"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"the shared data is missing at {SHARED_DATA}"
    return SHARED_DATA


@pytest.fixture(scope="session")
def multi30k_dir() -> Path:
    assert (MULTI30K / "train.de.gz").is_file(), f"the shared Multi30k copy is missing at {MULTI30K}"
    return MULTI30K


@pytest.fixture(scope="session")
def number_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """English -> German number words: 2,000 training and 50 validation pairs as plain files."""
    from aiayn.data.numbers import number_pairs

    root = tmp_path_factory.mktemp("numbers")
    valid = number_pairs(50, seed=2, high=9999)
    train = number_pairs(2000, seed=1, exclude={n for n, _, _ in valid}, high=9999)
    paths = {}
    for split, pairs in (("train", train), ("valid", valid)):
        for lang, column in (("en", 1), ("de", 2)):
            path = root / f"{split}.{lang}"
            path.write_text("".join(p[column] + "\n" for p in pairs), encoding="utf-8")
            paths[f"{split}_{lang}"] = path
    return paths


@pytest.fixture(scope="session")
def trained_run(number_corpus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny English->German number-word translator trained for a few seconds (a run directory)."""
    from aiayn.model import ModelConfig
    from aiayn.training.trainer import TrainConfig, train

    run = tmp_path_factory.mktemp("trained") / "run"
    config = TrainConfig(train_src=str(number_corpus["train_en"]), train_tgt=str(number_corpus["train_de"]),
                         source_lang="en", target_lang="de", vocab_size=300, batch_tokens=1500, warmup_steps=30,
                         lr_scale=0.3, max_steps=400, eval_every=10**6, save_every=200, log_every=20, seed=3)
    train(run, ModelConfig.preset("tiny", d_model=64, d_ff=128, dropout=0.0), config)
    return run


@pytest.fixture(scope="session")
def launch():
    """Start a server: `process, url = launch(checkpoint, *extra_args)` (aiayn serve on loopback)."""
    from aiayn.serving.launch import start_server

    return start_server
