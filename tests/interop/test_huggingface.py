"""Hugging Face Marian folders: export (aiayn -> MarianMTModel + MarianTokenizer, loaded with
transformers alone) and import (a Marian folder built here -> an aiayn checkpoint), each checked
against transformers: the same greedy outputs and logits within 1e-4, raw text to raw text."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from aiayn import Translator
from aiayn.cli import main
from aiayn.data.batching import pad
from aiayn.data.marian_vocab import MarianVocabTokenizer
from aiayn.decoding.search import EXTRA_OUTPUT_LENGTH
from aiayn.interop import import_marian

TOLERANCE = 1e-4  # float32 logits; the conversions permute sums, so they agree to rounding only


def max_logit_difference(translator: Translator, hf, sources: list[list[int]], outputs: list[list[int]]) -> float:
    """Teacher forcing on the given outputs: max |aiayn logits - MarianMTModel logits| over real positions."""
    c = translator.model.config
    src = pad([s + [c.eos_id] for s in sources], pad_id=c.pad_id)
    tgt = pad([[c.bos_id] + o for o in outputs], pad_id=c.pad_id)
    with torch.inference_mode():
        ours = translator.model(src, tgt)
        theirs = hf(input_ids=src, attention_mask=src != c.pad_id, decoder_input_ids=tgt).logits
    real = torch.tensor([[j <= len(o) for j in range(tgt.size(1))] for o in outputs])
    return (ours - theirs).abs()[real].max().item()


def marian_greedy(hf, tokenizer, texts: list[str], **options) -> list[list[int]]:
    """MarianMTModel.generate, greedy, each row cut at aiayn's cap (its source + </s> + 50) and at </s>."""
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    caps = batch["attention_mask"].sum(1) + EXTRA_OUTPUT_LENGTH
    with torch.inference_mode():
        generated = hf.generate(**batch, num_beams=1, do_sample=False, max_new_tokens=int(caps.max()), **options)
    outputs = []
    for row, cap in zip(generated.tolist(), caps.tolist()):
        row = row[1: cap + 1]  # without the decoder start
        outputs.append(row[: row.index(hf.config.eos_token_id)] if hf.config.eos_token_id in row else row)
    return outputs


# ----------------------------------------------------------------------------- export

