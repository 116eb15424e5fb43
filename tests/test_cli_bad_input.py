"""Every verb against bad input: exit status 2, one line on stderr naming what is wrong, no
traceback, and nothing of the user's (or anything else) written, changed or removed."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from aiayn.cli import main
from aiayn.data.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def workspace(trained_run: Path, number_corpus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder: their own files, a run, broken copies of it, and inputs good and bad."""
    root = tmp_path_factory.mktemp("workspace")
    (root / "mine").mkdir()
    (root / "mine" / "config.json").write_text('{"my": "settings"}')
    (root / "mine" / "notes.txt").write_text("do not lose me")
    (root / "empty.en").write_text("")
    (root / "empty.de").write_text("")
    (root / "three.en").write_text("one\ntwo\nthree\n")
    (root / "two.de").write_text("eins\nzwei\n")
    (root / "bad.en").write_bytes(b"seven\n\xff\xfe\n")
    (root / "long.en").write_text("seven hundred twelve thousand\n" * 20)
    (root / "long.de").write_text("siebenhundertzwoelftausend und mehr\n" * 20)
    (root / "a_file").write_text("not a folder")
    run = root / "run"
    shutil.copytree(trained_run, run)
    (run / "metrics.jsonl").write_text('{"step": 1, "train_loss": 2.0, "train_nll": 1.9, "lr": 0.1}\n{not json\n')
    (root / "fields").mkdir()
    (root / "fields" / "metrics.jsonl").write_text('{"step": 1, "train_loss": 2.0}\n')
    (root / "link_to_mine").symlink_to(root / "mine")
    cuda_run = root / "cuda_run"
    shutil.copytree(run, cuda_run)
    stored = json.loads((cuda_run / "config.json").read_text())
    stored["training"]["device"] = "cuda:99"
    (cuda_run / "config.json").write_text(json.dumps(stored))
    from aiayn.data.prepared import PrepareOptions, prepare
    prepare(root / "other_data", str(root / "long.en"), str(root / "long.de"), options=PrepareOptions(vocab_size=300),
            log=lambda message: None)
    # The run's corpus again, with the run's vocabulary options but another max_length: same vocabulary, other pairs.
    prepare(root / "other_pairs", str(number_corpus["train_en"]), str(number_corpus["train_de"]),
            options=PrepareOptions(vocab_size=300, max_length=200, seed=3), log=lambda message: None)
    prepare(root / "moses_data", str(root / "long.en"), str(root / "long.de"),
            options=PrepareOptions(vocab_size=300, moses_text=("en", "de")), log=lambda message: None)
    for name, languages in (("moses_xx", ["en", "xx"]), ("moses_null", None)):  # damaged manifests
        shutil.copytree(root / "moses_data", root / name)
        manifest = json.loads((root / name / "manifest.json").read_text())
        manifest["options"]["moses_text"] = languages
        (root / name / "manifest.json").write_text(json.dumps(manifest))
    last = sorted((run / "checkpoints").glob("step_*"))[-1]
    truncated = root / "truncated"
    shutil.copytree(last, truncated)
    (truncated / "model.safetensors").write_bytes((last / "model.safetensors").read_bytes()[:200])
    mismatched = root / "mismatched"
    shutil.copytree(last, mismatched)
    lines = number_corpus["train_en"].read_text().splitlines()
    Tokenizer.train(lines, 280).save(mismatched / "tokenizer.model")
    odd_kind = root / "odd_kind"
    shutil.copytree(last, odd_kind)
    stored = json.loads((odd_kind / "config.json").read_text())
    (odd_kind / "config.json").write_text(json.dumps({**stored, "kind": ["translator"]}))
    moses_copy = root / "moses_copy"  # loads, but reads text another way: no ensemble with the run
    shutil.copytree(last, moses_copy)
    stored = json.loads((moses_copy / "config.json").read_text())
    stored["training"]["moses_text"] = True
    (moses_copy / "config.json").write_text(json.dumps(stored))
    no_tokenizer = root / "no_tokenizer"
    shutil.copytree(run, no_tokenizer)
    (no_tokenizer / "tokenizer.model").unlink()
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under root with a digest of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


