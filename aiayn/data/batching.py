"""§5.1: "Sentence pairs were batched together by approximate sequence length. Each training batch
contained a set of sentence pairs containing approximately 25000 source tokens and 25000 target
tokens." Batches here hold about `max_tokens` source + target tokens, padding included."""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import Tensor

from aiayn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


class TokenBatches:
    """Length-bucketed batches by token count, reshuffled every epoch, fully determined by the seed.

    Within an epoch, pairs are sorted by length (ties broken at random), cut into batches whose
    padded size (rows x (longest source + longest target)) stays within `max_tokens`, and the
    batches are shuffled. `epoch(e)` is a pure function of (seed, e), so resuming needs only the
    epoch number and the position within it.
    """

    def __init__(self, lengths: list[tuple[int, int]], max_tokens: int, seed: int = 0):
        if not lengths:
            raise ValueError("no sentence pairs to batch")
        longest = max(s + t for s, t in lengths)
        if longest > max_tokens:
            raise ValueError(f"a pair of {longest} source+target tokens does not fit in a batch of {max_tokens} tokens")
        self.lengths = lengths
        self.max_tokens = max_tokens
        self.seed = seed

    def epoch(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        tie_break = [rng.random() for _ in self.lengths]
        order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i][0] + self.lengths[i][1], tie_break[i]))
        batches, current, longest_src, longest_tgt = [], [], 0, 0
        for index in order:
            s, t = self.lengths[index]
            grown_src, grown_tgt = max(longest_src, s), max(longest_tgt, t)
            if current and (len(current) + 1) * (grown_src + grown_tgt) > self.max_tokens:
                batches.append(current)
                current, grown_src, grown_tgt = [], s, t
            current.append(index)
            longest_src, longest_tgt = grown_src, grown_tgt
        batches.append(current)
        rng.shuffle(batches)
        return batches


@dataclass
class Batch:
    """A padded batch for teacher forcing: src = x + <eos>, tgt_in = <sos> + y, tgt_out = y + <eos>."""

    src: Tensor
    tgt_in: Tensor
    tgt_out: Tensor

    @property
    def n_target_tokens(self) -> int:
        return int((self.tgt_out != PAD_ID).sum())

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.src.to(device), self.tgt_in.to(device), self.tgt_out.to(device))


def pad(rows: list[list[int]], pad_id: int = PAD_ID) -> Tensor:
    """Right-pad rows of ids with pad_id (an imported model's may differ) into a [len(rows), longest] LongTensor."""
    out = torch.full((len(rows), max(map(len, rows), default=0)), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def collate(src_ids: list[list[int]], tgt_ids: list[list[int]]) -> Batch:
    return Batch(
        src=pad([s + [EOS_ID] for s in src_ids]),
        tgt_in=pad([[BOS_ID] + t for t in tgt_ids]),
        tgt_out=pad([t + [EOS_ID] for t in tgt_ids]),
    )
