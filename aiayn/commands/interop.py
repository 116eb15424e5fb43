"""Other toolkits' formats: export (CTranslate2, Hugging Face Marian) and import (a Marian folder)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_export(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("export", help="write a checkpoint as a CTranslate2 or Hugging Face Marian model folder")
    p.add_argument("--checkpoint", required=True, help="a checkpoint, or a run directory (averaged, best or last)")
    p.add_argument("--to", required=True, choices=["ctranslate2", "huggingface"])
    p.add_argument("out", metavar="OUT", help="the folder to write (must not exist, or be empty)")
    p.add_argument("--quantization", choices=["int8", "bfloat16"], help="CTranslate2 weights (default: float32)")
    p.set_defaults(run=_export)


def add_import(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("import", help="make a checkpoint of a local Hugging Face Marian folder (e.g. OPUS-MT)")
    p.add_argument("--from", dest="source_format", required=True, choices=["huggingface"],
                   help="the folder's format: config.json, model.safetensors, source.spm, target.spm, vocab.json")
    p.add_argument("directory", metavar="DIR", help="the model folder (nothing is downloaded)")
    p.add_argument("--out", required=True, help="the checkpoint to write (must not exist, or be empty)")
    p.set_defaults(run=_import)


def _export(args: argparse.Namespace) -> int:
    from aiayn.checkpoint import resolve_checkpoint
    from aiayn.interop import InteropError, export_ctranslate2, export_huggingface
    from aiayn.interop.common import require_empty

    if args.quantization and args.to != "ctranslate2":
        raise InteropError("--quantization is for --to ctranslate2 (a Hugging Face export keeps float32 weights)")
    require_empty(Path(args.out))  # before any work or message
    checkpoint = resolve_checkpoint(args.checkpoint, announce=True)
    if args.to == "ctranslate2":
        out = export_ctranslate2(checkpoint, args.out, args.quantization)
    else:
        out = export_huggingface(checkpoint, args.out)
    print(f"wrote {out}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from aiayn.interop import import_marian

    print(f"wrote {import_marian(args.directory, args.out)}")
    return 0