TRAIN = ["train", "--preset", "tiny", "--vocab-size", "300", "--batch-tokens", "600", "--max-steps", "2"]
CORPUS = ["--train-src", "{w}/long.en", "--train-tgt", "{w}/long.de"]
CHECKPOINT = ["--checkpoint", "{w}/run"]

# (arguments with {w} for the workspace, text the error line must contain)
CASES = [
    (["demo", "--out", "{w}/mine"], "mine"),
    (["demo", "--out", "{w}/run"], "--overwrite"),
    (["demo", "--out", "{w}/a_file"], "a_file"),
    (["demo", "--minutes", "0"], "--minutes"),
    ([*TRAIN, "--out", "{w}/mine", *CORPUS], "mine"),
    ([*TRAIN, "--out", "{w}/run", *CORPUS], "--resume"),
    ([*TRAIN, "--out", "{w}/new", "--train-src", "{w}/missing.en", "--train-tgt", "{w}/long.de"], "missing.en"),
    ([*TRAIN, "--out", "{w}/new", "--train-src", "{w}/empty.en", "--train-tgt", "{w}/empty.de"], "empty.en"),
    ([*TRAIN, "--out", "{w}/new", "--train-src", "{w}/three.en", "--train-tgt", "{w}/two.de"], "two.de"),
    ([*TRAIN, "--out", "{w}/new", "--train-src", "{w}/bad.en", "--train-tgt", "{w}/two.de"], "bad.en"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--max-length", "2", "--batch-tokens", "600"], "filtered out"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--valid-src", "{w}/three.en", "--valid-tgt", "{w}/two.de"], "three.en"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--vocab-size", "5"], "vocab_size"),
    (["train", "--out", "{w}/new", *CORPUS], "stopping rule"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--batch-tokens", "100"], "batch_tokens"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--max-steps", "0"], "--max-steps"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--dropout", "1.5"], "--dropout"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--rdrop", "-1"], "--rdrop"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--rdrop", "1000"], "rdrop"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--layers", "0"], "--layers"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--d-model", "30", "--heads", "4"], "d_model (30)"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--d-model", "15", "--heads", "5"], "even d_model"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--d-ff", "1000000"], "--d-ff"),
    (["train", "--resume", "{w}/run", "--layers", "2"], "--layers"),
    (["train", "--resume", "{w}/run", "--dropout", "0.3"], "--dropout"),
    (["train", "--resume", "{w}/run", "--lowercase"], "--lowercase"),
    (["train", "--resume", "{w}/run", "--vocab-size", "300"], "--vocab-size"),
    (["train", "--resume", "{w}/run", "--bpe-dropout", "0.1"], "--bpe-dropout"),
    (["train", "--resume", "{w}/run", "--segmentations", "2"], "--segmentations"),
    (["prepare", "--out", "{w}/new", "--train-src", "{w}/long.en", "--train-tgt", "{w}/long.de",
      "--bpe-dropout", "1"], "--bpe-dropout"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--bpe-dropout", "1"], "--bpe-dropout"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--segmentations", "3"], "needs bpe_dropout"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--segmentations", "0"], "--segmentations"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--bpe-dropout", "0.1", "--segmentations", "1001"], "--segmentations"),
    (["train", "--out", "{w}/new", "--data", "{w}/other_data", "--max-steps", "2", "--bpe-dropout", "0.1"],
     "--bpe-dropout"),
    (["prepare", "--out", "{w}/new", "--train-src", "{w}/long.en", "--train-tgt", "{w}/long.de",
      "--segmentations", "2"], "needs bpe_dropout"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--warmup", "nan"], "--warmup"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--lr-scale", "inf"], "--lr-scale"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--device", "cuda:99"], "cuda:99"),
    ([*TRAIN, "--out", "{w}/new"], "--train-src"),
    (["train", "--resume", "{w}/no_tokenizer"], "tokenizer.model"),
    (["train", "--resume", "{w}/mine"], "config.json"),
    (["train", "--resume", "{w}/nowhere"], "nowhere"),
    (["translate", "--checkpoint", "{w}/nowhere"], "nowhere"),
    (["translate", "--checkpoint", "{w}/mine"], "mine"),
    (["translate", "--checkpoint", "{w}/truncated", "--input", "{w}/three.en"], "model.safetensors"),
    (["translate", "--checkpoint", "{w}/mismatched", "--input", "{w}/three.en"], "tokenizer.model"),
    (["translate", *CHECKPOINT, "--input", "{w}/missing.en"], "missing.en"),
    (["translate", *CHECKPOINT, "--input", "{w}/bad.en"], "bad.en, line 2"),
    (["translate", *CHECKPOINT, "--input", "{w}/three.en", "--output", "{w}/mine"], "--output"),
    (["translate", *CHECKPOINT, "--input", "{w}/three.en", "--output", "{w}/nowhere/out.txt"], "nowhere"),
    (["translate", *CHECKPOINT, "--beam", "0"], "--beam"),
    (["translate", *CHECKPOINT, "--n-best", "-1"], "--n-best"),
    (["translate", *CHECKPOINT, "--top-p", "2"], "--top-p"),
    (["translate", *CHECKPOINT, "--temperature", "0"], "--temperature"),
    (["translate", *CHECKPOINT, "--ensemble", "{w}/nowhere", "--input", "{w}/three.en"], "nowhere"),
    (["translate", *CHECKPOINT, "--ensemble", "{w}/moses_copy", "--input", "{w}/three.en"], "moses_copy"),
    (["evaluate", *CHECKPOINT, "--ensemble", "{w}/mismatched", "--src", "{w}/long.en", "--ref", "{w}/long.de"],
     "tokenizer.model"),
    (["evaluate", *CHECKPOINT, "--src", "{w}/three.en", "--ref", "{w}/two.de"], "two.de"),
    (["evaluate", *CHECKPOINT, "--src", "{w}/missing.en", "--ref", "{w}/two.de"], "missing.en"),
    (["evaluate", *CHECKPOINT, "--src", "{w}/empty.en", "--ref", "{w}/empty.de"], "empty.en"),
    (["evaluate", *CHECKPOINT, "--src", "{w}/long.en", "--ref", "{w}/long.de", "--beam", "1", "--alphas", "1"], "--alphas"),
    (["evaluate", *CHECKPOINT, "--src", "{w}/long.en", "--ref", "{w}/long.de", "--alphas", "-1"], "--alphas"),
    (["evaluate", *CHECKPOINT, "--src", "{w}/long.en", "--ref", "{w}/long.de", "--min-brevity-penalty", "0.98"],
     "--min-brevity-penalty"),
    (["evaluate", *CHECKPOINT, "--src", "{w}/long.en", "--ref", "{w}/long.de", "--alphas", "1",
      "--min-brevity-penalty", "1.5"], "--min-brevity-penalty"),
    (["download", "wmt14-en-de", "--out", "{w}/mine"], "mine"),
    (["download", "wmt14-en-de", "--out", "{w}/a_file"], "a_file"),
    (["download", "wmt14-en-de", "--out", "{w}/new", "--archives", "{w}/new/archives"], "--archives"),
    (["evaluate", *CHECKPOINT, "--src", "{w}/long.en", "--ref", "{w}/long.de", "--hyp", "{w}/mine"], "--hyp"),
    (["evaluate", "--checkpoint", "{w}/truncated", "--src", "{w}/long.en", "--ref", "{w}/long.de"], "model.safetensors"),
    (["attention", *CHECKPOINT, "--src", "seven", "--out", "{w}/a.png", "--layer", "2"], "--layer"),
    (["attention", *CHECKPOINT, "--src", "seven", "--out", "{w}/a.png", "--layer", "-3"], "--layer"),
    (["attention", *CHECKPOINT, "--src", "seven", "--out", "{w}/a.png", "--head", "4"], "--head"),
    (["attention", *CHECKPOINT, "--src", "seven", "--out", "{w}/mine"], "--out"),
    (["attention", *CHECKPOINT, "--src", "seven", "--out", "{w}/nowhere/a.png"], "nowhere"),
    (["attention", *CHECKPOINT, "--src", "seven", "--out", "{w}/a.png", "--kind", "sideways"], "--kind"),
    (["attention", "--checkpoint", "{w}/mine", "--src", "seven", "--out", "{w}/a.png"], "mine"),
    (["serve", "--checkpoint", "{w}/nowhere"], "nowhere"),
    (["serve", "--checkpoint", "{w}/truncated"], "model.safetensors"),
    (["serve", "--checkpoint", "{w}/odd_kind"], "field 'kind'"),
    (["attention", "--checkpoint", "{w}/odd_kind", "--src", "seven", "--out", "{w}/a.png"], "field 'kind'"),
    (["translate", "--checkpoint", "{w}/odd_kind", "--input", "{w}/three.en"], "field 'kind'"),
    (["average", "{w}/odd_kind", "--last", "2"], "odd_kind"),
    (["serve", *CHECKPOINT, "--port", "70000"], "--port"),
    (["serve", *CHECKPOINT, "--timeout", "0"], "--timeout"),
    (["average", "{w}/mine"], "mine"),
    (["average", "{w}/nowhere"], "nowhere"),
    (["average", "{w}/run", "--last", "0"], "--last"),
    (["average", "{w}/run", "--out", "{w}/mine"], "mine"),
    (["average", "{w}/run", "--out", "{w}/truncated"], "--overwrite"),
    (["average", "{w}/run", "--out", "{w}/a_file"], "a_file"),
    (["plot", "{w}/mine"], "metrics.jsonl"),
    (["plot", "{w}/run"], "line 2"),
    (["plot", "{w}/nowhere"], "nowhere"),
    (["params", "--vocab-size", "0"], "--vocab-size"),
    (["params", "--vocab-size", "99999999999999"], "--vocab-size"),
    ([*TRAIN, "--out", "{w}/link_to_mine", *CORPUS], "link_to_mine"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--seed", "99999999999999999999"], "--seed"),
    (["demo", "--seed", "-1"], "--seed"),
    (["train", "--resume", "{w}/cuda_run"], "cuda:99"),
    (["train", "--resume", "{w}/run", "--data", "{w}/other_data"], "another vocabulary"),
    (["train", "--resume", "{w}/run", "--data", "{w}/mine"], "manifest.json"),
    (["train", "--resume", "{w}/run", "--data", "{w}/other_pairs"], "other pairs"),
    (["prepare", "--out", "{w}/new", "--train-src", "{w}/long.en", "--train-tgt", "{w}/long.de",
      "--valid-src", "{w}/three.en", "--valid-tgt", "{w}/two.de"], "two.de"),
    ([*TRAIN, "--out", "{w}/new", "--data", "{w}/nowhere"], "nowhere"),
    ([*TRAIN, "--out", "{w}/new", "--data", "{w}/other_data", "--vocab-size", "50"], "--vocab-size"),
    ([*TRAIN, "--out", "{w}/new", "--data", "{w}/other_data", "--valid-src", "{w}/long.en"], "--valid-src"),
    (["train", "--out", "{w}/new", "--data", "{w}/other_data", "--max-steps", "2", "--lowercase"], "--lowercase"),
    (["train", "--out", "{w}/new", "--data", "{w}/other_data", "--max-steps", "2", "--moses-text"], "--moses-text"),
    (["train", "--out", "{w}/new", "--data", "{w}/moses_data", "--max-steps", "2", "--source-lang", "fr"],
     "--source-lang fr"),
    (["train", "--out", "{w}/new", "--data", "{w}/moses_xx", "--max-steps", "2"], "manifest.json: damaged"),
    ([*TRAIN, "--out", "{w}/new", "--multi30k", "en-de", "--data-dir", "{w}/mine", "--source-lang", "de"],
     "--source-lang de"),
    (["train", "--out", "{w}/new", "--data", "{w}/moses_null", "--max-steps", "2"], "moses_text"),
    (["prepare", "--out", "{w}/new", "--train-src", "{w}/long.en", "--train-tgt", "{w}/long.de", "--source-lang", "en"],
     "--source-lang"),
    ([*TRAIN, "--out", "{w}/new/sub/run", *CORPUS, "--moses-text", "--source-lang", "en", "--target-lang", "xx"],
     "'xx'"),
    (["train", "--resume", "{w}/run", "--moses-text"], "--moses-text"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--moses-text"], "--source-lang"),
    ([*TRAIN, "--out", "{w}/new", *CORPUS, "--moses-text", "--source-lang", "xx", "--target-lang", "de"], "'xx'"),
    (["prepare", "--out", "{w}/new", "--train-src", "{w}/long.en", "--train-tgt", "{w}/long.de", "--moses-text",
      "--source-lang", "en"], "--target-lang"),
    (["prepare", "--out", "{w}/new", "--train-src", "{w}/three.en", "--train-tgt", "{w}/two.de"], "two.de"),
    (["prepare", "--out", "{w}/new", "--train-src", "{w}/bad.en", "--train-tgt", "{w}/two.de"], "bad.en"),
    (["prepare", "--out", "{w}/new", "--train-src", "{w}/empty.en", "--train-tgt", "{w}/empty.de"], "empty.en"),
    (["prepare", "--out", "{w}/mine", "--train-src", "{w}/long.en", "--train-tgt", "{w}/long.de"], "mine"),
    (["prepare", "--out", "{w}/new", "--train-src", "{w}/long.en"], "--train-tgt"),
    (["prepare", "--out", "{w}/new", "--train-src", "{w}/long.en", "--train-tgt", "{w}/long.de",
      "--valid-src", "{w}/long.en"], "--valid-tgt"),
    (["prepare", "--out", "{w}/other_data", "--train-src", "{w}/long.en", "--train-tgt", "{w}/long.de"], "--overwrite"),
    (["prepare", "--out", "{w}/new", "--train-src", "{w}/mine", "--train-tgt", "{w}/long.de"], "folder"),
    (["translate", *CHECKPOINT, "--alpha", "1e308"], "--alpha"),
    (["translate", *CHECKPOINT, "--sample", "--temperature", "1e-300"], "--temperature"),
    (["translate", *CHECKPOINT, "--input", "{w}/three.en", "--output", "{w}/three.en"], "also an input"),
    (["evaluate", *CHECKPOINT, "--src", "{w}/long.en", "--ref", "{w}/long.de", "--hyp", "{w}/long.en"], "also an input"),
    (["attention", *CHECKPOINT, "--src", "seven", "--out", "{w}/a.txt"], ".png"),
    (["plot", "{w}/run", "--out", "{w}/c.txt"], ".png"),
    (["plot", "{w}/fields"], "no number for lr"),
    (["serve", *CHECKPOINT, "--host", "999.1.1.1"], "999.1.1.1"),
    (["serve", *CHECKPOINT, "--max-wait-ms", "1e308"], "--max-wait-ms"),
    (["params", "--preset", "huge"], "--preset"),
]


@pytest.mark.parametrize("arguments,named", CASES, ids=[" ".join(a[:3]) + f" [{n}]" for a, n in CASES])
def test_bad_input_exits_2_with_one_line_and_touches_nothing(
        workspace: Path, arguments: list[str], named: str, capfd: pytest.CaptureFixture[str]) -> None:
    before = snapshot(workspace)
    argv = [a.replace("{w}", str(workspace)) for a in arguments]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (argv, err)
    assert len(lines) == 1, err
    assert named in lines[0] and "error" in lines[0], lines[0]
    assert "Traceback" not in err + out
    assert snapshot(workspace) == before
