"""Raw text in, raw text out: tokenise, batch by length, decode, detokenise, restore the order.

    from aiayn.decoding import Translator
    translator = Translator.from_checkpoint("runs/demo")
    translator.translate(["twenty-one"], beam=4)          # ['einundzwanzig']
    translator.attention("twenty-one")                    # tokens and attention weights
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from aiayn.data.batching import pad
from aiayn.data.marian_vocab import AnyTokenizer, MarianVocabTokenizer
from aiayn.data.moses import MosesTextTokenizer, trained_on_moses_text
from aiayn.decoding.ensemble import Ensemble
from aiayn.decoding.int8 import quantize_int8
from aiayn.decoding.search import EXTRA_OUTPUT_LENGTH, Hypothesis, Sampling, beam_search, check_deadline, greedy_search
from aiayn.model import AttentionMaps, Transformer
from aiayn.runtime import use_cuda_kernels


def length_sorted_batches(lengths: list[int], max_tokens: int, beam: int = 1) -> list[list[int]]:
    """Indices grouped into batches of similar length whose decoding size (rows x beams x (longest
    source + the output allowance of §6.1)) stays within max_tokens; every sentence gets a batch."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        grown = max(longest, lengths[index] + EXTRA_OUTPUT_LENGTH)
        if current and (len(current) + 1) * beam * grown > max_tokens:
            batches.append(current)
            current, grown = [], lengths[index] + EXTRA_OUTPUT_LENGTH
        current.append(index)
        longest = grown
    if current:
        batches.append(current)
    return batches


def _text_processing(tokenizer: AnyTokenizer | MosesTextTokenizer) -> tuple:
    """What decides how a tokenizer turns text into ids and back: its model files' bytes, and the
    languages of a Moses wrapper; two tokenizers with equal values are the same."""
    if isinstance(tokenizer, MosesTextTokenizer):
        return ("moses", tokenizer.source_lang, tokenizer.target_lang, *_text_processing(tokenizer.tokenizer))
    if isinstance(tokenizer, MarianVocabTokenizer):
        return ("marian", tokenizer.source_proto, tokenizer.target_proto, sorted(tokenizer.vocab.items()))
    return ("sentencepiece", tokenizer.model_proto)


ATTENTION_KINDS = ("encoder", "decoder_self", "cross")
DEFAULT_BATCH_TOKENS = {"cpu": 8000, "cuda": 1 << 18}


@dataclass
class AttentionResult:
    """Attention of one sentence pair, each map [heads, queries, keys] per layer (None: a kind
    that was not asked for).

    Source tokens are the encoder's inputs (subwords + </s>); target tokens label the decoder's
    positions by the token each one predicts (subwords + </s>), so a row of `cross` shows where
    the model looked when it produced that token.
    """

    source_tokens: list[str]
    target_tokens: list[str]
    translation: str
    encoder: list[Tensor] | None
    decoder_self: list[Tensor] | None
    cross: list[Tensor] | None


