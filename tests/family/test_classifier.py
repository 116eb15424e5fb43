"""The encoder as a sentence classifier (BERT's recipe): training, the pipeline the notes show,
the CLI, and /v1/classify over HTTP."""
from __future__ import annotations

import json
import random
import shutil
from itertools import groupby
from pathlib import Path

import httpx
import pytest

from aiayn import pipeline
from aiayn.cli import build_parser, main
from aiayn.checkpoint import resolve_checkpoint
from aiayn.data.tokenizer import BOS_ID, EOS_ID
from aiayn.errors import InputError
from aiayn.family.classifier import TextClassifier, pack_sentences, pretrain_mlm
from aiayn.model import ModelConfig
from aiayn.training.config import TrainConfig

NOTES = ["I love this product! It's amazing and works perfectly.",
         "This is the worst experience I've ever had. Completely disappointed."]
# Made-up reviews in the notes' words: sentiment words of one side, the rest shared by both.
GOOD = ["love", "amazing", "perfectly.", "great", "wonderful", "good!", "It's", "works"]
BAD = ["worst", "disappointed.", "awful", "terrible", "Completely", "bad", "boring.", "ever"]
FILLER = ["This", "this", "product!", "is", "the", "I", "I've", "had.", "and", "experience", "a", "movie", "it", "was"]


def sentences(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice("01")
        words = rng.choices(FILLER, k=rng.randint(3, 9)) + rng.choices(GOOD if label == "1" else BAD, k=rng.randint(1, 3))
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sentiment")
    paths = {}
    for split, n, seed in (("train", 1200, 1), ("dev", 200, 2)):
        paths[split] = root / f"{split}.tsv"
        paths[split].write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in sentences(n, seed)))
    return paths


TINY = ["--preset", "tiny", "--vocab-size", "300", "--batch-tokens", "1000", "--warmup", "50", "--eval-every", "100",
        "--log-every", "50"]


