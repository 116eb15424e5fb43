"""Dropout forward + backward on the CPU: torch's nn.Dropout against aiayn's model Dropout, on one
[tokens, d_model] activation of a training batch, float32 and bfloat16. Prints milliseconds and
the ratio (run on a quiet machine):

    .venv/bin/python bench/dropout.py [--tokens 8000] [--d-model 128] [--p 0.3]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from aiayn.model.transformer import Dropout


def milliseconds(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, repeats: int = 30) -> float:
    module(x).backward(grad)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        module(x).backward(grad)
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8000)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--p", type=float, default=0.3)
    args = parser.parse_args()
    print(f"dropout p={args.p} on [{args.tokens}, {args.d_model}], forward + backward, "
          f"{torch.get_num_threads()} threads")
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(args.tokens, args.d_model, dtype=dtype, requires_grad=True)
        grad = torch.randn_like(x)
        torch_ms = milliseconds(nn.Dropout(args.p).train(), x, grad)
        aiayn_ms = milliseconds(Dropout(args.p).train(), x, grad)
        print(f"{str(dtype):15} torch nn.Dropout {torch_ms:6.2f} ms   aiayn Dropout {aiayn_ms:6.2f} ms   "
              f"speed-up {torch_ms / aiayn_ms:.2f}x")


if __name__ == "__main__":
    main()