@pytest.fixture(scope="module")
def exported(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "numbers-hf"
    assert main(["export", "--checkpoint", str(trained_run), "--to", "huggingface", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def hf_export(exported: Path):
    from transformers import MarianMTModel, MarianTokenizer

    return MarianMTModel.from_pretrained(exported).eval(), MarianTokenizer.from_pretrained(exported)


@pytest.fixture(scope="module")
def translator(trained_run: Path) -> Translator:
    return Translator.from_checkpoint(trained_run)


def test_export_writes_a_standard_marian_folder(exported: Path) -> None:
    names = {p.name for p in exported.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "source.spm", "target.spm", "vocab.json",
            "tokenizer_config.json"} <= names
    assert not any(p.name.startswith(".") for p in exported.parent.iterdir())  # no staging folder left
    config = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == ["MarianMTModel"] and config["activation_function"] == "relu"
    assert (config["decoder_start_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 0)


@pytest.mark.parametrize("sentences", ["number_sentences", "german_sentences"])
def test_plain_generate_on_the_export_translates_raw_text_as_aiayn_greedy(
    hf_export, translator: Translator, sentences: str, request: pytest.FixtureRequest,
) -> None:
    """50 held-out numbers, and 50 Multi30k German sentences (mostly byte-fallback pieces for this
    English number vocabulary: <0xNN> pieces through MarianTokenizer both ways)."""
    hf, tokenizer = hf_export
    texts = request.getfixturevalue(sentences)
    assert [ids[:-1] for ids in tokenizer(texts)["input_ids"]] == translator.tokenizer.encode(texts)
    assert tokenizer.batch_decode(tokenizer(texts)["input_ids"], skip_special_tokens=True) == texts
    with torch.inference_mode():
        generated = hf.generate(**tokenizer(texts, return_tensors="pt", padding=True))  # the folder's defaults
    assert tokenizer.batch_decode(generated, skip_special_tokens=True) == translator.translate(texts, beam=1)


@pytest.mark.parametrize("sentences", ["number_sentences", "german_sentences"])
def test_export_logits_match_within_1e_4(hf_export, translator: Translator, sentences: str,
                                          request: pytest.FixtureRequest) -> None:
    hf, _ = hf_export
    sources = translator.tokenizer.encode(request.getfixturevalue(sentences))
    outputs = [h[0].tokens for h in translator.translate_ids(sources, beam=1)]
    assert max_logit_difference(translator, hf, sources, outputs) < TOLERANCE


def test_export_then_import_gives_back_the_same_weights(exported: Path, translator: Translator,
                                                         number_sentences: list[str], tmp_path: Path) -> None:
    back = Translator.from_checkpoint(import_marian(exported, tmp_path / "back"))
    assert isinstance(back.tokenizer, MarianVocabTokenizer)
    original = translator.model.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in back.model.state_dict().items())
    assert back.tokenizer.encode(number_sentences) == translator.tokenizer.encode(number_sentences)
    assert back.translate(number_sentences, beam=4) == translator.translate(number_sentences, beam=4)


def test_export_refuses_a_non_empty_out_and_leaves_it_alone(trained_run: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for to in ("huggingface", "ctranslate2"):
        assert main(["export", "--checkpoint", str(trained_run), "--to", to, str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{out}: folder exists, is not empty" in err
    assert [p.name for p in tmp_path.iterdir()] == ["taken"] and (out / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- import

@pytest.fixture(scope="module")
def marian(marian_dir: Path):
    from transformers import MarianMTModel, MarianTokenizer

    return MarianMTModel.from_pretrained(marian_dir).eval(), MarianTokenizer.from_pretrained(marian_dir)


def test_import_writes_a_checkpoint_with_marians_tokenizer_files(imported: Path, marian_dir: Path) -> None:
    assert {p.name for p in imported.iterdir()} == {"model.safetensors", "config.json", "source.spm",
                                                     "target.spm", "vocab.json"}
    config = json.loads((imported / "config.json").read_text())
    assert config["model"]["activation"] == "swish" and config["model"]["output_bias"] is True
    assert config["languages"] == {"source": "de", "target": "en"}  # from tokenizer_config.json
    assert config["imported_from"] == str(marian_dir.resolve())


def test_our_marian_tokenizer_agrees_with_marian_tokenizer(imported: Path, marian,
                                                           german_sentences: list[str]) -> None:
    _, hf_tokenizer = marian
    texts = german_sentences + [">>fra<< Ein Hund.", "Größe × 3 — ☃", ""]
    ours = Translator.from_checkpoint(imported).tokenizer
    assert [ids[:-1] for ids in hf_tokenizer(texts)["input_ids"]] == ours.encode(texts)
    ids = ours.encode(texts)
    assert ours.decode(ids) == hf_tokenizer.batch_decode(ids, skip_special_tokens=True)


def test_imported_greedy_outputs_and_logits_equal_marian_generate(imported: Path, marian,
                                                                   german_sentences: list[str]) -> None:
    hf, hf_tokenizer = marian
    translator = Translator.from_checkpoint(imported)
    pad_id = translator.model.config.pad_id
    assert translator.model.config.bos_id == pad_id  # Marian starts decoding from <pad>
    sources = translator.tokenizer.encode(german_sentences)
    ours = [h[0].tokens for h in translator.translate_ids(sources, beam=1)]
    # aiayn never outputs <pad> (nor <sos>, the same id here), and lets a capped output end as it stands.
    theirs = marian_greedy(hf, hf_tokenizer, german_sentences, suppress_tokens=[pad_id], forced_eos_token_id=None)
    assert ours == theirs
    assert 5 <= sum(len(o) < len(s) + 1 + EXTRA_OUTPUT_LENGTH for o, s in zip(ours, sources)) < 50  # some end early
    assert max_logit_difference(translator, hf, sources, ours) < TOLERANCE
    assert translator.translate(german_sentences, beam=1) == hf_tokenizer.batch_decode(theirs, skip_special_tokens=True)


def test_imported_checkpoint_serves_translations_and_attention(imported: Path, german_sentences: list[str],
                                                               tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from aiayn.serving.app import create_app

    translator = Translator.from_checkpoint(imported)
    result = translator.attention(german_sentences[0], beam=4)  # beam search with <sos> = <pad>
    assert result.source_tokens[-1] == "</s>" and result.target_tokens[-1] == "</s>"
    assert result.cross[-1].shape == (4, len(result.target_tokens), len(result.source_tokens))
    source = tmp_path / "in.de"
    source.write_text("".join(s + "\n" for s in german_sentences[:5]), encoding="utf-8")
    assert main(["translate", "--checkpoint", str(imported), "--input", str(source), "--output",
                 str(tmp_path / "out.en"), "--beam", "1"]) == 0
    assert (tmp_path / "out.en").read_text(encoding="utf-8").splitlines() == translator.translate(
        german_sentences[:5], beam=1)
    with TestClient(create_app(translator, "opus-mt-de-en")) as client:
        response = client.post("/v1/translate", json={"text": german_sentences[:2], "beam": 1})
        assert response.status_code == 200
        assert response.json()["translations"] == translator.translate(german_sentences[:2], beam=1)
        response = client.post("/v1/attention", json={"src": german_sentences[0]})
        assert response.status_code == 200 and response.json()["source_tokens"][-1] == "</s>"


def test_moses_text_is_refused_for_an_imported_marian_model(imported: Path) -> None:
    from aiayn.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="imported Marian model reads raw text"):
        Translator.from_checkpoint(imported, moses_text=True)


def test_an_imported_checkpoint_exports_back_to_the_same_marian_folder(imported: Path, marian_dir: Path,
                                                                      tmp_path: Path) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "again"
    assert main(["export", "--checkpoint", str(imported), "--to", "huggingface", str(out)]) == 0
    original, again = load_file(marian_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert original.keys() == again.keys() and all(torch.equal(original[k], again[k]) for k in original)
    for name in ("source.spm", "target.spm"):
        assert (out / name).read_bytes() == (marian_dir / name).read_bytes()
    assert json.loads((out / "vocab.json").read_text()) == json.loads((marian_dir / "vocab.json").read_text())
    config, marian = (json.loads((d / "config.json").read_text()) for d in (out, marian_dir))
    for field in ("activation_function", "decoder_start_token_id", "eos_token_id", "pad_token_id", "d_model"):
        assert config[field] == marian[field]


def _break(directory: Path, problem: str) -> str:
    """Spoil a copy of a Marian folder; returns what the error must say."""
    config = json.loads((directory / "config.json").read_text())
    if problem == "unsupported config":
        (directory / "config.json").write_text(json.dumps({**config, "normalize_before": True}))
        return "config.json: normalize_before=true is not supported"
    if problem == "separate decoder vocabulary":  # a field transformers' MarianConfig has
        (directory / "config.json").write_text(json.dumps({**config, "decoder_vocab_size": config["vocab_size"] + 1}))
        return "config.json: decoder_vocab_size"
    if problem == "end token is padding":
        (directory / "config.json").write_text(json.dumps({**config, "eos_token_id": config["pad_token_id"]}))
        return "config.json: eos_token_id"
    if problem == "truncated weights":
        weights = directory / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return "model.safetensors: truncated or corrupt"
    if problem == "pickled weights only":
        (directory / "model.safetensors").rename(directory / "pytorch_model.bin")
        return "pytorch_model.bin: aiayn reads only safetensors weights"
    if problem == "missing target.spm":
        (directory / "target.spm").unlink()
        return "target.spm: missing"
    if problem == "untied output":
        from safetensors.torch import load_file, save_file

        state = load_file(directory / "model.safetensors")
        state["lm_head.weight"] = state["model.shared.weight"] + 1
        save_file(state, directory / "model.safetensors")
        return "lm_head.weight differs from model.shared.weight"
    raise ValueError(problem)


@pytest.mark.parametrize("problem", ["unsupported config", "separate decoder vocabulary", "end token is padding",
                                     "truncated weights", "pickled weights only", "missing target.spm",
                                     "untied output"])
def test_import_refuses_a_bad_folder_in_one_line_naming_it(marian_dir: Path, tmp_path: Path, problem: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "folder"
    shutil.copytree(marian_dir, folder)
    expected = _break(folder, problem)
    out = tmp_path / "checkpoint"
    assert main(["import", "--from", "huggingface", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["folder"]


def test_import_refuses_a_non_empty_out(marian_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    assert main(["import", "--from", "huggingface", str(marian_dir), "--out", str(tmp_path / "taken")]) == 2
    assert "folder exists, is not empty" in capsys.readouterr().err
    assert (tmp_path / "taken" / "x").read_text() == "mine"
