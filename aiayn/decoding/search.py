"""Decoding from <sos> until <eos> (§6.1): greedy, sampling and beam search, batched.

All three keep the decoder's keys/values in a `DecoderCache`, so each new token costs one decoder
step; `use_cache=False` re-runs the whole prefix instead (slow, for tests that the cache changes
nothing). A sentence's output never depends on the batch it is decoded in: its length cap is its
own (source length + 50), and finished sentences leave the batch.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from aiayn.decoding.ensemble import Ensemble
from aiayn.model import Transformer, padding_mask

# §6.1: "We set the maximum output length during inference to input length + 50".
EXTRA_OUTPUT_LENGTH = 50


class DecodingTimeout(RuntimeError):
    """Decoding went on past its deadline (a server's limit per request) and was abandoned."""


# A sentence stops once beam-size hypotheses have ended (GNMT, fairseq). Searching on until no live
# hypothesis can win is exact, but with alpha above 1 it lets long, repetitive hypotheses win
# (docs/results/beam_length.md: BLEU 34.6 against 39.3 at alpha 1.8); bench/beam_length.py turns it off.
STOP_WHEN_BEAM_SIZE_ENDED = True


def next_token_log_probs(logits: Tensor, config: Any) -> Tensor:
    """Log-probabilities [rows, vocab] of the next token from a decoder's last logits, in float32;
    padding and <sos> are never outputs."""
    log_probs = logits.float().log_softmax(dim=-1)
    log_probs[:, [config.pad_id, config.bos_id]] = float("-inf")
    return log_probs


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
    """The model's decoder for `beams` rows per sentence, one step at a time, with or without the
    cache; for an Ensemble, each member's, their next-token probabilities averaged."""

    def __init__(self, model: Transformer | Ensemble, src: Tensor, use_cache: bool, beams: int = 1):
        self.models = list(model.members) if isinstance(model, Ensemble) else [model]
        self.config = model.config
        self.src_mask = padding_mask(src, model.config.pad_id)  # per sentence
        memories = [m.encode(src) for m in self.models]
        self.caches = ([m.new_cache(memory, self.src_mask, beams) for m, memory in zip(self.models, memories)]
                       if use_cache else None)
        # Without the cache (a check on it), every row carries its own copy of the source side.
        self.memories = None if use_cache else [memory.repeat_interleave(beams, dim=0) for memory in memories]
        self.row_mask = None if use_cache else self.src_mask.repeat_interleave(beams, dim=0)
        self.prefix: Tensor | None = None

    def step(self, new_tokens: Tensor) -> Tensor:
        """Log-probabilities [rows, vocab] of the next token after `new_tokens` [rows]."""
        if self.caches is not None:
            logits = [m.decode(new_tokens[:, None], cache=cache)[:, -1] for m, cache in zip(self.models, self.caches)]
        else:
            column = new_tokens[:, None]
            self.prefix = column if self.prefix is None else torch.cat([self.prefix, column], dim=1)
            logits = [m.decode(self.prefix, memory, self.row_mask)[:, -1]
                      for m, memory in zip(self.models, self.memories)]
        if len(logits) == 1:
            return next_token_log_probs(logits[0], self.config)
        members = torch.stack([next_token_log_probs(member, self.config) for member in logits])
        return members.logsumexp(dim=0) - math.log(len(logits))  # log of the mean probability

    def select(self, rows: Tensor, sentences: Tensor | None = None) -> None:
        """Keep (reorder) rows; `sentences`, when some have finished, are the ones that stay."""
        if self.caches is not None:
            for cache in self.caches:
                cache.select(rows, sentences)
        else:
            self.prefix = None if self.prefix is None else self.prefix.index_select(0, rows)
            self.memories = [memory.index_select(0, rows) for memory in self.memories]
            self.row_mask = self.row_mask.index_select(0, rows)


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


def host_check_interval(device: torch.device, sync_every: int | None) -> int:
    """Steps between two looks at which sentences have finished. Each look reads the device back
    (the host waits for it to catch up): every step on the CPU, where that costs nothing and a
    finished sentence leaves the batch at once; every 8 steps on a GPU, which meanwhile keeps
    decoding, the finished sentences along (their output frozen) until they leave."""
    if sync_every is not None:
        return max(1, sync_every)
    return 1 if device.type == "cpu" else 8


def read_back(tensor: Tensor) -> Any:
    """`tensor`'s values on the host, as Python numbers or lists: the decoding loops read the device
    here alone (each call waits for the device to finish what it was given)."""
    return tensor.tolist()


def split_rows(going: list[bool], device: torch.device) -> tuple[Tensor, Tensor]:
    """The indices of the rows that go on and of those that are done, as tensors on `device`."""
    keep = torch.tensor([i for i, flag in enumerate(going) if flag], dtype=torch.long)
    gone = torch.tensor([i for i, flag in enumerate(going) if not flag], dtype=torch.long)
    if device.type == "cuda":  # from pinned memory, the copies need not wait for the device
        keep, gone = keep.pin_memory(), gone.pin_memory()
    return keep.to(device, non_blocking=True), gone.to(device, non_blocking=True)


def first_stop(rows: list[list[int]], stops: set[int]) -> list[list[int]]:
    """Each row cut before its first token in `stops`."""
    cut = []
    for row in rows:
        end = next((i for i, token in enumerate(row) if token in stops), len(row))
        cut.append(row[:end])
    return cut


@torch.inference_mode()
def greedy_search(
    model: Transformer | Ensemble, src: Tensor, extra_length: int = EXTRA_OUTPUT_LENGTH, no_repeat_ngram_size: int = 0,
    sampling: Sampling | None = None, use_cache: bool = True, deadline: float | None = None,
    sync_every: int | None = None,
) -> list[list[int]]:
    """The most probable next token at every step (or a sampled one, with `sampling`).

    Returns each sentence's output ids without <sos>/<eos>. The tokens stay on the device until
    the end; finished sentences leave the batch at the next look (`host_check_interval`; every
    step with sampling or n-gram bans, which read each step's tokens anyway). Past `deadline`
    (time.monotonic()), DecodingTimeout is raised between two steps.
    """
    decoder = _Decoder(model, src, use_cache)
    limits = max_output_lengths(decoder.src_mask, extra_length, model.position_limit)
    return greedy_steps(decoder, model.config, limits, no_repeat_ngram_size, sampling, deadline, sync_every)


def greedy_steps(decoder: Any, config: Any, limits: Tensor, no_repeat_ngram_size: int = 0,
                 sampling: Sampling | None = None, deadline: float | None = None,
                 sync_every: int | None = None) -> list[list[int]]:
    """greedy_search's loop over any decoder (`step(last tokens)` -> log-probabilities [rows, vocab],
    `select(rows, sentences)`): a translator's, or a language model's (aiayn.family.lm); `limits`:
    the most tokens of each row."""
    device, n = limits.device, limits.size(0)
    every = 1 if sampling or no_repeat_ngram_size else host_check_interval(device, sync_every)
    tokens = torch.full((n, read_back(limits.max())), config.pad_id, dtype=torch.long, device=device)
    rows = torch.arange(n, device=device)  # the sentence of each row still in the batch
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    last = torch.full((n,), config.bos_id, dtype=torch.long, device=device)
    for step in range(1, tokens.size(1) + 1):
        check_deadline(deadline)
        log_probs = decoder.step(last)
        if no_repeat_ngram_size:
            ban_repeated_ngrams(log_probs, first_stop(read_back(tokens[rows, :step - 1]), {config.eos_id}),
                                no_repeat_ngram_size)
        chosen = sampling.pick(log_probs) if sampling else log_probs.argmax(dim=-1)
        chosen = chosen.masked_fill(finished, config.pad_id)  # nothing more for a finished sentence
        tokens[rows, step - 1] = chosen
        finished |= (chosen == config.eos_id) | (step >= limits)
        last = chosen
        if step % every == 0:
            going = read_back(~finished)  # the one read-back of these steps
            if not any(going):
                break
            if not all(going):
                keep, _ = split_rows(going, device)
                rows, limits, finished, last = rows[keep], limits[keep], finished[keep], last[keep]
                decoder.select(keep, keep)
    return first_stop(read_back(tokens), {config.eos_id, config.pad_id})


@dataclass
class Hypothesis:
    tokens: list[int]  # without <sos>/<eos>
    score: float  # log P(Y|X) / lp(Y)
    log_prob: float
    finished: bool  # ended with <eos> (False: cut at the length cap)


@dataclass
class _EndedHypotheses:
    """Per sentence, the best k hypotheses that have ended so far, best first, kept on the device:
    score (log P / lp; -inf: an empty place), log P, tokens [n, k, L], length, whether it ended
    with <eos>, and how many have ended in all."""

    score: Tensor  # [n, k]
    log_prob: Tensor  # [n, k]
    tokens: Tensor  # [n, k, L]
    length: Tensor  # [n, k]
    complete: Tensor  # [n, k] bool
    count: Tensor  # [n]

    @classmethod
    def empty(cls, n: int, k: int, longest: int, device: torch.device) -> "_EndedHypotheses":
        return cls(torch.full((n, k), float("-inf"), device=device), torch.zeros(n, k, device=device),
                   torch.zeros(n, k, longest, dtype=torch.long, device=device),
                   torch.zeros(n, k, dtype=torch.long, device=device), torch.zeros(n, k, dtype=torch.bool, device=device),
                   torch.zeros(n, dtype=torch.long, device=device))

    def _tensors(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def add(self, score: Tensor, log_prob: Tensor, tokens: Tensor, length: int, complete: bool) -> None:
        """Candidates [n, c] (score -inf: none; tokens [n, c, L], `length` of them) join each
        sentence's best k."""
        k = self.score.size(1)
        self.count = self.count + (score > float("-inf")).sum(dim=1)
        self.score, best = torch.cat([self.score, score], dim=1).topk(k, dim=1)
        self.log_prob = torch.cat([self.log_prob, log_prob], dim=1).gather(1, best)
        self.length = torch.cat([self.length, torch.full_like(best, length)], dim=1).gather(1, best)
        self.complete = torch.cat([self.complete, torch.full_like(score, complete, dtype=torch.bool)], 1).gather(1, best)
        every = torch.cat([self.tokens, tokens], dim=1)
        self.tokens = every.gather(1, best[:, :, None].expand(-1, -1, every.size(2)))

    def rows(self, index: Tensor) -> "_EndedHypotheses":
        return _EndedHypotheses(**{name: t[index] for name, t in self._tensors().items()})

    def put(self, sentences: Tensor, other: "_EndedHypotheses") -> None:
        """Write `other`'s rows in place of rows `sentences`."""
        for name, t in self._tensors().items():
            t[sentences] = getattr(other, name)

    def best(self, n_best: int) -> list[list[Hypothesis]]:
        """Every sentence's n best, read back from the device at once."""
        score, log_prob, tokens, length, complete = (read_back(getattr(self, name)) for name in
                                                     ("score", "log_prob", "tokens", "length", "complete"))
        return [[Hypothesis(tokens[i][j][:length[i][j]], score[i][j], log_prob[i][j], complete[i][j])
                 for j in range(len(score[i])) if score[i][j] > float("-inf")][:n_best] for i in range(len(score))]


@dataclass
class _Beams:
    """A beam search's state, on the device: per sentence still in the batch, its k live
    hypotheses (tokens so far, last token, score), whether it is still searching, its length cap
    and the most a live score can gain by it (lp of the cap), and its ended hypotheses."""

    history: Tensor  # [rows * k, longest]
    last: Tensor  # [rows * k]
    scores: Tensor  # [rows, k]
    sentences: Tensor  # [rows]: the sentence of each row
    active: Tensor  # [rows]: not yet done (done ones wait for the host's look to leave)
    limits: Tensor  # [rows]
    cap_penalty: Tensor  # [rows]
    finished: _EndedHypotheses

    def advance(self, log_probs: Tensor, length: int, alpha: float, eos_id: int, look: bool) -> Tensor:
        """One step: hypotheses ending in <eos> among a sentence's k best candidates join the
        ended ones (looked for only when `look`: the test reads the device), the k best others go
        on, and at its length cap a sentence's live ones end as they stand. Returns the rows of
        the previous step each live hypothesis continues (for the decoder's cache)."""
        rows_now, k = self.scores.shape
        vocab = log_probs.size(-1)
        candidates = (self.scores[:, :, None] + log_probs.view(rows_now, k, vocab)).view(rows_now, -1)
        top_scores, top_index = candidates.topk(2 * k, dim=-1)  # k of them are sure not to be <eos>
        top_beam, top_token = top_index // vocab, top_index % vocab
        is_eos = top_token == eos_id
        penalty = length_penalty(length, alpha)
        ends = is_eos[:, :k] & (top_scores[:, :k] > float("-inf")) & self.active[:, None]
        if look or ends.any():
            ended = torch.where(ends, top_scores[:, :k], float("-inf"))
            beam_tokens = self.history.view(rows_now, k, -1)
            self.finished.add(ended / penalty, ended,
                              beam_tokens.gather(1, top_beam[:, :k, None].expand_as(beam_tokens)), length - 1,
                              complete=True)
        self.scores, live = top_scores.masked_fill(is_eos, float("-inf")).topk(k, dim=-1)
        live_beam, live_token = top_beam.gather(1, live), top_token.gather(1, live)
        rows = (torch.arange(rows_now, device=self.scores.device)[:, None] * k + live_beam).view(-1)
        self.history = self.history.index_select(0, rows)
        self.history[:, length - 1] = live_token.view(-1)
        self.last = live_token.view(-1)
        return rows

    def end_capped(self, length: int, alpha: float) -> Tensor:
        """At its length cap, a sentence's live hypotheses end as they stand; which sentences are there."""
        rows_now, k = self.scores.shape
        at_cap = self.active & (length >= self.limits)
        capped = torch.where(at_cap[:, None] & (self.scores > float("-inf")), self.scores, float("-inf"))
        self.finished.add(capped / length_penalty(length, alpha), capped, self.history.view(rows_now, k, -1), length,
                          complete=False)
        return at_cap

    def keep(self, keep: Tensor) -> Tensor:
        """Only the sentences `keep` stay in the batch; returns their beams' rows."""
        k = self.scores.size(1)
        beam_rows = (keep[:, None] * k + torch.arange(k, device=keep.device)).view(-1)
        self.finished = self.finished.rows(keep)
        self.history, self.last = self.history[beam_rows], self.last[beam_rows]
        self.scores, self.sentences, self.active = self.scores[keep], self.sentences[keep], self.active[keep]
        self.limits, self.cap_penalty = self.limits[keep], self.cap_penalty[keep]
        return beam_rows


@torch.inference_mode()
def beam_search(
    model: Transformer | Ensemble, src: Tensor, beam_size: int = 4, alpha: float = 0.6, n_best: int = 1,
    extra_length: int = EXTRA_OUTPUT_LENGTH, no_repeat_ngram_size: int = 0, use_cache: bool = True,
    deadline: float | None = None, sync_every: int | None = None,
) -> list[list[Hypothesis]]:
    """§6.1: beam search with beam size 4 and length penalty alpha = 0.6, batched as one tensor of
    sentences x beams. Returns, per sentence, its `n_best` hypotheses, best first.

    A sentence stops when `beam_size` hypotheses have ended (as in GNMT and fairseq), or earlier,
    as soon as no live hypothesis can beat its n-best finished ones: log-probabilities only fall
    as tokens are added, so a live score s can at best become s / lp(length cap). At its length
    cap, its live hypotheses are kept as they stand. The whole state stays on the device; the
    host looks at which sentences are done every `host_check_interval` steps (every step with
    n-gram bans), and those leave the batch then. Past `deadline` (time.monotonic()),
    DecodingTimeout is raised between two steps.
    """
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be between 1 and the beam size ({beam_size}), got {n_best}")
    decoder = _Decoder(model, src, use_cache, beams=beam_size)
    beams, results, shortest = _start_beams(model, src, decoder, beam_size, alpha, extra_length)
    every = 1 if no_repeat_ngram_size else host_check_interval(src.device, sync_every)
    for length in range(1, beams.history.size(1) + 1):
        check_deadline(deadline)
        log_probs = decoder.step(beams.last)
        if no_repeat_ngram_size:
            ban_repeated_ngrams(log_probs, read_back(beams.history[:, :length - 1]), no_repeat_ngram_size)
        decoder.select(beams.advance(log_probs, length, alpha, model.config.eos_id, look=every > 1))
        # No cap is reached before the shortest (known on the host).
        at_cap = beams.end_capped(length, alpha) if length >= shortest else torch.zeros_like(beams.active)
        finished = beams.finished
        threshold = finished.score[:, n_best - 1]  # the n-th best ended hypothesis (-inf: fewer than n)
        hopeless = (finished.count >= n_best) & (beams.scores[:, 0] / beams.cap_penalty <= threshold)
        enough = (finished.count >= beam_size) & STOP_WHEN_BEAM_SIZE_ENDED
        beams.active &= ~(at_cap | enough | hopeless)
        if length % every == 0 or length == beams.history.size(1):
            going = read_back(beams.active)  # the one read-back of these steps
            if not all(going):
                keep, gone = split_rows(going, src.device)
                results.put(beams.sentences[gone], finished.rows(gone))
                if not any(going):
                    break
                decoder.select(beams.keep(keep), keep)
    return results.best(n_best)


def _start_beams(model: Transformer | Ensemble, src: Tensor, decoder: "_Decoder", k: int, alpha: float,
                 extra_length: int) -> tuple[_Beams, _EndedHypotheses, int]:
    """The state before the first step, the store of finished sentences' hypotheses, and the
    shortest length cap. Only beam 0 is live at the start, so the first step's candidates are all
    distinct."""
    n, device = src.size(0), src.device
    limits = max_output_lengths(decoder.src_mask, extra_length, model.position_limit)
    shortest, longest = read_back(torch.stack([limits.min(), limits.max()]))
    scores = torch.full((n, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    beams = _Beams(history=torch.zeros(n * k, longest, dtype=torch.long, device=device),
                   last=torch.full((n * k,), model.config.bos_id, dtype=torch.long, device=device), scores=scores,
                   sentences=torch.arange(n, device=device), active=torch.ones(n, dtype=torch.bool, device=device),
                   limits=limits, cap_penalty=((5.0 + limits.float()) / 6.0) ** alpha,
                   finished=_EndedHypotheses.empty(n, k, longest, device))
    return beams, _EndedHypotheses.empty(n, k, longest, device), shortest