class Translator:
    """A model with its tokenizer, translating lists of raw sentences."""

    def __init__(self, model: Transformer | Ensemble, tokenizer: AnyTokenizer | MosesTextTokenizer,
                 config: dict | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config or {"model": model.config.to_dict()}
        use_cuda_kernels(self.device)

    @property
    def batch_tokens(self) -> int:
        """Decoding batch size by default, in rows x beams x (longest source + 50) tokens: 8,000 on
        a CPU, 262,144 on a GPU, which needs many rows at each step to be kept busy."""
        return DEFAULT_BATCH_TOKENS.get(self.device.type, DEFAULT_BATCH_TOKENS["cpu"])

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", announce: bool = False,
                        bf16: bool = False, int8: bool = False, moses_text: bool = False) -> "Translator":
        """Load a checkpoint directory, or a run directory's averaged, best or last checkpoint.

        bf16=True keeps the weights in bfloat16 (faster on CPUs with native bf16 and on GPUs);
        int8=True runs the linear layers in int8 (aiayn.decoding.int8: weights per channel, inputs
        per row, CPU only). Log-probabilities, softmax and the search's scores stay
        float32 either way. moses_text=True is for a model trained on Moses-tokenised lowercased
        text (aiayn.data.moses): raw input is made into that text, and the output detokenised, in
        the languages the checkpoint names. A model trained with `aiayn train --moses-text` says
        so in its config, and is used so without it."""
        from aiayn.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint

        if bf16 and int8:
            raise ValueError("choose bf16 or int8 weights, not both")
        directory = resolve_checkpoint(path, announce=announce)
        model, tokenizer, config = load_checkpoint(directory, device)
        if moses_text or trained_on_moses_text(config):
            if isinstance(tokenizer, MarianVocabTokenizer):  # cased SentencePiece text, with >>xx<< tags
                raise CheckpointError(f"{directory}: an imported Marian model reads raw text; --moses-text is "
                                      "for models trained on Moses-tokenised lowercased text")
            languages = config.get("languages")
            if not (isinstance(languages, dict) and isinstance(languages.get("source"), str)
                    and isinstance(languages.get("target"), str)):
                raise CheckpointError(f"{directory / 'config.json'}: names no source and target language, "
                                      "which --moses-text tokenises and detokenises in")
            tokenizer = MosesTextTokenizer(tokenizer, languages["source"], languages["target"])
        if int8:
            model = quantize_int8(model)
        return cls(model.to(torch.bfloat16) if bf16 else model, tokenizer, config)

    @classmethod
    def ensemble(cls, paths: list[str | Path], device: str = "cpu", announce: bool = False,
                 bf16: bool = False, int8: bool = False, moses_text: bool = False) -> "Translator":
        """One translator over several checkpoints (each as `from_checkpoint` loads it) that read
        and write text alike: the same tokenizer files and the same Moses languages. Their
        next-token probabilities are averaged at every step (aiayn.decoding.ensemble)."""
        from aiayn.checkpoint import CheckpointError, resolve_checkpoint

        translators = [cls.from_checkpoint(path, device, False, bf16, int8, moses_text) for path in paths]
        first = translators[0]
        for path, other in zip(paths[1:], translators[1:]):
            if _text_processing(other.tokenizer) != _text_processing(first.tokenizer):
                raise CheckpointError(f"{path}: its tokenizer differs from {paths[0]}'s; an ensemble's models "
                                      "share one vocabulary")
        try:
            ensemble = Ensemble([t.model for t in translators])
        except ValueError as error:
            raise CheckpointError(f"{paths[0]} and the rest: {error}") from None
        if announce:  # only once all are loaded: a refusal stays one line
            for path in paths:
                resolve_checkpoint(path, announce=True)
        return cls(ensemble, first.tokenizer, first.config)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_source_tokens(self) -> int:
        """Longest source (subwords) translated in one piece: what the model was trained on, and
        never more positions than it has."""
        trained = (self.config.get("training") or {}).get("max_length") or self.model.config.max_positions
        return min(trained, self.model.config.max_positions - 1)

    @property
    def max_target_tokens(self) -> int:
        """Longest target (subwords) that attention() takes: the most a translation of the longest
        source can have (§6.1: input length + 50), within the model's positions."""
        limit = self.model.position_limit
        cap = self.max_source_tokens + EXTRA_OUTPUT_LENGTH
        return cap if limit is None else min(cap, limit - 1)

    def _pieces(self, sources: list[list[int]]) -> tuple[list[list[int]], list[int]]:
        """Split over-long sources into pieces the model can take; returns pieces and their owners."""
        limit = self.max_source_tokens
        pieces, owners = [], []
        for index, ids in enumerate(sources):
            if len(ids) > limit:
                n = -(-len(ids) // limit)
                print(f"warning: line {index + 1} has {len(ids)} subwords, more than the model's {limit}: "
                      f"translated in {n} pieces", file=sys.stderr)
            for start in range(0, max(len(ids), 1), limit):
                pieces.append(ids[start:start + limit])
                owners.append(index)
        return pieces, owners

    def translate_ids(
        self, sources: list[list[int]], beam: int = 4, alpha: float = 0.6, n_best: int = 1,
        batch_tokens: int | None = None, no_repeat_ngram_size: int = 0, sampling: Sampling | None = None,
        progress: bool = False, deadline: float | None = None,
    ) -> list[list[Hypothesis]]:
        """Subword ids (without <eos>) to n-best hypotheses, in input order. Empty input gives one
        empty hypothesis; an over-long input is split into pieces whose outputs are concatenated.
        Past `deadline` (time.monotonic()) the work stops with DecodingTimeout."""
        pieces, owners = self._pieces(sources)
        results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, 0.0, True)] for _ in pieces]
        todo = [i for i, p in enumerate(pieces) if p]
        batches = length_sorted_batches([len(pieces[i]) + 1 for i in todo], batch_tokens or self.batch_tokens, beam)
        eos, pad_id = self.model.config.eos_id, self.model.config.pad_id  # an imported model's ids may differ from 2, 0
        for batch in tqdm(batches, desc="translating", unit="batch", file=sys.stderr, disable=not progress):
            rows = [todo[k] for k in batch]
            src = pad([pieces[i] + [eos] for i in rows], pad_id=pad_id).to(self.device)
            if beam > 1 or n_best > 1:
                found = beam_search(self.model, src, beam, alpha, n_best, no_repeat_ngram_size=no_repeat_ngram_size,
                                    deadline=deadline)
            else:
                found = [[Hypothesis(ids, 0.0, 0.0, True)] for ids in
                         greedy_search(self.model, src, no_repeat_ngram_size=no_repeat_ngram_size, sampling=sampling,
                                       deadline=deadline)]
            for row, hypotheses in zip(rows, found):
                results[row] = hypotheses
        merged: list[list[Hypothesis]] = [[] for _ in sources]
        for owner, hypotheses in zip(owners, results):
            if not merged[owner]:
                merged[owner] = hypotheses
            else:  # a later piece of a split line: append its best to each
                merged[owner] = [Hypothesis(h.tokens + hypotheses[0].tokens, h.score + hypotheses[0].score,
                                            h.log_prob + hypotheses[0].log_prob, h.finished) for h in merged[owner]]
        return merged

    def translate(self, texts: list[str], beam: int = 4, alpha: float = 0.6, batch_tokens: int | None = None,
                  no_repeat_ngram_size: int = 0, sampling: Sampling | None = None, progress: bool = False) -> list[str]:
        """Raw sentences to raw translations, line for line (beam 1 is greedy decoding)."""
        found = self.translate_ids(self.tokenizer.encode(texts), beam, alpha, 1, batch_tokens, no_repeat_ngram_size,
                                   sampling, progress)
        return self.tokenizer.decode([h[0].tokens for h in found])

    def translate_n_best(self, texts: list[str], n_best: int, beam: int = 4, alpha: float = 0.6,
                         batch_tokens: int | None = None) -> list[list[tuple[str, float]]]:
        """The n best translations of each sentence with their scores log P / lp, best first."""
        found = self.translate_ids(self.tokenizer.encode(texts), beam, alpha, n_best, batch_tokens)
        return [list(zip(self.tokenizer.decode([h.tokens for h in hyps]), (h.score for h in hyps))) for hyps in found]

    @torch.inference_mode()
    def attention(self, src: str, tgt: str | None = None, beam: int = 4,
                  kinds: tuple[str, ...] = ATTENTION_KINDS, deadline: float | None = None) -> AttentionResult:
        """The attention maps of `kinds` for src and its translation (`tgt`, or the model's own,
        decoded with `beam`). Both sides are cut to what the model takes (max_source_tokens,
        max_target_tokens), so the work and the maps stay bounded whatever the input."""
        if isinstance(self.model, Ensemble):
            raise ValueError("attention maps are one model's; this translator is an ensemble")
        unknown = set(kinds) - set(ATTENTION_KINDS)
        if unknown:
            raise ValueError(f"unknown attention kinds {sorted(unknown)}; choose from {ATTENTION_KINDS}")
        src_ids = self.tokenizer.encode([src])[0][: self.max_source_tokens]
        tgt_ids = (self.tokenizer.encode_target([tgt])[0][: self.max_target_tokens] if tgt is not None
                   else self.translate_ids([src_ids], beam=beam, deadline=deadline)[0][0].tokens)
        check_deadline(deadline)
        maps = AttentionMaps(**{kind: [] if kind in kinds else None for kind in ATTENTION_KINDS})
        eos, bos = self.model.config.eos_id, self.model.config.bos_id
        source = torch.tensor([src_ids + [eos]], device=self.device)
        target_in = torch.tensor([[bos] + tgt_ids], device=self.device)
        self.model(source, target_in, record=maps)

        def first_row(layers: list[Tensor] | None) -> list[Tensor] | None:
            return None if layers is None else [m[0].float().cpu() for m in layers]

        return AttentionResult(
            source_tokens=self.tokenizer.pieces(src_ids + [eos]),
            target_tokens=self.tokenizer.pieces(tgt_ids + [eos]),
            translation=self.tokenizer.decode([tgt_ids])[0],
            encoder=first_row(maps.encoder), decoder_self=first_row(maps.decoder_self), cross=first_row(maps.cross),
        )
