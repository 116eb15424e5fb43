"""aiayn checkpoints <-> Hugging Face Marian model folders (transformers' MarianMTModel with
MarianTokenizer: config.json, model.safetensors, source.spm, target.spm, vocab.json), the format
the OPUS-MT translation models ship in. The weight and config mapping is `aiayn.interop.marian`.

Export needs `transformers` (the `interop` extra); import reads the folder's files directly and
needs nothing beyond aiayn.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from aiayn.checkpoint import load_checkpoint, save_checkpoint
from aiayn.data.marian_vocab import SOURCE_SPM, TARGET_SPM, VOCAB_JSON, AnyTokenizer, MarianVocabTokenizer
from aiayn.files import building, read_json_object
from aiayn.interop.common import InteropError, optional_module, refuse_moses_text, require_empty
from aiayn.interop.marian import (
    EMBEDDING_COPIES, POSITION_TABLES, SHARED_EMBEDDING, from_marian_config, from_marian_state, mapping_table,
    marian_order, to_marian_config, to_marian_state)
from aiayn.model import ModelConfig, Transformer
from aiayn.model.transformer import sinusoid_table

if TYPE_CHECKING:
    from transformers import MarianMTModel

WEIGHTS = "model.safetensors"
UNSAFE_WEIGHTS = ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")


# ----------------------------------------------------------------------------- export

def marian_model(model: Transformer) -> "MarianMTModel":
    """The same network as a transformers MarianMTModel (in eval mode), in memory."""
    transformers = optional_module("transformers")
    hf = transformers.MarianMTModel(transformers.MarianConfig(**to_marian_config(model.config))).eval()
    missing, unexpected = hf.load_state_dict(to_marian_state(model), strict=False)
    # Marian computes its position tables (now in the same layout as ours) and ties the embedding copies.
    expected_missing = {*POSITION_TABLES, *EMBEDDING_COPIES, *([] if model.config.output_bias else ["final_logits_bias"])}
    if unexpected or set(missing) - expected_missing:
        raise RuntimeError(f"Marian conversion left weights unset: missing {missing}, unexpected {unexpected}")
    return hf


def _marian_tokenizer_files(tokenizer: AnyTokenizer) -> tuple[bytes, bytes, dict[str, int]]:
    """source.spm, target.spm and vocab.json of a tokenizer: aiayn's one model serves both sides."""
    if isinstance(tokenizer, MarianVocabTokenizer):
        return tokenizer.source_proto, tokenizer.target_proto, tokenizer.vocab
    vocab = {piece: i for i, piece in enumerate(tokenizer.pieces(list(range(tokenizer.vocab_size))))}
    return tokenizer.model_proto, tokenizer.model_proto, vocab


def export_huggingface(checkpoint: str | Path, out: str | Path) -> Path:
    """Write `out`, a folder that `MarianMTModel.from_pretrained(out)` and
    `MarianTokenizer.from_pretrained(out)` load without aiayn and that translates raw text to raw
    text with `generate` (greedy by default, as aiayn's beam 1; <pad> and <sos> suppressed)."""
    transformers = optional_module("transformers")
    out = Path(out)
    require_empty(out)  # before the work, not only after it
    model, tokenizer, config = load_checkpoint(checkpoint)
    refuse_moses_text(config, checkpoint, "Hugging Face")
    c = model.config
    hf = marian_model(model)
    hf.generation_config = transformers.GenerationConfig(
        decoder_start_token_id=c.bos_id, bos_token_id=c.bos_id, eos_token_id=c.eos_id, pad_token_id=c.pad_id,
        num_beams=1, do_sample=False, max_length=c.max_positions, suppress_tokens=sorted({c.pad_id, c.bos_id}))
    languages = config.get("languages") or {}
    source_proto, target_proto, vocab = _marian_tokenizer_files(tokenizer)
    with building(out) as staging:
        hf.save_pretrained(staging)
        (staging / SOURCE_SPM).write_bytes(source_proto)
        (staging / TARGET_SPM).write_bytes(target_proto)
        (staging / VOCAB_JSON).write_text(json.dumps(vocab, ensure_ascii=False, indent=1), encoding="utf-8")
        # MarianTokenizer writes its own tokenizer_config.json (and re-writes the three files alike).
        transformers.MarianTokenizer(source_spm=str(staging / SOURCE_SPM), target_spm=str(staging / TARGET_SPM),
                        vocab=str(staging / VOCAB_JSON), source_lang=languages.get("source"),
                        target_lang=languages.get("target"), model_max_length=c.max_positions,
                        ).save_pretrained(staging)
    return out


# ----------------------------------------------------------------------------- import

