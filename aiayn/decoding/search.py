"""Decoding from <sos> until <eos> (§6.1), batched, with the decoder's cache: one step per token."""
from __future__ import annotations

import torch
from torch import Tensor

from aiayn.model import Transformer, padding_mask

# §6.1: "We set the maximum output length during inference to input length + 50".
EXTRA_OUTPUT_LENGTH = 50


def max_output_lengths(src_mask: Tensor, extra: int = EXTRA_OUTPUT_LENGTH) -> Tensor:
    """Per sentence: its source length in tokens (with <eos>) + 50, so the cap never depends on the batch."""
    return src_mask.sum(dim=1) + extra


def forbid_special_tokens(logits: Tensor, model: Transformer) -> Tensor:
    """Padding and <sos> are never outputs."""
    logits[:, model.config.pad_id] = float("-inf")
    logits[:, model.config.bos_id] = float("-inf")
    return logits


@torch.inference_mode()
def greedy_search(model: Transformer, src: Tensor, extra_length: int = EXTRA_OUTPUT_LENGTH) -> list[list[int]]:
    """The most probable next token at every step. Returns each sentence's ids without <sos>/<eos>.

    Sentences that finish leave the batch (with their cache rows), so the steps left cost only
    what the unfinished ones need.
    """
    config = model.config
    src_mask = padding_mask(src, config.pad_id)
    cache = model.new_cache(model.encode(src))
    limits = max_output_lengths(src_mask, extra_length)
    outputs: list[list[int]] = [[] for _ in range(src.size(0))]
    alive = torch.arange(src.size(0))
    last = torch.full((src.size(0), 1), config.bos_id, dtype=torch.long, device=src.device)
    step = 0
    while alive.numel():
        logits = forbid_special_tokens(model.decode(last, None, src_mask, cache)[:, -1].float(), model)
        best = logits.argmax(dim=-1)
        step += 1
        done = (best == config.eos_id) | (step >= limits)
        for row, token in zip(alive.tolist(), best.tolist()):
            if token != config.eos_id:
                outputs[row].append(token)
        if done.any():
            keep = (~done).nonzero().squeeze(1)
            alive, src_mask, limits, best = alive[keep.cpu()], src_mask[keep], limits[keep], best[keep]
            cache.select(keep)
        last = best[:, None]
    return outputs
