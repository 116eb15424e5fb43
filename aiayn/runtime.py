"""Process-wide settings that make PyTorch on the CPU faster."""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from pathlib import Path

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of handing every large block back to the OS.

    By default glibc serves each allocation over 32 MiB (a [tokens, vocabulary] logits tensor, say)
    with a fresh mmap and unmaps it on free, so every training step pays page faults and the
    kernel's zeroing of hundreds of MiB: on the 2-core machine this was 10-13% of system time
    and ~20% of training throughput (3,575 -> 4,479 target tokens/s, small preset, bf16).
    Returns whether the setting was applied (glibc on Linux only; elsewhere nothing changes).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # not glibc
        return False


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (avx512_bf16 or AMX), where bf16 matrix
    products run ~2.6x faster than float32 (2-core AMD EPYC, measured)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def check_device(name: str) -> None:
    """Refuse, as bad input, a device this machine does not have (before any work is done)."""
    import torch

    from aiayn.errors import InputError

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {name}: not a device name (cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"--device {name}: only cpu and cuda are supported")


def bound_kernel_caches(capacity: int = 16) -> None:
    """Keep few oneDNN primitives (compiled CPU kernels, one per matrix shape): bfloat16 products
    of the ever-changing shapes of training batches filled the default cache of 1,024, and a
    training process grew to 3.5 GB by step 100 (small preset, 9,000-token batches; 2.5 GB with 16,
    at the same speed). Only takes effect before the first oneDNN call, and never overrides a
    capacity the user set (ONEDNN_PRIMITIVE_CACHE_CAPACITY)."""
    import os

    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))


def use_cuda_kernels(device: "torch.device") -> None:
    """Process-wide choices for work on a CUDA device (nothing changes for another device):

    - attention: flash attention and memory-efficient attention (and the math fallback), never
      cuDNN's attention, which recent PyTorch prefers on Hopper GPUs for bfloat16 with a mask and
      which builds a graph for every new shape and stride (tens of ms each, forward and backward
      apart): decoding meets a new key length at every step;
    - float32 matrix products in TF32 (`torch.set_float32_matmul_precision("high")`): about 8x
      the float32 rate on tensor cores, 10 mantissa bits, as cuBLAS and cuDNN do by default for
      convolutions.
    """
    import torch

    if device.type != "cuda":
        return
    torch.backends.cuda.enable_cudnn_sdp(False)
    torch.set_float32_matmul_precision("high")


def compiled_graphs() -> int:
    """How many graphs torch.compile has made in this process so far (TorchDynamo's own count):
    one per compile and per recompile."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
