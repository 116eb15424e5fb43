"""§5.1: "Sentence pairs were batched together by approximate sequence length. Each training batch
contained a set of sentence pairs containing approximately 25000 source tokens and 25000 target
tokens." Batches here hold about `max_tokens` source + target tokens, padding included.

Batches come in few shapes: every pair is padded to one of a few (source, target) widths chosen
once from the corpus's lengths, and a batch of a width holds as many rows as fit in `max_tokens`.
A GPU then meets the same few dozen shapes epoch after epoch (kernels chosen and compiled once per
shape; `torch.compile` needs no recompiling), where batches padded to their own longest pair took
a new shape almost every batch, and the widths keep padding lower than that did (under 10% of the
tokens on Multi30k, Tatoeba and bench/gpu.py's synthetic corpus, against 16-22%).

Everything runs on numpy arrays of lengths (a few bytes a pair), never on per-pair Python objects,
so a corpus of millions of pairs is batched in seconds and in flat memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from aiayn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID

# Changes whenever the same lengths and seed would give other batches: a run resumed from a
# checkpoint of another layout cannot go on exactly within its epoch.
LAYOUT = "widths-1"
# Widths per corpus: each gives a shape of full batches and one of the width's last, partial batch.
DEFAULT_WIDTHS = 20
# Batches have at least 2 rows (a lone pair gets an empty row beside it): torch.compile specialises
# a dimension of size 1, so a one-row batch would compile a graph of its own.
MIN_ROWS = 2


def length_ladder(longest: int) -> np.ndarray:
    """Candidate lengths 1, 2, ..., 24, then steps of 2, 4, 8 and 16 (about 4-8% apart), up to
    `longest`: the grid on which widths are looked for."""
    values, value = [], 1
    while True:
        values.append(value)
        if value >= longest:
            return np.array(values, dtype=np.int64)
        value += 1 if value < 24 else 2 if value < 48 else 4 if value < 96 else 8 if value < 192 else 16


def assign_widths(src: np.ndarray, tgt: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Per pair, the index of the smallest width (source + target) that holds it; -1 if none does."""
    chosen = np.full(len(src), -1, dtype=np.int64)
    for index in np.argsort(widths.sum(axis=1), kind="stable"):
        fits = (chosen < 0) & (src <= widths[index, 0]) & (tgt <= widths[index, 1])
        chosen[fits] = index
    return chosen


