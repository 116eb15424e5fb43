"""The main job's embedded default: train a small translator from English number words to German
number words, generated in code (no download), and measure exact match on numbers never seen."""
from __future__ import annotations

import tempfile
from pathlib import Path

from aiayn.data.numbers import number_pairs
from aiayn.decoding.translator import Translator
from aiayn.model import ModelConfig
from aiayn.runtime import cpu_supports_bf16
from aiayn.training.trainer import TrainConfig, train

# Sized so that training fits in about two minutes on two CPU cores.
DEMO_MODEL = dict(d_model=128, n_heads=4, d_ff=512, n_encoder_layers=2, n_decoder_layers=2, dropout=0.1)


def write_split(directory: Path, name: str, pairs: list[tuple[int, str, str]]) -> tuple[Path, Path]:
    en, de = directory / f"{name}.en", directory / f"{name}.de"
    en.write_text("".join(f"{e}\n" for _, e, _ in pairs), encoding="utf-8")
    de.write_text("".join(f"{d}\n" for _, _, d in pairs), encoding="utf-8")
    return en, de


def run_demo(out: str | Path = "runs/demo", minutes: float = 2.0, n_train: int = 30000, n_test: int = 500,
             seed: int = 1, overwrite: bool = False) -> float:
    """Train, then translate held-out numbers; prints samples and `exact match: NN.N%`, returns it.

    `out` must be new or empty, or hold an earlier run that `overwrite` allows to replace."""
    out = Path(out)
    test = number_pairs(n_test, seed=seed + 1)
    valid = number_pairs(200, seed=seed + 2, exclude={n for n, _, _ in test})
    train_pairs = number_pairs(n_train, seed=seed, exclude={n for n, _, _ in test + valid})
    print(f"demo: English -> German number words, {len(train_pairs)} training pairs, "
          f"{len(test)} held-out test numbers never trained on; about {minutes:g} min of training", flush=True)
    with tempfile.TemporaryDirectory(prefix="aiayn-demo-") as scratch:
        train_en, train_de = write_split(Path(scratch), "train", train_pairs)
        valid_en, valid_de = write_split(Path(scratch), "valid", valid)
        config = TrainConfig(
            train_src=str(train_en), train_tgt=str(train_de), valid_src=str(valid_en), valid_tgt=str(valid_de),
            source_lang="en", target_lang="de", vocab_size=600, batch_tokens=6000, warmup_steps=150, lr_scale=1.0,
            time_budget_s=60 * minutes, eval_every=10**9, save_every=10**9, keep_last=1, log_every=10, seed=seed,
            bf16=cpu_supports_bf16())
        train(out, ModelConfig.preset("tiny", **DEMO_MODEL), config, overwrite=overwrite)
    text = out / "text"  # the number words as text, for the user (out/data holds them prepared)
    text.mkdir()
    for name, pairs in (("train", train_pairs), ("valid", valid), ("test", test)):
        write_split(text, name, pairs)

    translator = Translator.from_checkpoint(out)
    hypotheses = translator.translate([e for _, e, _ in test])
    correct = [h == d for h, (_, _, d) in zip(hypotheses, test)]
    for (number, english, german), hypothesis in list(zip(test, hypotheses))[:8]:
        mark = "ok" if hypothesis == german else f"expected {german}"
        print(f"  {number:>6}  {english}\n       -> {hypothesis}  ({mark})")
    accuracy = 100.0 * sum(correct) / len(correct)
    print(f"exact match: {accuracy:.1f}% ({sum(correct)} of {len(correct)} held-out numbers)")
    print(f"run saved in {out} (try: aiayn translate --checkpoint {out})")
    return accuracy

