"""Attention maps as pictures: which output token looked at which input token (§3.2, Figures 3-5)."""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from matplotlib.figure import Figure  # no pyplot: drawing a file never switches a notebook's backend

from aiayn.decoding.translator import AttentionResult
from aiayn.errors import InputError
from aiayn.model import ModelConfig

KINDS = ("cross", "encoder", "decoder")


def check_map_choice(config: ModelConfig, kind: str, layer: int, head: int | None) -> None:
    """Refuse a layer or head the model does not have (before any decoding)."""
    n_layers = config.n_encoder_layers if kind == "encoder" else config.n_decoder_layers
    if not -n_layers <= layer < n_layers:
        raise InputError(f"--layer {layer}: the model's {kind} attention has layers 0..{n_layers - 1} "
                         f"(or -1..-{n_layers} from the last)")
    if head is not None and not 0 <= head < config.n_heads:
        raise InputError(f"--head {head}: the model has heads 0..{config.n_heads - 1}")


def _maps(result: AttentionResult, kind: str) -> tuple[list[torch.Tensor], list[str], list[str]]:
    """Per-layer maps and the (row, column) labels of one kind of attention."""
    if kind == "cross":
        return result.cross, result.target_tokens, result.source_tokens
    if kind == "encoder":
        return result.encoder, result.source_tokens, result.source_tokens
    if kind == "decoder":
        return result.decoder_self, result.target_tokens, result.target_tokens
    raise ValueError(f"attention kind must be one of {', '.join(KINDS)}, got {kind!r}")


# Fonts with Hangul, kana and CJK ideographs, tried in this order for the glyphs DejaVu Sans lacks.
CJK_FONT_FILES = ("NanumGothic.ttf", "NotoSansCJK-Regular.ttc", "NotoSansCJKkr-Regular.otf", "UnDotum.ttf")


@functools.cache
def _label_fonts() -> tuple[str, ...]:
    """DejaVu Sans, then any CJK font installed on the system (added to matplotlib's list, whose
    cache does not see fonts installed after it was built), so Korean subwords draw as text."""
    from matplotlib import font_manager

    families = ["DejaVu Sans"]
    found = [path for path in font_manager.findSystemFonts() if Path(path).name in CJK_FONT_FILES]
    for path in sorted(found, key=lambda p: CJK_FONT_FILES.index(Path(p).name)):
        font_manager.fontManager.addfont(path)
        families.append(font_manager.FontProperties(fname=path).get_name())
    return tuple(dict.fromkeys(families))


def _heatmap(axis, weights: torch.Tensor, rows: list[str], columns: list[str], title: str) -> None:
    axis.imshow(weights.numpy(), cmap="viridis", vmin=0.0, vmax=float(weights.max()), aspect="auto")
    fonts = list(_label_fonts()) if any(ord(c) > 0x2E7F for label in rows + columns for c in label) else None
    axis.set_xticks(range(len(columns)), columns, rotation=90, fontsize=8, fontfamily=fonts)
    axis.set_yticks(range(len(rows)), rows, fontsize=8, fontfamily=fonts)
    axis.set_title(title, fontsize=9)


def draw_attention(result: AttentionResult, out: str | Path, kind: str = "cross", layer: int = -1,
                   head: int | None = None) -> Path:
    """One heatmap: a layer's attention, one head or averaged over heads (the default: the last
    layer's encoder-decoder attention averaged over heads, i.e. the alignment)."""
    maps, rows, columns = _maps(result, kind)
    weights = maps[layer]
    weights = weights.mean(dim=0) if head is None else weights[head]
    layer_number = layer % len(maps) + 1
    which = "averaged over heads" if head is None else f"head {head + 1}"
    size = (max(4.0, 0.4 * len(columns) + 2), max(3.0, 0.35 * len(rows) + 2))
    figure = Figure(figsize=size)
    axis = figure.subplots()
    _heatmap(axis, weights, rows, columns, f"{kind} attention, layer {layer_number} of {len(maps)}, {which}")
    axis.set_xlabel("attended (keys)")
    axis.set_ylabel("attending (queries)")
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    return Path(out)


def draw_all_heads(result: AttentionResult, out: str | Path, kind: str = "cross") -> Path:
    """A grid of every layer (rows) and head (columns) of one kind of attention."""
    maps, rows, columns = _maps(result, kind)
    n_layers, n_heads = len(maps), maps[0].size(0)
    cell = max(2.0, 0.18 * max(len(rows), len(columns)) + 1)
    figure = Figure(figsize=(cell * n_heads, cell * n_layers))
    axes = figure.subplots(n_layers, n_heads, squeeze=False)
    for layer in range(n_layers):
        for head in range(n_heads):
            _heatmap(axes[layer][head], maps[layer][head], rows, columns, f"layer {layer + 1}, head {head + 1}")
    figure.suptitle(f"{kind} attention: {result.translation}")
    figure.tight_layout()
    figure.savefig(out, dpi=90)
    return Path(out)