def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    path = directory / WEIGHTS
    if not path.is_file():
        unsafe = [name for name in UNSAFE_WEIGHTS if (directory / name).is_file()]
        if unsafe:
            raise InteropError(
                f"{directory / unsafe[0]}: aiayn reads only safetensors weights ({WEIGHTS}), never pickled ones; "
                f"convert once with transformers: MarianMTModel.from_pretrained(DIR).save_pretrained(DIR)")
        raise InteropError(f"{path}: missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise InteropError(f"{path}: truncated or corrupt ({error})") from None


def _shared_embedding(state: dict[str, torch.Tensor], path: Path) -> torch.Tensor:
    """The one embedding matrix, wherever the file keeps it; its tied copies must all be equal to it."""
    present = [name for name in (SHARED_EMBEDDING, *EMBEDDING_COPIES) if name in state]
    if not present:
        raise InteropError(f"{path}: no embedding matrix ({SHARED_EMBEDDING})")
    for name in present[1:]:
        if not torch.equal(state[name], state[present[0]]):
            raise InteropError(f"{path}: {name} differs from {present[0]}: untied embeddings are not supported "
                               "(tie_word_embeddings, share_encoder_decoder_embeddings)")
    return state[present[0]]


def _check_position_tables(state: dict[str, torch.Tensor], config: ModelConfig, path: Path) -> None:
    """Older Marian files store the position tables; they must be the sinusoids (in Marian's layout)."""
    for name in POSITION_TABLES:
        if name in state:
            table = state[name].float()
            expected = sinusoid_table(table.size(0), config.d_model).index_select(1, marian_order(config.d_model))
            if table.shape != expected.shape or (table - expected).abs().max() > 1e-4:
                raise InteropError(f"{path}: {name} is not the sinusoidal table; learned positions are not "
                                   "supported (static_position_embeddings)")


def import_marian(directory: str | Path, out: str | Path) -> Path:
    """A local Marian model folder (config.json, model.safetensors, source.spm, target.spm,
    vocab.json, as OPUS-MT models ship) -> an aiayn checkpoint at `out`, written atomically,
    that `translate`, `evaluate`, `attention` and `serve` use as any other. Nothing is downloaded."""
    directory, out = Path(directory), Path(out)
    require_empty(out)
    if not directory.is_dir():
        raise InteropError(f"{directory}: no such folder")
    for name in ("config.json", SOURCE_SPM, TARGET_SPM, VOCAB_JSON):
        if not (directory / name).is_file():
            raise InteropError(f"{directory / name}: missing (a Marian model folder has config.json, {WEIGHTS}, "
                               f"{SOURCE_SPM}, {TARGET_SPM} and {VOCAB_JSON})")
    if (directory / "target_vocab.json").is_file():
        raise InteropError(f"{directory / 'target_vocab.json'}: separate source and target vocabularies are not "
                           "supported (separate_vocabs)")
    values = read_json_object(directory / "config.json", InteropError)
    state = _read_weights(directory)
    path = directory / WEIGHTS
    state[SHARED_EMBEDDING] = _shared_embedding(state, path)
    bias = state.get("final_logits_bias")
    config = from_marian_config(values, directory / "config.json", output_bias=bias is not None and bool(bias.any()))
    _check_position_tables(state, config, path)

    expected = {name for _, names, _ in mapping_table(config) for name in names}
    ignored = {*EMBEDDING_COPIES, *POSITION_TABLES, "final_logits_bias"}  # checked above, or all zero
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected - ignored)
    if missing:
        raise InteropError(f"{path}: has no {missing[0]} (for {config.n_encoder_layers}+{config.n_decoder_layers} "
                           f"layers as config.json says){f' and {len(missing) - 1} more' if len(missing) > 1 else ''}")
    if unexpected:
        raise InteropError(f"{path}: {unexpected[0]} belongs to a variant aiayn does not support "
                           f"(config.json does not say so){f'; {len(unexpected) - 1} more' if len(unexpected) > 1 else ''}")
    model = Transformer(config)
    try:
        model.load_state_dict({k: v.float() for k, v in from_marian_state(state, config).items()})
    except (RuntimeError, IndexError) as error:  # a shape that does not fit config.json
        raise InteropError(f"{path}: weights do not fit config.json ({str(error).splitlines()[-1].strip()})") from None

    try:
        tokenizer = MarianVocabTokenizer.load(directory)
    except (OSError, ValueError) as error:
        raise InteropError(str(error)) from None
    if tokenizer.vocab_size != config.vocab_size:
        raise InteropError(f"{directory / VOCAB_JSON}: {tokenizer.vocab_size} ids, but config.json says "
                           f"vocab_size={config.vocab_size}")
    tokenizer_config = directory / "tokenizer_config.json"
    languages = read_json_object(tokenizer_config, InteropError) if tokenizer_config.is_file() else {}
    extra = {"languages": ({"source": languages["source_lang"], "target": languages["target_lang"]}
                           if languages.get("source_lang") and languages.get("target_lang") else None),
             "imported_from": str(directory.resolve())}
    return save_checkpoint(out, model.eval(), tokenizer, extra)