@pytest.fixture(scope="module")
def classifier_run(data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    mlm = tmp_path_factory.mktemp("mlm") / "mlm"
    assert main(["pretrain-mlm", "--text", str(data["train"]), "--out", str(mlm), *TINY, "--max-steps", "40"]) == 0
    run = tmp_path_factory.mktemp("classifier") / "run"
    assert main(["train-classifier", "--train", str(data["train"]), "--valid", str(data["dev"]), "--init", str(mlm),
                 "--label-names", "NEGATIVE,POSITIVE", "--pooling", "mean", "--out", str(run), *TINY, "--max-steps", "300",
                 "--lr-scale", "0.3"]) == 0
    return run


def test_the_pipeline_answers_as_in_the_notes(classifier_run: Path) -> None:
    classifier = pipeline("sentiment-analysis", model=classifier_run)
    results = classifier(NOTES)
    assert [sorted(r) for r in results] == [["label", "score"]] * 2
    assert [r["label"] for r in results] == ["POSITIVE", "NEGATIVE"]
    assert all(0.5 < r["score"] <= 1.0 for r in results)
    assert classifier(NOTES[0]) == results[:1]
    config = json.loads((classifier_run / "checkpoints" / "best" / "config.json").read_text())
    assert config["kind"] == "classifier" and config["labels"] == ["NEGATIVE", "POSITIVE"]
    assert config["valid_accuracy"] > 0.8
    assert config["pooling"] == "mean" and classifier.classifier.model.pooling == "mean"


def test_a_checkpoint_with_an_unknown_pooling_is_named(classifier_run: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(resolve_checkpoint(classifier_run), broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "pooling": "max"}))
    assert main(["classify", "--checkpoint", str(broken), "a movie"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "config.json" in error and "'pooling'" in error


def test_a_checkpoint_from_before_the_pooling_choice_reads_cls(classifier_run: Path, tmp_path: Path) -> None:
    older = tmp_path / "older"
    shutil.copytree(resolve_checkpoint(classifier_run), older)
    config = json.loads((older / "config.json").read_text())
    del config["pooling"]
    (older / "config.json").write_text(json.dumps(config))
    assert TextClassifier.from_checkpoint(older).model.pooling == "cls"


def test_without_a_model_the_pipeline_says_how_to_train_one() -> None:
    with pytest.raises(InputError, match="aiayn train-classifier"):
        pipeline("sentiment-analysis")
    with pytest.raises(InputError, match="sentiment-analysis"):
        pipeline("translation", model="x")


def test_the_cli_classifies_arguments(classifier_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", "--checkpoint", str(classifier_run), "a great movie", "an awful movie"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["POSITIVE", "NEGATIVE"]
    assert main(["classify", "--checkpoint", str(classifier_run / "nowhere"), "x"]) == 2


def test_classify_over_http(classifier_run: Path, launch) -> None:
    process, url = launch(classifier_run)
    try:
        response = httpx.post(f"{url}/v1/classify", json={"text": NOTES}, timeout=60)
        assert [r["label"] for r in response.json()["results"]] == ["POSITIVE", "NEGATIVE"]
        assert httpx.get(f"{url}/v1/model").json()["kind"] == "classifier"
        assert httpx.post(f"{url}/v1/classify", json={"text": "not a list"}).status_code == 422
        assert httpx.post(f"{url}/v1/classify", json={"txt": ["x"]}).status_code == 422
        assert httpx.post(f"{url}/v1/classify", json={"text": ["x"] * 65}).status_code == 413
        assert httpx.post(f"{url}/v1/classify", json={"text": ["x" * 2001]}).status_code == 413
        assert httpx.post(f"{url}/v1/translate", json={"text": ["x"]}).status_code == 404
        assert httpx.post(f"{url}/v1/classify", json={"text": []}).json()["results"] == []
    finally:
        process.terminate()
        process.wait(timeout=60)


BAD_TRAINING = [  # (file text, extra arguments, what the one line of stderr names)
    ("sentence\tlabel\ngood movie\t1\nno label here\n", [], "bad.tsv, line 3"),
    ("good movie\t1\nbad movie\t0\n", [], "bad.tsv, line 1"),  # no header
    ("index\tsentence\n1\tgood movie\n", [], "bad.tsv, line 1"),  # SST-2's test.tsv: no labels
    ("sentence\tlabel\ngood movie\t1\ngreat movie\t1\n", [], "1 label"),
    ("sentence\tlabel\ngood movie\t1\nbad movie\t0\n", ["--label-names", "NEG,NEG"], "--label-names"),
    ("sentence\tlabel\ngood movie\t1\nbad movie\t0\n", ["--vocab-size", "5"], "--vocab-size"),
    ("sentence\tlabel\n" + "a very long and good movie\t1\n" * 20 + "bad\t0\n", ["--batch-tokens", "3"],
     "--batch-tokens"),
    ("sentence\tlabel\ngood movie\t1\nbad movie\t0\n", ["--average-last", "3"], "--average-last 3"),  # no --valid
]


@pytest.mark.parametrize("text, extra, named", BAD_TRAINING)
def test_bad_training_input_is_named(text: str, extra: list[str], named: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.tsv").write_text(text)
    arguments = ["train-classifier", "--train", str(tmp_path / "bad.tsv"), "--out", str(tmp_path / "run"), *TINY,
                 "--max-steps", "1", *extra]
    assert main(arguments) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_pre_training_validates_nothing_so_takes_no_average(data, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pretrain-mlm", "--text", str(data["train"]), "--out", str(tmp_path / "mlm"), *TINY, "--max-steps",
                 "1", "--average-last", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--average-last 2: nothing is validated" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "mlm").exists()


def test_pre_training_masks_the_share_asked_for(data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import aiayn.family.classifier as classifier

    rates = []
    real = classifier.mask_tokens
    monkeypatch.setattr(classifier, "mask_tokens", lambda *args: rates.append(args[-1]) or real(*args))
    run = tmp_path / "mlm"
    assert main(["pretrain-mlm", "--text", str(data["train"]), "--out", str(run), *TINY, "--max-steps", "3",
                 "--mask-rate", "0.4"]) == 0
    # Three steps, and the batch read ahead for a fourth.
    assert rates == [0.4] * 4 and json.loads((run / "config.json").read_text())["task"]["mask_rate"] == 0.4
    assert build_parser().parse_args(["pretrain-mlm", "--text", "t", "--out", "o"]).mask_rate == 0.15  # BERT's
    for bad in (0.0, 1.0, float("nan")):
        with pytest.raises(InputError, match="mask_rate"):
            pretrain_mlm(["a sentence"], tmp_path / "api", ModelConfig.preset("tiny"), TrainConfig(max_steps=1),
                         mask_rate=bad)
        assert not (tmp_path / "api").exists()
    for bad in ("0", "1", "nan"):
        with pytest.raises(SystemExit) as stop:
            main(["pretrain-mlm", "--text", str(data["train"]), "--out", str(tmp_path / bad), *TINY, "--max-steps", "1",
                  "--mask-rate", bad])
        assert stop.value.code == 2 and "--mask-rate" in capsys.readouterr().err
        assert not (tmp_path / bad).exists()


def test_packing_puts_whole_sentences_in_rows_of_at_most_the_limit() -> None:
    rows = [[BOS_ID, *range(100 * k + 10, 100 * k + 10 + n)] for k, n in enumerate([3, 5, 2, 7, 1, 4, 20])]
    packed = pack_sentences(rows, 12, seed=3)
    assert all(row[0] == BOS_ID and BOS_ID not in row[1:] and len(row) <= 12 for row in packed)
    assert len(packed) < len(rows)  # several sentences share a row
    sentences = [list(run) for row in packed for ends, run in groupby(row[1:], lambda t: t == EOS_ID) if not ends]
    assert sorted(sentences) == sorted([row[1:] for row in rows[:-1]] + [rows[-1][1:11]])  # each once, the long one cut
    assert all(row[-1] == EOS_ID for row in packed)  # a cut sentence keeps its </s> too
    assert pack_sentences(rows, 12, seed=3) == packed and pack_sentences(rows, 12, seed=4) != packed
    assert pack_sentences([], 12, seed=3) == [] and pack_sentences([[BOS_ID, 7, 8]], 3, seed=3) == [[BOS_ID, 7, EOS_ID]]


def test_pre_training_packs_sentences_when_asked(data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import aiayn.family.classifier as classifier

    widths = []
    real = classifier.mask_tokens
    monkeypatch.setattr(classifier, "mask_tokens", lambda tokens, *args: widths.append(
        ((tokens == EOS_ID).sum(dim=1).max().item(), tokens.size(1))) or real(tokens, *args))
    for pack, run in ((None, tmp_path / "single"), (200, tmp_path / "packed")):
        extra = ["--pack", str(pack)] if pack else []
        assert main(["pretrain-mlm", "--text", str(data["train"]), "--out", str(run), *TINY, "--max-steps", "2",
                     *extra]) == 0
        assert json.loads((resolve_checkpoint(run) / "config.json").read_text())["pack"] == pack
    (single_eos, single_width), (packed_eos, packed_width) = widths[0], widths[3]  # 2 steps + 1 read ahead each
    assert single_eos == 0 and packed_eos > 2 and single_width < packed_width <= 200
    capsys.readouterr()
    for bad in (64.0, True, 1001):
        with pytest.raises(InputError, match=f"pack {bad!r}"):
            pretrain_mlm(["a sentence"], tmp_path / "api", ModelConfig.preset("tiny"),
                         TrainConfig(max_steps=1, batch_tokens=1000), pack=bad)
        assert not (tmp_path / "api").exists()
    for bad, named in (("2", "--pack"), ("1001", "pack 1001")):  # --batch-tokens is 1000
        run = tmp_path / f"bad{bad}"
        try:
            code = main(["pretrain-mlm", "--text", str(data["train"]), "--out", str(run), *TINY, "--max-steps", "1",
                         "--pack", bad])
        except SystemExit as stop:
            code = stop.code
        err = capsys.readouterr().err
        assert code == 2 and named in err and len(err.strip().splitlines()) == 1 and not run.exists()


def test_layers_sets_the_depth_that_fine_tuning_keeps(data, tmp_path: Path) -> None:
    mlm, run = tmp_path / "mlm", tmp_path / "run"
    assert main(["pretrain-mlm", "--text", str(data["train"]), "--out", str(mlm), *TINY, "--max-steps", "1",
                 "--layers", "3"]) == 0  # the tiny preset has 2
    model = json.loads((mlm / "config.json").read_text())["model"]
    assert (model["n_encoder_layers"], model["n_decoder_layers"]) == (3, 0)
    assert main(["train-classifier", "--train", str(data["train"]), "--init", str(mlm), "--out", str(run), *TINY,
                 "--max-steps", "1"]) == 0
    assert len(TextClassifier.from_checkpoint(run).model.body.encoder.layers) == 3
    refused = tmp_path / "refused"  # --layers against the checkpoint's depth is refused, not ignored
    assert main(["train-classifier", "--train", str(data["train"]), "--init", str(mlm), "--out", str(refused), *TINY,
                 "--max-steps", "1", "--layers", "1"]) == 2
    assert not refused.exists()


@pytest.mark.parametrize("extra, named", [(["--layers", "0"], "--layers"), (["--layers", "49"], "--layers"),
                                          (["--device", "abacus"], "--device abacus")])
def test_bad_depth_or_device_is_named_before_any_folder(data, extra: list[str], named: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    for verb in (["pretrain-mlm", "--text"], ["train-classifier", "--train"]):
        arguments = [*verb, str(data["train"]), "--out", str(tmp_path / "run"), *TINY, "--max-steps", "1", *extra]
        try:
            code = main(arguments)
        except SystemExit as stop:  # argparse's refusal
            code = stop.code
        err = capsys.readouterr().err
        assert code == 2 and named in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not (tmp_path / "run").exists()