def _holds(widths: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """[widths, cells]: whether each width holds each cell's pairs."""
    return (widths[:, None, 0] >= cells[None, :, 0]) & (widths[:, None, 1] >= cells[None, :, 1])


def _padded_tokens(widths: np.ndarray, cells: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[widths, cells] float32: the tokens of each cell's `counts` pairs padded to each width;
    infinite where the width does not hold the cell."""
    padded = widths.sum(axis=1).astype(np.float32)[:, None] * counts.astype(np.float32)[None, :]
    return np.where(_holds(widths, cells), padded, np.float32(np.inf))


def _padding_savings(candidates: np.ndarray, cells: np.ndarray, counts: np.ndarray, current: np.ndarray,
                     block: int = 256) -> np.ndarray:
    """Per candidate width, the padded tokens it would save over `current` (per cell, the tokens
    of its pairs at the best width chosen so far). In blocks of candidates: [candidates, cells]
    matrices grow with the square of the sentence length (2.4 GB at 1,024 subwords)."""
    saving = np.empty(len(candidates), dtype=np.float32)
    for start in range(0, len(candidates), block):
        cost = _padded_tokens(candidates[start:start + block], cells, counts)
        saving[start:start + block] = np.maximum(current[None, :] - cost, 0.0).sum(axis=1)
    return saving


def choose_widths(src: np.ndarray, tgt: np.ndarray, most: int = DEFAULT_WIDTHS) -> np.ndarray:
    """At most `most` (source, target) widths [n, 2] that every pair fits in, with little padding.

    Greedy on the length histogram (lengths rounded up to `length_ladder`): start from the widest
    pair's width, and add, one at a time, the width that saves the most padded tokens. Then each
    width shrinks to the longest source and target of the pairs it serves (which may move pairs to
    a smaller one), until nothing changes.
    """
    src, tgt = np.asarray(src, dtype=np.int64), np.asarray(tgt, dtype=np.int64)
    src_ladder, tgt_ladder = length_ladder(int(src.max())), length_ladder(int(tgt.max()))
    counts = np.bincount(np.searchsorted(src_ladder, src) * len(tgt_ladder) + np.searchsorted(tgt_ladder, tgt),
                         minlength=len(src_ladder) * len(tgt_ladder))
    occupied = np.flatnonzero(counts)
    cells = np.stack([src_ladder[occupied // len(tgt_ladder)], tgt_ladder[occupied % len(tgt_ladder)]], axis=1)
    # Candidate widths: the occupied cells, and the widest, which holds every pair.
    candidates = np.concatenate([cells, [[src_ladder[-1], tgt_ladder[-1]]]])
    counts = counts[occupied]
    widest = len(candidates) - 1
    chosen, current = [widest], _padded_tokens(candidates[widest:], cells, counts)[0]
    while len(chosen) < most:
        saving = _padding_savings(candidates, cells, counts, current)
        best = int(np.argmax(saving))
        if saving[best] <= 0:
            break
        chosen.append(best)
        current = np.minimum(current, _padded_tokens(candidates[best:best + 1], cells, counts)[0])
    widths = candidates[chosen]
    while True:
        assigned = assign_widths(src, tgt, widths)
        shrunk = np.array([(src[mine].max(), tgt[mine].max()) for mine in (assigned == i for i in range(len(widths)))
                           if mine.any()], dtype=np.int64)
        if np.array_equal(shrunk, widths):
            return widths
        widths = shrunk


@dataclass
class EpochPlan:
    """One epoch's batches: `order` lists the pairs batch after batch, batch b spanning
    order[starts[b]:starts[b + 1]] and padded to widths[b] (source, target); `sequence` is the
    shuffled order in which batches are used."""

    order: np.ndarray  # int32 [pairs]
    starts: np.ndarray  # int64 [batches + 1]
    sequence: np.ndarray  # int64 [batches]
    widths: np.ndarray  # int64 [batches, 2]

    def __len__(self) -> int:
        return len(self.sequence)

    def __getitem__(self, k: int) -> np.ndarray:
        """The pair indices of the k-th batch of the epoch."""
        b = self.sequence[k]
        return self.order[self.starts[b]:self.starts[b + 1]]

    def width(self, k: int) -> tuple[int, int]:
        """The (source, target) length the k-th batch of the epoch is padded to."""
        source, target = self.widths[self.sequence[k]]
        return int(source), int(target)


class TokenBatches:
    """Batches by token count in a few fixed shapes, reshuffled every epoch, fully determined by the seed.

    Each pair belongs to one width (`choose_widths`, from the lengths alone). Every epoch, the
    pairs of each width are shuffled and cut into batches of max_tokens // (source + target width)
    rows, the last one shorter, and the batches of all widths are shuffled. So an epoch has the
    same batches count and shapes every time, and `epoch(e)` is a pure function of (seed, e):
    resuming needs only the epoch number and the position within it.

    `src_lengths` and `tgt_lengths` are the lengths of the rows as batched (with </s> or <s>);
    `tgt_lengths` all 0 batches single sequences (the family's).
    """

    def __init__(self, src_lengths: np.ndarray, tgt_lengths: np.ndarray, max_tokens: int, seed: int = 0,
                 widths: int = DEFAULT_WIDTHS):
        if len(src_lengths) == 0:
            raise ValueError("no sentence pairs to batch")
        src, tgt = np.asarray(src_lengths, dtype=np.int64), np.asarray(tgt_lengths, dtype=np.int64)
        total = src + tgt
        if int(total.max()) > max_tokens:
            raise ValueError(f"a pair of {int(total.max())} source+target tokens does not fit in a batch of "
                             f"{max_tokens} tokens")
        self.widths = choose_widths(src, tgt, widths)
        too_wide = self.widths.sum(axis=1) > max_tokens
        if too_wide.any():
            raise ValueError(f"the longest source ({int(src.max())} tokens) and the longest target "
                             f"({int(tgt.max())}) do not fit together in a batch of {max_tokens} tokens")
        self.rows = max_tokens // self.widths.sum(axis=1)
        self.real_tokens, self.max_tokens, self.seed = int(total.sum()), max_tokens, seed
        assigned = assign_widths(src, tgt, self.widths)
        self.by_width = np.argsort(assigned, kind="stable").astype(np.int32)
        self.width_starts = np.concatenate([[0], np.cumsum(np.bincount(assigned, minlength=len(self.widths)))])

    def __len__(self) -> int:
        """Batches per epoch (the same in every epoch)."""
        return int(sum(-(-count // rows) for count, rows in zip(np.diff(self.width_starts), self.rows)))

    def epoch(self, epoch: int) -> EpochPlan:
        rng = np.random.default_rng([self.seed, epoch])
        order = self.by_width.copy()
        starts, widths = [], []
        for index, (start, end) in enumerate(zip(self.width_starts[:-1], self.width_starts[1:])):
            rng.shuffle(order[start:end])
            cuts = range(start, end, int(self.rows[index]))
            starts.extend(cuts)
            widths.extend([index] * len(cuts))
        starts.append(len(order))
        return EpochPlan(order, np.array(starts, dtype=np.int64), rng.permutation(len(widths)),
                         self.widths[np.array(widths, dtype=np.int64)])

    def padding_share(self) -> float:
        """The share of padding in the padded tokens of an epoch (the same in every epoch)."""
        counts = np.diff(self.width_starts)
        padded = int((counts * self.widths.sum(axis=1)).sum())
        return 1.0 - self.real_tokens / padded

    def shapes(self) -> set[tuple[int, int, int]]:
        """Every (rows, source width, target width) a batch of an epoch can have, as collated for training."""
        counts = np.diff(self.width_starts)
        found = set()
        for (source, target), rows, count in zip(self.widths.tolist(), self.rows.tolist(), counts.tolist()):
            if count >= rows:
                found.add((max(rows, MIN_ROWS), source, target))
            if count % rows:
                found.add((max(count % rows, MIN_ROWS), source, target))
        return found


@dataclass
class Batch:
    """A padded batch for teacher forcing: src = x + <eos>, tgt_in = <sos> + y, tgt_out = y + <eos>;
    `positions` are the flat indices (into tgt_out.view(-1)) of its real target tokens, found on the
    host so that the loss can drop padding before the output projection without asking the device."""

    src: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    positions: Tensor

    @property
    def n_target_tokens(self) -> int:
        return self.positions.numel()

    @property
    def n_items(self) -> int:
        """What the loss sums over (aiayn.training.task): the real target tokens."""
        return self.n_target_tokens

    @property
    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The training objective's arguments (aiayn.training.loss.TeacherForcingLoss)."""
        return self.src, self.tgt_in, self.tgt_out, self.positions

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in self.tensors))

    def pin_memory(self) -> "Batch":
        return Batch(*(t.pin_memory() for t in self.tensors))


def pad(rows: Sequence[Sequence[int]], before: int | None = None, after: int | None = None,
        pad_id: int = PAD_ID, width: int | None = None) -> Tensor:
    """Right-pad rows of ids with pad_id (an imported model's may differ) into a [len(rows), width]
    LongTensor (width: the longest row by default), with an optional token before and after each row."""
    extra = (before is not None) + (after is not None)
    longest = max((len(r) for r in rows), default=0) + extra
    if width is not None and width < longest:
        raise ValueError(f"a row of {longest} tokens is wider than the batch's {width}")
    out = np.full((len(rows), longest if width is None else width), pad_id, dtype=np.int64)
    for i, row in enumerate(rows):
        start = 0
        if before is not None:
            out[i, 0] = before
            start = 1
        out[i, start:start + len(row)] = row
        if after is not None:
            out[i, start + len(row)] = after
    return torch.from_numpy(out)


def collate(src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]],
            widths: tuple[int, int] | None = None, min_rows: int = 1) -> Batch:
    """Teacher-forcing tensors of the pairs, padded to `widths` (source, target; by default the
    longest of each side), with empty rows (all padding: no loss, no gradient) up to `min_rows`."""
    src_width, tgt_width = widths if widths is not None else (None, None)
    src, tgt_in = pad(src_ids, after=EOS_ID, width=src_width), pad(tgt_ids, before=BOS_ID, width=tgt_width)
    tgt_out = pad(tgt_ids, after=EOS_ID, width=tgt_width)
    if len(src_ids) < min_rows:
        src, tgt_in, tgt_out = (F.pad(t, (0, 0, 0, min_rows - len(src_ids)), value=PAD_ID) for t in (src, tgt_in, tgt_out))
    positions = torch.from_numpy(np.flatnonzero(tgt_out.numpy() != PAD_ID))
    return Batch(src=src, tgt_in=tgt_in, tgt_out=tgt_out, positions=positions)
