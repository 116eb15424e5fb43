"""The `aiayn` command line: it parses arguments and dispatches to the package; no work is done here."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from aiayn.model.config import ModelConfig


def _params(args: argparse.Namespace) -> int:
    from aiayn.model import Transformer, parameter_counts

    config = ModelConfig.preset(args.preset, vocab_size=args.vocab_size)
    counts = parameter_counts(Transformer(config))
    print(f"preset {args.preset}: d_model {config.d_model}, heads {config.n_heads}, d_ff {config.d_ff}, "
          f"layers {config.n_encoder_layers}+{config.n_decoder_layers}, vocabulary {config.vocab_size} "
          f"(shared embeddings: {config.share_embeddings})")
    for name, value in counts.items():
        print(f"{name:>12}: {value:>13,}  ({value / 1e6:.1f}M)")
    paper = ModelConfig.PAPER_PARAMETERS.get(args.preset)
    if paper:
        print(f"{'paper':>12}: {paper / 1e6:.0f}M (Table 3); difference {100 * (counts['total'] - paper) / paper:+.1f}%")
    return 0


def _train(args: argparse.Namespace) -> int:
    from aiayn.training.trainer import TrainConfig, train

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    values["time_budget_s"] = args.time_budget * 60 if args.time_budget else None
    if args.resume:
        stopping = {k: values[k] for k in ("max_steps", "max_epochs", "time_budget_s")}
        config = TrainConfig(**stopping) if any(stopping.values()) else None
        train(args.resume, config=config, resume=True)
        return 0
    if args.multi30k:
        from aiayn.data.multi30k import split_path

        src_lang, _, tgt_lang = args.multi30k.partition("-")
        values.update(source_lang=src_lang, target_lang=tgt_lang,
                      train_src=str(split_path("train", src_lang, args.data_dir)),
                      train_tgt=str(split_path("train", tgt_lang, args.data_dir)),
                      valid_src=str(split_path("val", src_lang, args.data_dir)),
                      valid_tgt=str(split_path("val", tgt_lang, args.data_dir)))
    if not (values.get("train_src") and values.get("train_tgt")):
        raise SystemExit("aiayn train: give --train-src and --train-tgt, or --multi30k SRC-TGT")
    overrides = {k: v for k, v in dict(dropout=args.dropout, positional_encoding=args.positional_encoding,
                                       norm_placement=args.norm_placement).items() if v is not None}
    train(args.out, ModelConfig.preset(args.preset, **overrides), TrainConfig(**values))
    return 0


def _average(args: argparse.Namespace) -> int:
    from aiayn.checkpoint import AVERAGE_DIR, average_checkpoints, step_checkpoints

    paths = step_checkpoints(Path(args.run_dir))[-args.last:]
    if len(paths) < args.last:
        print(f"note: {args.run_dir} has {len(paths)} checkpoints, fewer than --last {args.last}", file=sys.stderr)
    out = Path(args.out) if args.out else Path(args.run_dir) / "checkpoints" / AVERAGE_DIR
    print(f"averaged {', '.join(p.name for p in paths)} into {average_checkpoints(paths, out)}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from aiayn.evaluation.plots import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from aiayn.demo import run_demo

    run_demo(args.out, minutes=args.minutes, seed=args.seed)
    return 0


def _translator(args: argparse.Namespace):
    from aiayn.decoding.translator import Translator

    return Translator.from_checkpoint(args.checkpoint, device=args.device, announce=True, bf16=args.bf16)


def _read_input(path: str | None) -> list[str]:
    from aiayn.data.corpus import decode_lines, read_lines

    return read_lines(path) if path else decode_lines(sys.stdin.buffer, "<stdin>")


def _translate(args: argparse.Namespace) -> int:
    from aiayn.decoding.search import Sampling

    translator = _translator(args)
    lines = _read_input(args.input)
    sampling = (Sampling(args.temperature, args.top_k, args.top_p, args.seed) if args.sample else None)
    progress = bool(args.input) or not sys.stdin.isatty()
    if args.n_best > 1:
        found = translator.translate_n_best(lines, args.n_best, max(args.beam, args.n_best), args.alpha, args.batch_tokens)
        out_lines = [f"{i} ||| {text} ||| {score:.4f}" for i, hyps in enumerate(found) for text, score in hyps]
    else:
        out_lines = translator.translate(lines, 1 if sampling else args.beam, args.alpha, args.batch_tokens,
                                         args.no_repeat_ngram_size, sampling, progress=progress)
    text = "".join(line + "\n" for line in out_lines)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from aiayn.data.corpus import read_parallel
    from aiayn.evaluation.bleu import bleu, chrf, tokenized_lowercased_bleu

    translator = _translator(args)
    sources, references = read_parallel(args.src, args.ref)
    hypotheses = translator.translate(sources, args.beam, args.alpha, args.batch_tokens, progress=True)
    if args.hyp:
        Path(args.hyp).write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    lang = args.lang or (translator.config.get("languages") or {}).get("target") or "en"
    decoding = "greedy" if args.beam == 1 else f"beam {args.beam}, alpha {args.alpha}"
    print(f"{len(hypotheses)} sentences, {decoding}")
    for label, score in (("sacreBLEU", bleu(hypotheses, references)), ("chrF", chrf(hypotheses, references))):
        print(f"{label:<10} {score.text}\n{'':<10} signature {score.signature}")
    tokenized = tokenized_lowercased_bleu(hypotheses, references, lang)
    print(f"BLEU {tokenized.score:.2f} on Moses-tokenised, lowercased text (as in Multi30k papers; "
          f"not comparable with sacreBLEU)")
    return 0


def _attention(args: argparse.Namespace) -> int:
    from aiayn.evaluation.attention_plot import draw_all_heads, draw_attention

    result = _translator(args).attention(args.src, args.tgt, beam=args.beam)
    print(f"{args.src}\n-> {result.translation}")
    if args.all_heads:
        path = draw_all_heads(result, args.out, args.kind)
    else:
        path = draw_attention(result, args.out, args.kind, args.layer, args.head)
    print(f"wrote {path}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from aiayn.serving.app import serve

    serve(args.checkpoint, args.host, args.port, 0.0 if args.no_batching else args.max_wait_ms,
          0 if args.no_batching else args.max_batch_tokens, args.device, args.bf16)
    return 0


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


def _add_decoding_arguments(p: argparse.ArgumentParser, beam: int = 4) -> None:
    p.add_argument("--checkpoint", required=True, help="a checkpoint, or a run directory (averaged, best or last)")
    p.add_argument("--beam", type=int, default=beam, help="beam size (§6.1: 4); 1 = greedy")
    p.add_argument("--alpha", type=float, default=0.6, help="GNMT length penalty ((5+|Y|)/6)^alpha")
    p.add_argument("--batch-tokens", type=int, default=8000, help="decoding batch size in tokens x beams")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bfloat16 weights (faster on CPUs with avx512_bf16, GPUs)")


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data")
    data.add_argument("--multi30k", metavar="SRC-TGT", help="Multi30k language pair, e.g. de-en (train + val splits)")
    data.add_argument("--data-dir", help="local copy of the Multi30k raw files (default: download once to the cache)")
    data.add_argument("--train-src", dest="train_src")
    data.add_argument("--train-tgt", dest="train_tgt")
    data.add_argument("--valid-src", dest="valid_src")
    data.add_argument("--valid-tgt", dest="valid_tgt")
    data.add_argument("--vocab-size", dest="vocab_size", type=int, default=8000, help="shared BPE vocabulary size")
    data.add_argument("--max-length", dest="max_length", type=int, default=250, help="skip pairs with a side longer than this (subwords)")
    model = p.add_argument_group("model")
    model.add_argument("--preset", default="small", choices=sorted(ModelConfig.PRESETS))
    model.add_argument("--dropout", type=float)
    model.add_argument("--positional-encoding", choices=["sinusoidal", "learned"])
    model.add_argument("--norm-placement", choices=["post", "pre"])
    opt = p.add_argument_group("optimisation (§5.3, §5.4)")
    opt.add_argument("--batch-tokens", dest="batch_tokens", type=int, default=8000, help="source+target tokens per batch")
    opt.add_argument("--accumulate", type=int, default=1, help="batches per optimizer step")
    opt.add_argument("--label-smoothing", dest="label_smoothing", type=float, default=0.1)
    opt.add_argument("--warmup", dest="warmup_steps", type=int, default=4000)
    opt.add_argument("--lr-scale", dest="lr_scale", type=float, default=1.0, help="factor on the §5.3 learning rate")
    opt.add_argument("--adam-beta1", dest="adam_beta1", type=float, default=0.9)
    opt.add_argument("--adam-beta2", dest="adam_beta2", type=float, default=0.98)
    opt.add_argument("--adam-eps", dest="adam_eps", type=float, default=1e-9)
    opt.add_argument("--clip-norm", dest="clip_norm", type=float, default=0.0, help="0 = no clipping")
    opt.add_argument("--seed", type=int, default=1)
    stop = p.add_argument_group("stopping, validation, checkpoints")
    stop.add_argument("--max-steps", dest="max_steps", type=int)
    stop.add_argument("--max-epochs", dest="max_epochs", type=int)
    stop.add_argument("--time-budget", type=float, help="minutes of training steps")
    stop.add_argument("--eval-every", dest="eval_every", type=int, default=500)
    stop.add_argument("--bleu-sentences", dest="bleu_sentences", type=int, help="validate BLEU on the first N sentences")
    stop.add_argument("--save-every", dest="save_every", type=int, default=500)
    stop.add_argument("--keep-last", dest="keep_last", type=int, default=5)
    stop.add_argument("--log-every", dest="log_every", type=int, default=10)
    device = p.add_argument_group("device")
    device.add_argument("--device", default="cpu")
    device.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPUs with avx512_bf16, GPUs)")
    device.add_argument("--compile", action="store_true", help="torch.compile the model")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiayn", description="The Transformer of 'Attention Is All You Need'.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("demo", help="train a small English->German number-word translator (no download) and test it")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--minutes", type=float, default=2.0, help="training time")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(run=_demo)

    p = verbs.add_parser("train", help="train a translator on parallel text (§5)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="new run directory")
    target.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly where it stopped")
    _add_train_arguments(p)
    p.set_defaults(run=_train)

    p = verbs.add_parser("translate", help="translate raw text, one sentence a line (stdin or --input)")
    _add_decoding_arguments(p)
    p.add_argument("--input", help="file to translate (default: stdin)")
    p.add_argument("--output", help="file to write (default: stdout)")
    p.add_argument("--n-best", type=int, default=1, help="write the N best as 'line ||| text ||| score'")
    p.add_argument("--no-repeat-ngram-size", type=int, default=0)
    p.add_argument("--sample", action="store_true", help="sample instead of searching")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int)
    p.set_defaults(run=_translate)

    p = verbs.add_parser("evaluate", help="translate a test set and score it (sacreBLEU, chrF, tokenised BLEU)")
    _add_decoding_arguments(p)
    p.add_argument("--src", required=True)
    p.add_argument("--ref", required=True)
    p.add_argument("--hyp", help="also write the translations to this file")
    p.add_argument("--lang", help="target language for the Moses tokeniser (default: the checkpoint's)")
    p.set_defaults(run=_evaluate)

    p = verbs.add_parser("attention", help="draw attention maps of a sentence as a PNG")
    _add_decoding_arguments(p)
    p.add_argument("--src", required=True, help="source sentence")
    p.add_argument("--tgt", help="target sentence (default: the model's translation)")
    p.add_argument("--out", required=True, help="PNG file")
    p.add_argument("--kind", default="cross", choices=["cross", "encoder", "decoder"])
    p.add_argument("--layer", type=int, default=-1, help="layer (negative counts from the last)")
    p.add_argument("--head", type=int, help="one head (default: the average over heads)")
    p.add_argument("--all-heads", action="store_true", help="a grid of every layer and head")
    p.set_defaults(run=_attention)

    p = verbs.add_parser("serve", help="serve a checkpoint over HTTP, with a web page showing the attention")
    p.add_argument("--checkpoint", required=True, help="a checkpoint, or a run directory (averaged, best or last)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for others to batch with")
    p.add_argument("--max-batch-tokens", type=int, default=4000, help="source tokens in one decoding batch")
    p.add_argument("--no-batching", action="store_true", help="decode one request at a time")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bfloat16 weights (faster on CPUs with avx512_bf16, GPUs)")
    p.set_defaults(run=_serve)

    p = verbs.add_parser("export", help="write a checkpoint as a CTranslate2 or Hugging Face Marian model folder")
    p.add_argument("--checkpoint", required=True, help="a checkpoint, or a run directory (averaged, best or last)")
    p.add_argument("--to", required=True, choices=["ctranslate2", "huggingface"])
    p.add_argument("out", metavar="OUT", help="the folder to write (must not exist, or be empty)")
    p.add_argument("--quantization", choices=["int8", "bfloat16"], help="CTranslate2 weights (default: float32)")
    p.set_defaults(run=_export)

    p = verbs.add_parser("import", help="make a checkpoint of a local Hugging Face Marian folder (e.g. OPUS-MT)")
    p.add_argument("--from", dest="source_format", required=True, choices=["huggingface"],
                   help="the folder's format: config.json, model.safetensors, source.spm, target.spm, vocab.json")
    p.add_argument("directory", metavar="DIR", help="the model folder (nothing is downloaded)")
    p.add_argument("--out", required=True, help="the checkpoint to write (must not exist, or be empty)")
    p.set_defaults(run=_import)

    p = verbs.add_parser("average", help="average the last N checkpoints of a run (§6.1)")
    p.add_argument("run_dir")
    p.add_argument("--last", type=int, default=5)
    p.add_argument("--out", help="default: RUN_DIR/checkpoints/average")
    p.set_defaults(run=_average)

    p = verbs.add_parser("plot", help="draw a run's loss, learning rate and BLEU curves to a PNG")
    p.add_argument("run_dir")
    p.add_argument("--out", help="default: RUN_DIR/curves.png")
    p.set_defaults(run=_plot)

    p = verbs.add_parser("params", help="print the parameter count of a preset, per component")
    p.add_argument("--preset", default="base", choices=sorted(ModelConfig.PRESETS))
    p.add_argument("--vocab-size", type=int, default=37000, help="shared vocabulary size (paper: 37000 BPE)")
    p.set_defaults(run=_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from aiayn.checkpoint import CheckpointError
    from aiayn.data.corpus import CorpusError
    from aiayn.interop.common import InteropError
    from aiayn.training.trainer import TrainingDiverged

    try:
        return args.run(args)
    except (CorpusError, CheckpointError, TrainingDiverged, FileExistsError) as error:
        print(f"aiayn {args.verb}: error: {error}", file=sys.stderr)
        return 1
    except InteropError as error:  # bad input: status 2, as usage errors
        print(f"aiayn {args.verb}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
