"""Training end to end on a tiny model: checkpoints, exact resume after kill -9, bad input, NaN."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aiayn import checkpoint
from aiayn.cli import main
from aiayn.training.trainer import TrainConfig, TrainingDiverged, train

TINY_ARGS = ["--preset", "tiny", "--vocab-size", "300", "--batch-tokens", "600", "--warmup", "20",
             "--eval-every", "1000", "--log-every", "2"]


def corpus_args(corpus: dict[str, Path]) -> list[str]:
    return ["--train-src", str(corpus["train_en"]), "--train-tgt", str(corpus["train_de"])]


def aiayn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aiayn.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint.step_checkpoints(run_dir)[-1] / "model.safetensors"))


def test_a_run_writes_metrics_checkpoints_and_learns(number_corpus, tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = TrainConfig(train_src=str(number_corpus["train_en"]), train_tgt=str(number_corpus["train_de"]),
                         valid_src=str(number_corpus["valid_en"]), valid_tgt=str(number_corpus["valid_de"]),
                         vocab_size=300, batch_tokens=600, warmup_steps=20, max_steps=30, eval_every=15,
                         save_every=10, keep_last=2, log_every=5)
    from aiayn.model import ModelConfig

    train(run, ModelConfig.preset("tiny"), config)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records if "train_loss" in r]
    assert losses[-1] < losses[0]
    assert all(r["tokens_per_s"] > 0 and r["lr"] > 0 for r in records if "train_loss" in r)
    valid = [r for r in records if "valid_bleu" in r]
    assert [r["step"] for r in valid] == [15, 30] and "nrefs:1" in valid[0]["bleu_signature"]
    assert [p.name for p in checkpoint.step_checkpoints(run)] == ["step_00000020", "step_00000030"]  # keep_last=2
    assert (run / "checkpoints" / "best" / "model.safetensors").is_file()
    model, tokenizer, config_json = checkpoint.load_checkpoint(run / "checkpoints" / "step_00000030")
    assert config_json["training"]["max_steps"] == 30 and not model.training

    from aiayn.evaluation.plots import plot_run

    png = plot_run(run)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_after_kill_minus_9_is_bitwise_exact(number_corpus, tmp_path: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    common = [*TINY_ARGS, *corpus_args(number_corpus), "--max-steps", "12", "--save-every", "6"]
    assert aiayn("train", "--out", str(straight), *common).wait(timeout=300) == 0

    process = aiayn("train", "--out", str(killed), *common)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "step_00000006").is_dir():
        assert process.poll() is None and time.time() < deadline, "training ended before its first checkpoint"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "checkpoints" / "step_00000012").exists()
    resumed = aiayn("train", "--resume", str(killed))
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert "resumed from" in output and "step 6" in output

    a, b = weights(straight), weights(killed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    state_a, tensors_a = checkpoint.load_training_state(checkpoint.step_checkpoints(straight)[-1])
    state_b, tensors_b = checkpoint.load_training_state(checkpoint.step_checkpoints(killed)[-1])
    assert state_a["step"] == state_b["step"] == 12 and state_a["epoch"] == state_b["epoch"]
    assert all(torch.equal(tensors_a[k], tensors_b[k]) for k in tensors_a)


def test_kill_minus_9_at_any_moment_leaves_only_loadable_checkpoints(number_corpus, tmp_path: Path) -> None:
    run = tmp_path / "run"
    process = aiayn("train", "--out", str(run), *TINY_ARGS, *corpus_args(number_corpus), "--max-steps", "400",
                    "--save-every", "1", "--keep-last", "2")
    deadline = time.time() + 300
    kills = 0
    while kills < 4:
        if checkpoint.step_checkpoints(run):
            time.sleep(0.05 + 0.07 * kills)  # land somewhere in a checkpoint cycle
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            for path in checkpoint.step_checkpoints(run):
                checkpoint.load_checkpoint(path)  # raises if incomplete
                checkpoint.load_training_state(path)
            process = aiayn("train", "--resume", str(run))
        assert time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    checkpoint.recover_checkpoints(run)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


def test_partial_and_corrupt_checkpoints(number_corpus, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY_ARGS, *corpus_args(number_corpus), "--max-steps", "2",
                 "--save-every", "2"]) == 0
    good = checkpoint.step_checkpoints(run)[-1]
    # What a writer killed mid-write leaves: a hidden partial directory. It is never picked.
    partial = run / "checkpoints" / ".step_00000004.partial-999"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x00" * 10)
    assert checkpoint.step_checkpoints(run) == [good]
    assert checkpoint.resolve_checkpoint(run) in (good, run / "checkpoints" / "best")
    # A corrupt weights file is named in the error.
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in good.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes()[:100])
    with pytest.raises(checkpoint.CheckpointError, match="model.safetensors"):
        checkpoint.load_checkpoint(broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(checkpoint.CheckpointError, match="config.json"):
        checkpoint.load_checkpoint(broken)


def test_average_is_the_mean_of_the_weights(number_corpus, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY_ARGS, *corpus_args(number_corpus), "--max-steps", "4",
                 "--save-every", "2"]) == 0
    assert main(["average", str(run), "--last", "2"]) == 0
    first, second = (load_file(str(p / "model.safetensors")) for p in checkpoint.step_checkpoints(run))
    averaged = load_file(str(run / "checkpoints" / "average" / "model.safetensors"))
    for name, value in averaged.items():
        assert torch.allclose(value, (first[name] + second[name]) / 2, atol=1e-7)
    assert checkpoint.resolve_checkpoint(run) == run / "checkpoints" / "average"
    later = checkpoint.step_checkpoints(run)[-1] / "config.json"
    config = json.loads(later.read_text())
    config["model"]["dropout"] = 0.5  # the same shapes, another model
    later.write_text(json.dumps(config))
    assert main(["average", str(run), "--last", "2", "--out", str(tmp_path / "mixed")]) == 2
    assert "model config differs" in capsys.readouterr().err and not (tmp_path / "mixed").exists()


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(number_corpus, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from aiayn.model import ModelConfig
    from aiayn.training import trainer as trainer_module

    run = tmp_path / "run"
    config = TrainConfig(train_src=str(number_corpus["train_en"]), train_tgt=str(number_corpus["train_de"]),
                         vocab_size=300, batch_tokens=600, max_steps=6, save_every=3, eval_every=100)
    real_step = trainer_module.Trainer.train_step

    def poisoned_step(self, batch_ids):
        if self.position.step == 4:
            with torch.no_grad():
                self.model.output_projection.weight[5, 0] = float("nan")
        return real_step(self, batch_ids)

    monkeypatch.setattr(trainer_module.Trainer, "train_step", poisoned_step)
    with pytest.raises(TrainingDiverged, match="NaN or infinite at step 5;"):
        train(run, ModelConfig.preset("tiny"), config)
    assert [p.name for p in checkpoint.step_checkpoints(run)] == ["step_00000003"]
    model, _, _ = checkpoint.load_checkpoint(run)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bad_input_is_reported_by_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.en").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (tmp_path / "a.de").write_text("eins\nzwei\n", encoding="utf-8")
    code = main(["train", "--out", str(tmp_path / "run"), *TINY_ARGS, "--train-src", str(tmp_path / "a.en"),
                 "--train-tgt", str(tmp_path / "a.de"), "--max-steps", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "a.en has 3 lines" in err and "a.de has 2 lines" in err
    code = main(["train", "--out", str(tmp_path / "run2"), *TINY_ARGS, "--train-src", str(tmp_path / "none.en"),
                 "--train-tgt", str(tmp_path / "a.de"), "--max-steps", "1"])
    assert code == 2 and "none.en: no such file" in capsys.readouterr().err


def test_empty_and_long_pairs_are_counted_in_the_log(tmp_path: Path) -> None:
    (tmp_path / "a.en").write_text("one\n\nthree\n" + "x " * 400 + "\nfive\n", encoding="utf-8")
    (tmp_path / "a.de").write_text("eins\nzwei\n\nvier\nfünf\n", encoding="utf-8")
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY_ARGS, "--vocab-size", "280", "--train-src", str(tmp_path / "a.en"),
                 "--train-tgt", str(tmp_path / "a.de"), "--max-steps", "1", "--max-length", "100"]) == 0
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert record == {"event": "data", "kept": 2, "skipped_empty": 2, "skipped_too_long": 1}


# ----------------------------------------------------------------------------- resume across epochs, logs, replacing

def tiny_config(corpus: dict[str, Path], **overrides) -> TrainConfig:
    values = dict(train_src=str(corpus["train_en"]), train_tgt=str(corpus["train_de"]), vocab_size=300,
                  batch_tokens=600, warmup_steps=20, eval_every=10**6, save_every=10**6, log_every=1, seed=5)
    return TrainConfig(**{**values, **overrides})


def test_resume_across_epoch_boundaries_is_bitwise_exact(number_corpus, tmp_path: Path) -> None:
    from aiayn.data.batching import TokenBatches
    from aiayn.data.prepared import PreparedData, PrepareOptions, prepare
    from aiayn.model import ModelConfig

    data = tmp_path / "data"
    prepare(data, str(number_corpus["train_en"]), str(number_corpus["train_de"]), options=PrepareOptions(vocab_size=300))
    lengths = PreparedData(data).lengths()
    per_epoch = len(TokenBatches(lengths[:, 0] + 1, lengths[:, 1] + 1, 600, seed=5))
    total = 2 * per_epoch + 3
    config = dict(data=str(data), train_src="", train_tgt="")
    model = ModelConfig.preset("tiny", d_model=16, d_ff=32)
    resumed = tmp_path / "resumed"
    # Stop at the end of epoch 0, just after the end of epoch 1, then inside epoch 2.
    train(resumed, model, tiny_config(number_corpus, max_steps=per_epoch, **config))
    for stop in (2 * per_epoch + 1, total):
        train(resumed, config=TrainConfig(max_steps=stop), resume=True)
    straight = tmp_path / "straight"
    train(straight, model, tiny_config(number_corpus, max_steps=total, **config))
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    state_a, _ = checkpoint.load_training_state(checkpoint.step_checkpoints(straight)[-1])
    state_b, _ = checkpoint.load_training_state(checkpoint.step_checkpoints(resumed)[-1])
    assert (state_a["epoch"], state_a["batch"]) == (state_b["epoch"], state_b["batch"]) == (2, 3)
    # --max-epochs trains whole epochs.
    epochs = train(tmp_path / "epochs", model, tiny_config(number_corpus, max_epochs=2, **config))
    assert epochs.position.step == 2 * per_epoch


def test_resumed_steps_are_logged_once(number_corpus, tmp_path: Path) -> None:
    from aiayn.model import ModelConfig

    run = tmp_path / "run"
    train(run, ModelConfig.preset("tiny"), tiny_config(number_corpus, max_steps=6, save_every=4))
    # A kill after step 6 was logged but before its checkpoint was written:
    shutil.rmtree(checkpoint.step_checkpoints(run)[-1])
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "train_lo')  # and a record torn by the kill
    train(run, config=TrainConfig(max_steps=6), resume=True)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "train_loss" in line]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_replacing_a_checkpoint_never_leaves_it_missing(trained_run: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer, _ = checkpoint.load_checkpoint(trained_run)
    best = tmp_path / "checkpoints" / "best"
    checkpoint.save_checkpoint(best, model, tokenizer, {"step": 1})
    real_rename, real_rmtree = Path.rename, shutil.rmtree
    moments = []

    def rename(self, target):
        result = real_rename(self, target)
        moments.append((best / "model.safetensors").is_file())
        return result

    def rmtree(path, *args, **kwargs):
        moments.append((best / "model.safetensors").is_file())
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(Path, "rename", rename)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    checkpoint.save_checkpoint(best, model, tokenizer, {"step": 2})
    assert moments and all(moments)
    assert checkpoint.read_config(best)["step"] == 2
    assert [p.name for p in best.parent.iterdir()] == ["best"]


def test_resume_restores_a_best_checkpoint_caught_mid_replacement(number_corpus, tmp_path: Path) -> None:
    from aiayn.model import ModelConfig

    run = tmp_path / "run"
    config = tiny_config(number_corpus, max_steps=4, eval_every=2, save_every=2,
                         valid_src=str(number_corpus["valid_en"]), valid_tgt=str(number_corpus["valid_de"]))
    train(run, ModelConfig.preset("tiny"), config)
    best = run / "checkpoints" / "best"
    weights_before = (best / "model.safetensors").read_bytes()
    # Where the file system cannot swap folders, the old copy is renamed aside first; a kill right
    # then leaves it there with no `best`. It is the one good copy: resuming must restore it.
    best.rename(run / "checkpoints" / ".best.old-12345")
    train(run, config=TrainConfig(max_steps=4), resume=True)
    assert (best / "model.safetensors").read_bytes() == weights_before
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


def test_a_stale_average_is_not_preferred(number_corpus, tmp_path: Path) -> None:
    from aiayn.model import ModelConfig

    run = tmp_path / "run"
    train(run, ModelConfig.preset("tiny"), tiny_config(number_corpus, max_steps=4, save_every=2))
    assert main(["average", str(run), "--last", "2"]) == 0
    assert checkpoint.resolve_checkpoint(run).name == "average"
    train(run, config=TrainConfig(max_steps=6), resume=True)
    assert checkpoint.resolve_checkpoint(run).name == "step_00000006"
    assert main(["average", str(run), "--last", "2"]) == 0  # its own folder: re-averaging replaces it
    assert checkpoint.resolve_checkpoint(run).name == "average"
    assert checkpoint.read_config(run / "checkpoints" / "average")["step"] == 6


def test_overwrite_replaces_only_an_aiayn_run(number_corpus, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = ["train", "--out", str(run), *TINY_ARGS, *corpus_args(number_corpus), "--save-every", "2"]
    assert main([*args, "--max-steps", "4"]) == 0
    assert main([*args, "--max-steps", "2"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--max-steps", "2", "--overwrite"]) == 0
    assert [p.name for p in checkpoint.step_checkpoints(run)] == ["step_00000002"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # A folder of the user's is never replaced, --overwrite or not.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["train", "--out", str(mine), *TINY_ARGS, *corpus_args(number_corpus), "--max-steps", "1",
                 "--overwrite"]) == 2
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_demo_refuses_a_users_folder_and_replaces_only_with_overwrite(tmp_path: Path) -> None:
    from aiayn.demo import run_demo
    from aiayn.errors import InputError

    out = tmp_path / "demo"
    run_demo(out, minutes=0.01, n_train=300, n_test=10)
    assert (out / "text" / "test.en").is_file()
    with pytest.raises(InputError, match="--overwrite"):
        run_demo(out, minutes=0.01, n_train=300, n_test=10)
    run_demo(out, minutes=0.01, n_train=300, n_test=10, overwrite=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("{}")
    with pytest.raises(InputError, match="not an aiayn run"):
        run_demo(mine, minutes=0.01, n_train=300, n_test=10, overwrite=True)
    assert [p.name for p in mine.iterdir()] == ["config.json"]


# ----------------------------------------------------------------------------- torch.compile

def test_compile_makes_one_graph_for_every_batch_shape_with_the_loss_inside(number_corpus, tmp_path: Path) -> None:
    """Batches come in few shapes, and torch.compile (dynamic shapes) compiles the model with its
    loss once for all of them: no recompiling as source and target widths and rows change."""
    from torch._dynamo.utils import counters

    from aiayn.model import ModelConfig

    breaks_before = sum(counters["graph_break"].values())
    trainer = train(tmp_path / "run", ModelConfig.preset("tiny", d_model=32, d_ff=64),
                    tiny_config(number_corpus, batch_tokens=300, max_length=40, max_steps=30, compile=True, bf16=True, log_every=10))
    shapes_met = {(len(pairs), *widths) for pairs, widths, _ in trainer.stream.take(30, 0, 0)}
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(shapes_met) > 10  # many shapes were trained on ...
    assert trainer.graphs == 1  # ... by one graph
    logged = [r for r in records if "train_loss" in r]
    assert [r["compiled_graphs"] for r in logged] == [1, 1, 1]
    assert sum(counters["graph_break"].values()) == breaks_before  # the loss is in the graph
    assert logged[0]["first_step_seconds"] > 0 and "first_step_seconds" not in logged[1]


def test_a_checkpoint_of_an_earlier_batching_goes_on_at_the_next_epoch(number_corpus, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """Its batch index points into other batches: going on there would replay and skip pairs."""
    from aiayn.model import ModelConfig

    run = tmp_path / "run"
    train(run, ModelConfig.preset("tiny", d_model=16, d_ff=32), tiny_config(number_corpus, max_steps=3))
    saved = checkpoint.step_checkpoints(run)[-1] / "training_state.json"
    state = json.loads(saved.read_text())
    assert state["batching"] and (state["epoch"], state["batch"]) == (0, 3)
    for older in ("batching", "valid_seconds"):  # what a checkpoint of an earlier aiayn lacks
        del state[older]
    saved.write_text(json.dumps(state))
    capsys.readouterr()
    train(run, config=TrainConfig(max_steps=4), resume=True)
    assert "the rest of epoch 0 is skipped" in capsys.readouterr().err
    state, _ = checkpoint.load_training_state(checkpoint.step_checkpoints(run)[-1])
    assert (state["step"], state["epoch"], state["batch"]) == (4, 1, 1)


def test_validation_is_skipped_while_it_has_taken_more_than_its_share(number_corpus, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    from aiayn.model import ModelConfig

    run = tmp_path / "run"
    config = tiny_config(number_corpus, max_steps=4, eval_every=1, valid_share=0.001,
                         valid_src=str(number_corpus["valid_en"]), valid_tgt=str(number_corpus["valid_de"]))
    train(run, ModelConfig.preset("tiny", d_model=16, d_ff=32), config)
    validated = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
                 if "valid_bleu" in line]
    assert validated == [1, 4]  # the first (nothing spent yet) and the last (the run's result)
    assert "step 2: validation skipped" in capsys.readouterr().err


def test_a_lowercase_run_on_prepared_data_takes_the_datas_case_and_refuses_a_cased_one(number_corpus,
                                                                                        tmp_path: Path) -> None:
    from aiayn.data.prepared import PrepareOptions, prepare
    from aiayn.errors import InputError
    from aiayn.model import ModelConfig

    model = ModelConfig.preset("tiny", d_model=16, d_ff=32)
    for lowercase in (False, True):
        prepare(tmp_path / f"data{lowercase}", str(number_corpus["train_en"]), str(number_corpus["train_de"]),
                options=PrepareOptions(vocab_size=300, lowercase=lowercase), log=lambda m: None)
    with pytest.raises(InputError, match="prepared without --lowercase"):
        train(tmp_path / "cased", model, tiny_config(number_corpus, data=str(tmp_path / "dataFalse"), lowercase=True,
                                                     max_steps=1))
    assert not (tmp_path / "cased").exists()
    train(tmp_path / "lower", model, tiny_config(number_corpus, data=str(tmp_path / "dataTrue"), max_steps=1))
    assert json.loads((tmp_path / "lower" / "config.json").read_text())["training"]["lowercase"] is True


def test_a_run_with_bpe_dropout_trains_on_its_copies_and_records_them(number_corpus, tmp_path: Path) -> None:
    from aiayn.data.prepared import PreparedData, PrepareOptions, prepare
    from aiayn.errors import InputError
    from aiayn.model import ModelConfig

    model = ModelConfig.preset("tiny", d_model=16, d_ff=32)
    train(tmp_path / "raw", model, tiny_config(number_corpus, bpe_dropout=0.1, segmentations=2, max_steps=1))
    data = PreparedData(tmp_path / "raw" / "data")
    assert data.pairs == 2 * 2000 and data.manifest["options"]["segmentations"] == 2
    prepare(tmp_path / "data", str(number_corpus["train_en"]), str(number_corpus["train_de"]),
            options=PrepareOptions(vocab_size=300, bpe_dropout=0.2, segmentations=3), log=lambda m: None)
    train(tmp_path / "prepared", model, tiny_config(number_corpus, data=str(tmp_path / "data"), train_src="",
                                                    train_tgt="", max_steps=1))
    with pytest.raises(InputError, match="was prepared with 0.2, 3"):  # the data decides, not the config
        train(tmp_path / "other", model, tiny_config(number_corpus, data=str(tmp_path / "data"), train_src="",
                                                     train_tgt="", bpe_dropout=0.1, segmentations=3, max_steps=1))
    assert not (tmp_path / "other").exists()
    for run, options in (("raw", (0.1, 2)), ("prepared", (0.2, 3))):  # config.json says what the data is
        training = json.loads((tmp_path / run / "config.json").read_text())["training"]
        assert (training["bpe_dropout"], training["segmentations"]) == options


def test_a_run_with_rdrop_learns_and_records_its_weight(number_corpus, tmp_path: Path, monkeypatch) -> None:
    from aiayn.training.loss import TeacherForcingLoss

    weights_seen, rdrop_loss = [], TeacherForcingLoss._rdrop_loss
    monkeypatch.setattr(TeacherForcingLoss, "_rdrop_loss",
                        lambda self, *batch: weights_seen.append(self.rdrop) or rdrop_loss(self, *batch))
    run = tmp_path / "rdrop"
    assert main(["train", *TINY_ARGS, *corpus_args(number_corpus), "--out", str(run), "--max-steps", "30",
                 "--rdrop", "5", "--dropout", "0.3"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records if "train_loss" in r]
    assert losses[-1] < losses[0] and len(losses) == 15
    assert json.loads((run / "config.json").read_text())["training"]["rdrop"] == 5.0
    assert weights_seen == [5.0] * 30  # every step's objective two passes, with the recipe's weight
