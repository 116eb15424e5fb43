"""int8 linear layers for decoding on the CPU: weights quantised once per output channel, inputs
quantised per row as they come (symmetric, scale = max |x| / 127), products in int32
(torch._int_mm), rescaled to float32.

Per row, not per tensor as torch.ao's dynamic quantisation does: there a sentence's numbers
depend on the other sentences in its batch (one scale for the whole input), so its translation
could change with the batch it is decoded in. Per row, each token is quantised on its own, as
CTranslate2 does.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from aiayn.model import Transformer


@functools.cache
def weight_levels() -> int:
    """127 where this CPU's int8 products are exact; 63 where they are not (x86 without VNNI
    adds pairs of u8 x s8 products in int16, which overflows at full range; 7-bit weights keep
    every pair in range, as FBGEMM's reduce_range does)."""
    generator = torch.Generator().manual_seed(0)
    a = (torch.randint(0, 2, (32, 256), generator=generator) * 254 - 127).to(torch.int8)
    b = (torch.randint(0, 2, (256, 32), generator=generator) * 254 - 127).to(torch.int8)
    exact = (a.double() @ b.double()).to(torch.int32)
    return 127 if torch.equal(torch._int_mm(a, b), exact) else 63


class Int8Linear(nn.Module):
    """y = x W^T + b with W in int8 (one scale per output channel) and x quantised per row."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        levels = weight_levels()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / levels
        self.register_buffer("weight_t", (weight / scale[:, None]).round().clamp(-levels, levels).to(torch.int8).t().contiguous())
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features).float()
        scale = rows.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12).div_(127.0)
        quantised = rows.div(scale).round_().to(torch.int8)
        out = torch._int_mm(quantised, self.weight_t).float().mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights, per-row int8 inputs"


def quantize_int8(model: Transformer) -> Transformer:
    """The model with every linear layer (the output projection included) as an Int8Linear; the
    embeddings, LayerNorm and attention stay float32. CPU only."""
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("int8 weights run on the CPU only")
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear(child))
    return model
