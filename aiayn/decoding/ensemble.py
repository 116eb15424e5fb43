"""Several translation models decoding as one (fairseq's `--path a.pt:b.pt`).

At each step the search takes the mean of the members' next-token probabilities (log of the
mean, not the mean of the logs), so a token one model is sure of and another finds unlikely keeps
half its probability. Checkpoint averaging (§6.1) averages the weights of one run instead; an
ensemble combines runs trained apart, each with its own encoder pass and decoder cache.
"""
from __future__ import annotations

import dataclasses

from torch import nn

from aiayn.model import ModelConfig, Transformer

# What the members must agree on to share a vocabulary and a search.
SHARED_FIELDS = ("vocab_size", "pad_id", "bos_id", "eos_id")


class Ensemble(nn.Module):
    """Translation models with one vocabulary; `beam_search` and `greedy_search` take it as a model."""

    def __init__(self, members: list[Transformer]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 models, got {len(members)}")
        first = members[0].config
        for index, member in enumerate(members[1:], start=2):
            for name in SHARED_FIELDS:
                if getattr(member.config, name) != getattr(first, name):
                    raise ValueError(f"model {index} has {name} {getattr(member.config, name)}, "
                                     f"model 1 {getattr(first, name)}: an ensemble shares one vocabulary")
        self.members = nn.ModuleList(members)

    @property
    def config(self) -> ModelConfig:
        """The first member's (the vocabulary and special ids, which every member shares), with the
        fewest positions any member has."""
        fewest = min(m.config.max_positions for m in self.members)
        return dataclasses.replace(self.members[0].config, max_positions=fewest)

    @property
    def position_limit(self) -> int | None:
        """The fewest positions any member has (None: no member has a limit)."""
        limits = [m.position_limit for m in self.members if m.position_limit is not None]
        return min(limits) if limits else None
