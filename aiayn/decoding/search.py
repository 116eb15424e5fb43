"""Decoding from <sos> until <eos> (§6.1): greedy, sampling and beam search, batched.

All three keep the decoder's keys/values in a `DecoderCache`, so each new token costs one decoder
step; `use_cache=False` re-runs the whole prefix instead (slow, for tests that the cache changes
nothing). A sentence's output never depends on the batch it is decoded in: its length cap is its
own (source length + 50), and finished sentences leave the batch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from aiayn.model import Transformer, padding_mask

# §6.1: "We set the maximum output length during inference to input length + 50".
EXTRA_OUTPUT_LENGTH = 50


class DecodingTimeout(RuntimeError):
    """Decoding went on past its deadline (a server's limit per request) and was abandoned."""


def check_deadline(deadline: float | None) -> None:
    """Raise DecodingTimeout once time.monotonic() has passed `deadline` (None: no limit)."""
    if deadline is not None and time.monotonic() > deadline:
        raise DecodingTimeout("decoding took longer than the time limit")


def max_output_lengths(src_mask: Tensor, extra: int = EXTRA_OUTPUT_LENGTH, limit: int | None = None) -> Tensor:
    """Per sentence: its source length in tokens (with <eos>) + 50, and at most `limit` (the
    positions a model with learned positions has)."""
    lengths = src_mask.sum(dim=1) + extra
    return lengths if limit is None else lengths.clamp(max=limit)


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's lp(Y) = ((5 + |Y|) / 6)^alpha (Wu et al. 2016, the paper's reference [38], which §6.1
    follows with alpha = 0.6). Not |Y|^alpha, which fairseq and Hugging Face use under this name.
    Hypotheses are compared by log P(Y|X) / lp(Y); |Y| counts the output tokens with <eos>."""
    return ((5.0 + length) / 6.0) ** alpha


class _Decoder:
    """The model's decoder for `beams` rows per sentence, one step at a time, with or without the cache."""

    def __init__(self, model: Transformer, src: Tensor, use_cache: bool, beams: int = 1):
        self.model = model
        self.src_mask = padding_mask(src, model.config.pad_id)  # per sentence
        memory = model.encode(src)
        self.cache = model.new_cache(memory, self.src_mask, beams) if use_cache else None
        # Without the cache (a check on it), every row carries its own copy of the source side.
        self.memory = None if use_cache else memory.repeat_interleave(beams, dim=0)
        self.row_mask = None if use_cache else self.src_mask.repeat_interleave(beams, dim=0)
        self.prefix: Tensor | None = None

    def step(self, new_tokens: Tensor) -> Tensor:
        """Log-probabilities [rows, vocab] of the next token after `new_tokens` [rows]."""
        if self.cache is not None:
            logits = self.model.decode(new_tokens[:, None], cache=self.cache)[:, -1]
        else:
            column = new_tokens[:, None]
            self.prefix = column if self.prefix is None else torch.cat([self.prefix, column], dim=1)
            logits = self.model.decode(self.prefix, self.memory, self.row_mask)[:, -1]
        log_probs = logits.float().log_softmax(dim=-1)
        log_probs[:, self.model.config.pad_id] = float("-inf")  # padding and <sos> are never outputs
        log_probs[:, self.model.config.bos_id] = float("-inf")
        return log_probs

    def select(self, rows: Tensor, sentences: Tensor | None = None) -> None:
        """Keep (reorder) rows; `sentences`, when some have finished, are the ones that stay."""
        if self.cache is not None:
            self.cache.select(rows, sentences)
        else:
            self.prefix = None if self.prefix is None else self.prefix.index_select(0, rows)
            self.memory, self.row_mask = self.memory.index_select(0, rows), self.row_mask.index_select(0, rows)


