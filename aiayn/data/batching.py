"""§5.1: "Sentence pairs were batched together by approximate sequence length. Each training batch
contained a set of sentence pairs containing approximately 25000 source tokens and 25000 target
tokens." Batches here hold about `max_tokens` source + target tokens, padding included.

Everything runs on numpy arrays of lengths (a few bytes a pair), never on per-pair Python objects,
so a corpus of millions of pairs is batched in about a second and in flat memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from aiayn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


@dataclass
class EpochPlan:
    """One epoch's batches: `order` lists the pairs batch after batch, batch b spanning
    order[starts[b]:starts[b + 1]]; `sequence` is the shuffled order in which batches are used."""

    order: np.ndarray  # int32 [pairs]
    starts: np.ndarray  # int64 [batches + 1]
    sequence: np.ndarray  # int64 [batches]

    def __len__(self) -> int:
        return len(self.sequence)

    def __getitem__(self, k: int) -> np.ndarray:
        """The pair indices of the k-th batch of the epoch."""
        b = self.sequence[k]
        return self.order[self.starts[b]:self.starts[b + 1]]


class TokenBatches:
    """Length-bucketed batches by token count, reshuffled every epoch, fully determined by the seed.

    Within an epoch, pairs are sorted by length (source + target; ties broken at random, afresh
    each epoch), cut into batches whose padded size (rows x (longest source + longest target))
    stays within `max_tokens`, and the batches are shuffled. `epoch(e)` is a pure function of
    (seed, e), so resuming needs only the epoch number and the position within it.

    `src_lengths` and `tgt_lengths` are the lengths of the rows as batched (with </s> or <s>).
    """

    def __init__(self, src_lengths: np.ndarray, tgt_lengths: np.ndarray, max_tokens: int, seed: int = 0):
        if len(src_lengths) == 0:
            raise ValueError("no sentence pairs to batch")
        self.src = np.asarray(src_lengths)
        self.tgt = np.asarray(tgt_lengths)
        total = self.src.astype(np.uint32) + self.tgt
        if int(total.max()) > max_tokens:
            raise ValueError(f"a pair of {int(total.max())} source+target tokens does not fit in a batch of "
                             f"{max_tokens} tokens")
        self.max_tokens = max_tokens
        self.seed = seed
        # Sorted once (radix sort on 16-bit keys, int32 indices); each epoch only shuffles within
        # each length, which is what a random tie-break does.
        key = total.astype(np.uint16) if total.max() < 2**16 else total
        self.by_length = np.argsort(key, kind="stable").astype(np.int32)
        self.length_starts = np.concatenate([[0], np.cumsum(np.bincount(total))])

    def epoch(self, epoch: int) -> EpochPlan:
        rng = np.random.default_rng([self.seed, epoch])
        order = self.by_length.copy()
        for start, end in zip(self.length_starts[:-1], self.length_starts[1:]):
            if end - start > 1:
                rng.shuffle(order[start:end])
        starts = self._cut(order)
        return EpochPlan(order, starts, rng.permutation(len(starts) - 1))

    def _cut(self, order: np.ndarray) -> np.ndarray:
        """Batch boundaries: each batch grows while rows x (longest source + longest target) fits."""
        starts, i, n = [0], 0, len(order)
        while i < n:
            # Rows come shortest first, so no batch starting at row i can have more rows than this.
            window = order[i:i + self.max_tokens // (int(self.src[order[i]]) + int(self.tgt[order[i]]))]
            widest = np.maximum.accumulate(self.src[window]).astype(np.int64) + np.maximum.accumulate(self.tgt[window])
            padded = widest * np.arange(1, len(window) + 1)
            i += max(1, int(np.searchsorted(padded, self.max_tokens, side="right")))
            starts.append(i)
        return np.array(starts, dtype=np.int64)


@dataclass
class Batch:
    """A padded batch for teacher forcing: src = x + <eos>, tgt_in = <sos> + y, tgt_out = y + <eos>."""

    src: Tensor
    tgt_in: Tensor
    tgt_out: Tensor

    @property
    def n_target_tokens(self) -> int:
        return int((self.tgt_out != PAD_ID).sum())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in (self.src, self.tgt_in, self.tgt_out)))

    def pin_memory(self) -> "Batch":
        return Batch(self.src.pin_memory(), self.tgt_in.pin_memory(), self.tgt_out.pin_memory())


def pad(rows: Sequence[Sequence[int]], before: int | None = None, after: int | None = None,
        pad_id: int = PAD_ID) -> Tensor:
    """Right-pad rows of ids with pad_id (an imported model's may differ) into a [len(rows), longest]
    LongTensor, with an optional token before and after each row."""
    extra = (before is not None) + (after is not None)
    out = np.full((len(rows), max((len(r) for r in rows), default=0) + extra), pad_id, dtype=np.int64)
    for i, row in enumerate(rows):
        start = 0
        if before is not None:
            out[i, 0] = before
            start = 1
        out[i, start:start + len(row)] = row
        if after is not None:
            out[i, start + len(row)] = after
    return torch.from_numpy(out)


def collate(src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]]) -> Batch:
    return Batch(src=pad(src_ids, after=EOS_ID), tgt_in=pad(tgt_ids, before=BOS_ID), tgt_out=pad(tgt_ids, after=EOS_ID))