def ban_repeated_ngrams(log_probs: Tensor, history: list[list[int]], n: int) -> None:
    """Forbid any token that would repeat an n-gram already in that row's history (in place)."""
    for row, tokens in enumerate(history):
        if len(tokens) < n - 1:
            continue
        context = tuple(tokens[len(tokens) - n + 1:]) if n > 1 else ()
        banned = [tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i:i + n - 1]) == context]
        if banned:
            log_probs[row, banned] = float("-inf")


@dataclass
class Sampling:
    """Random sampling for the next token: temperature, then top-k and/or nucleus (top-p) filtering."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError("temperature must be positive")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        self.generator = torch.Generator()
        if self.seed is None:
            self.generator.seed()  # from the OS: a fresh torch.Generator always starts from the same seed
        else:
            self.generator.manual_seed(self.seed)

    def pick(self, log_probs: Tensor) -> Tensor:
        scores = log_probs / self.temperature
        if self.top_k > 0:
            kth = scores.topk(min(self.top_k, scores.size(-1)), dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.top_p < 1.0:
            sorted_scores, order = scores.sort(dim=-1, descending=True)
            cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
            outside = cumulative - sorted_scores.softmax(dim=-1) >= self.top_p  # keep the first token always
            scores = scores.scatter(-1, order, sorted_scores.masked_fill(outside, float("-inf")))
        probs = scores.softmax(dim=-1).cpu()
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(1).to(log_probs.device)


@torch.inference_mode()
def greedy_search(
    model: Transformer, src: Tensor, extra_length: int = EXTRA_OUTPUT_LENGTH, no_repeat_ngram_size: int = 0,
    sampling: Sampling | None = None, use_cache: bool = True, deadline: float | None = None,
) -> list[list[int]]:
    """The most probable next token at every step (or a sampled one, with `sampling`).

    Returns each sentence's output ids without <sos>/<eos>. Finished sentences leave the batch.
    Past `deadline` (time.monotonic()), DecodingTimeout is raised between two steps.
    """
    eos = model.config.eos_id
    decoder = _Decoder(model, src, use_cache)
    limits = max_output_lengths(decoder.src_mask, extra_length, model.position_limit)
    outputs: list[list[int]] = [[] for _ in range(src.size(0))]
    alive = list(range(src.size(0)))
    last = torch.full((src.size(0),), model.config.bos_id, dtype=torch.long, device=src.device)
    step = 0
    while alive:
        check_deadline(deadline)
        log_probs = decoder.step(last)
        if no_repeat_ngram_size:
            ban_repeated_ngrams(log_probs, [outputs[row] for row in alive], no_repeat_ngram_size)
        chosen = sampling.pick(log_probs) if sampling else log_probs.argmax(dim=-1)
        step += 1
        done = (chosen == eos) | (step >= limits)
        for row, token in zip(alive, chosen.tolist()):
            if token != eos:
                outputs[row].append(token)
        if done.any():
            keep = (~done).nonzero().squeeze(1)
            alive = [alive[i] for i in keep.tolist()]
            limits, chosen = limits[keep], chosen[keep]
            decoder.select(keep, keep)
        last = chosen
    return outputs


@dataclass
class Hypothesis:
    tokens: list[int]  # without <sos>/<eos>
    score: float  # log P(Y|X) / lp(Y)
    log_prob: float
    finished: bool  # ended with <eos> (False: cut at the length cap)


@torch.inference_mode()
def beam_search(
    model: Transformer, src: Tensor, beam_size: int = 4, alpha: float = 0.6, n_best: int = 1,
    extra_length: int = EXTRA_OUTPUT_LENGTH, no_repeat_ngram_size: int = 0, use_cache: bool = True,
    deadline: float | None = None,
) -> list[list[Hypothesis]]:
    """§6.1: beam search with beam size 4 and length penalty alpha = 0.6, batched as one tensor of
    sentences x beams. Returns, per sentence, its `n_best` hypotheses, best first.

    A sentence stops when `beam_size` hypotheses have ended (as in GNMT and fairseq), or earlier,
    as soon as no live hypothesis can beat its n-best finished ones: log-probabilities only fall
    as tokens are added, so a live score s can at best become s / lp(length cap). At its length
    cap, its live hypotheses are kept as they stand. Past `deadline` (time.monotonic()),
    DecodingTimeout is raised between two steps.
    """
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be between 1 and the beam size ({beam_size}), got {n_best}")
    config = model.config
    n_sentences, k = src.size(0), beam_size
    decoder = _Decoder(model, src, use_cache, beams=k)
    limits = max_output_lengths(decoder.src_mask, extra_length, model.position_limit).tolist()
    finished: list[list[Hypothesis]] = [[] for _ in range(n_sentences)]
    alive = list(range(n_sentences))  # original index of each sentence still decoding
    # Only beam 0 is live at the start, so the first step's candidates are all distinct.
    scores = torch.full((n_sentences, k), float("-inf"), device=src.device)
    scores[:, 0] = 0.0
    histories: list[list[int]] = [[] for _ in range(n_sentences * k)]
    last = torch.full((n_sentences * k,), config.bos_id, dtype=torch.long, device=src.device)
    length = 0
    while alive:
        check_deadline(deadline)
        length += 1
        log_probs = decoder.step(last)
        if no_repeat_ngram_size:
            ban_repeated_ngrams(log_probs, histories, no_repeat_ngram_size)
        vocab = log_probs.size(-1)
        candidates = (scores[:, :, None] + log_probs.view(len(alive), k, vocab)).view(len(alive), -1)
        top_scores, top_index = candidates.topk(2 * k, dim=-1)  # k of them are sure not to be <eos>
        top_beam, top_token = top_index // vocab, top_index % vocab
        is_eos = top_token == config.eos_id
        penalty = length_penalty(length, alpha)

        # Hypotheses ending here: <eos> among a sentence's k best candidates.
        for i, j in (is_eos[:, :k] & (top_scores[:, :k] > float("-inf"))).nonzero().tolist():
            raw = top_scores[i, j].item()
            beam_row = i * k + top_beam[i, j].item()
            finished[alive[i]].append(Hypothesis(histories[beam_row], raw / penalty, raw, True))

        # The k best candidates that go on.
        live_scores, live_pos = top_scores.masked_fill(is_eos, float("-inf")).topk(k, dim=-1)
        live_beam, live_token = top_beam.gather(1, live_pos), top_token.gather(1, live_pos)
        rows = (torch.arange(len(alive), device=src.device)[:, None] * k + live_beam).view(-1)
        row_list, token_list = rows.tolist(), live_token.view(-1).tolist()
        histories = [histories[r] + [t] for r, t in zip(row_list, token_list)]
        scores, last = live_scores, live_token.view(-1)

        keep_sentences = []
        live = scores.tolist()
        for i, sentence in enumerate(alive):
            done = finished[sentence]
            if length >= limits[i]:  # the cap: live hypotheses end as they are
                done.extend(Hypothesis(histories[i * k + j], raw / penalty, raw, False)
                            for j, raw in enumerate(live[i]) if raw > float("-inf"))
                continue
            if len(done) >= k:
                continue
            if len(done) >= n_best:
                threshold = sorted((h.score for h in done), reverse=True)[n_best - 1]
                if live[i][0] / length_penalty(limits[i], alpha) <= threshold:
                    continue
            keep_sentences.append(i)
        if len(keep_sentences) < len(alive):
            index = torch.tensor(keep_sentences, dtype=torch.long, device=src.device)
            beam_rows = (index[:, None] * k + torch.arange(k, device=src.device)).view(-1)
            decoder.select(rows[beam_rows], index)
            histories = [histories[r] for r in beam_rows.tolist()]
            scores, last = scores[index], last[beam_rows]
            limits = [limits[i] for i in keep_sentences]
            alive = [alive[i] for i in keep_sentences]
        else:
            decoder.select(rows)
    return [sorted(h, key=lambda h: h.score, reverse=True)[:n_best] for h in finished]
