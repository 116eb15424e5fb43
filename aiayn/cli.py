"""The `aiayn` command line: it parses arguments and dispatches to the package; no work is done here."""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Callable
from pathlib import Path

from aiayn.errors import InputError
from aiayn.model.config import BERT_MASKED, MOST_MASKED, POOLINGS, ModelConfig
from aiayn.training.schedule import DECAYS


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2), like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def number(kind: type, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None) -> Callable[[str], float]:
    """An argparse type: an int or float within bounds (`above` is an exclusive lower bound)."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is below the minimum of {minimum}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"{text} must be above {above}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{text} is above the maximum of {maximum}")
        return value
    return parse


POSITIVE = number(int, minimum=1)
MOST_LAYERS = 48  # --layers: far deeper than trains on one machine here; a typo should not build thousands
SEED = number(int, 0, 2**32 - 1)
FRACTION = number(float, minimum=0.0, maximum=0.999)


def _output_file(path: str | None, flag: str, inputs: tuple[str | None, ...] = (),
                 suffixes: tuple[str, ...] = ()) -> Path | None:
    """Check an output file's place before any work: its folder exists, it is not a folder, not
    one of the command's inputs, and (for pictures) of a kind that can be written."""
    if path is None:
        return None
    out = Path(path)
    if out.is_dir():
        raise InputError(f"{flag} {out}: is a folder, not a file")
    if not out.parent.is_dir():
        raise InputError(f"{flag} {out}: folder {out.parent} does not exist")
    for given in filter(None, inputs):
        if out.exists() and Path(given).exists() and out.samefile(given):
            raise InputError(f"{flag} {out}: is also an input of this command; it would be overwritten")
    if suffixes and out.suffix.lower() not in suffixes:
        raise InputError(f"{flag} {out}: write a {', '.join(suffixes)} file")
    return out


PICTURES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def _params(args: argparse.Namespace) -> int:
    import torch

    from aiayn.model import Transformer, parameter_counts

    config = ModelConfig.preset(args.preset, vocab_size=args.vocab_size)
    with torch.device("meta"):  # shapes only: no memory, whatever the size
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


RAW_CORPUS_FLAGS = {"train_src": "--train-src", "train_tgt": "--train-tgt", "valid_src": "--valid-src",
                    "valid_tgt": "--valid-tgt", "vocab_size": "--vocab-size", "max_length": "--max-length",
                    "sample_sentences": "--sample-sentences", "multi30k": "--multi30k"}


def _train(args: argparse.Namespace) -> int:
    from aiayn.runtime import check_device
    from aiayn.training.trainer import TrainConfig, train

    check_device(args.device)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
              if getattr(args, f.name, None) is not None}
    values["time_budget_s"] = args.time_budget * 60 if args.time_budget else None
    if args.resume:
        stopping = {k: values.get(k) for k in ("max_steps", "max_epochs", "time_budget_s")}
        config = TrainConfig(**stopping) if any(stopping.values()) else None
        train(args.resume, config=config, resume=True, data=args.data)
        return 0
    if args.data:
        given = [flag for name, flag in RAW_CORPUS_FLAGS.items() if getattr(args, name, None) is not None]
        if given:
            raise InputError(f"{given[0]} belongs to `aiayn prepare` (or to training from raw files): "
                             f"--data {args.data} is already prepared")
    elif args.multi30k:
        from aiayn.data.multi30k import split_path

        src_lang, _, tgt_lang = args.multi30k.partition("-")
        values.update(source_lang=src_lang, target_lang=tgt_lang,
                      train_src=str(split_path("train", src_lang, args.data_dir)),
                      train_tgt=str(split_path("train", tgt_lang, args.data_dir)),
                      valid_src=str(split_path("val", src_lang, args.data_dir)),
                      valid_tgt=str(split_path("val", tgt_lang, args.data_dir)))
    elif not (args.train_src and args.train_tgt):
        raise InputError("no training data: give --data DATA (see aiayn prepare), --train-src and --train-tgt, "
                         "or --multi30k SRC-TGT")
    overrides = {k: v for k, v in dict(dropout=args.dropout, positional_encoding=args.positional_encoding,
                                       norm_placement=args.norm_placement).items() if v is not None}
    config = TrainConfig(**values)  # checks the numbers before anything is read or written
    train(args.out, ModelConfig.preset(args.preset, **overrides), config, overwrite=args.overwrite,
          workers=args.workers)
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from aiayn.data.prepared import PrepareOptions, prepare

    if not (args.train_src and args.train_tgt):
        raise InputError("give the corpus: --train-src and --train-tgt")
    defaults = PrepareOptions()
    options = PrepareOptions(args.vocab_size or defaults.vocab_size, args.max_length or defaults.max_length,
                             args.sample_sentences or defaults.sample_sentences, args.seed, args.workers)
    prepare(args.out, args.train_src, args.train_tgt, args.valid_src, args.valid_tgt, options, args.overwrite)
    return 0


def _average(args: argparse.Namespace) -> int:
    from aiayn.checkpoint import AVERAGE_DIR, average_checkpoints, is_checkpoint, step_checkpoints
    from aiayn.files import check_output_dir

    paths = step_checkpoints(Path(args.run_dir))[-args.last:]
    if not paths:
        raise InputError(f"{args.run_dir}: no step checkpoints to average (is it a training run?)")
    if args.out:  # the user's folder: only a new, empty, or (with --overwrite) checkpoint folder
        out = Path(args.out)
        check_output_dir(out, "checkpoint", is_checkpoint, args.overwrite)
    else:  # the run's own checkpoints/average, which re-averaging replaces
        out = Path(args.run_dir) / "checkpoints" / AVERAGE_DIR
    if len(paths) < args.last:
        print(f"note: {args.run_dir} has {len(paths)} checkpoints, fewer than --last {args.last}", file=sys.stderr)
    print(f"averaged {', '.join(p.name for p in paths)} into {average_checkpoints(paths, out)}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from aiayn.evaluation.plots import plot_run

    print(plot_run(args.run_dir, _output_file(args.out, "--out", suffixes=PICTURES)))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from aiayn.demo import run_demo

    run_demo(args.out, minutes=args.minutes, seed=args.seed, overwrite=args.overwrite)
    return 0


def _check_weights(args: argparse.Namespace) -> None:
    if args.int8 and args.device != "cpu":
        raise InputError("--int8 runs on the CPU only (give --device cpu, or --bf16 for a GPU)")


def _translator(args: argparse.Namespace):
    from aiayn.decoding.translator import Translator
    from aiayn.runtime import check_device

    check_device(args.device)
    _check_weights(args)
    return Translator.from_checkpoint(args.checkpoint, device=args.device, announce=True, bf16=args.bf16,
                                      int8=args.int8)


def _read_input(path: str | None) -> list[str]:
    from aiayn.data.corpus import decode_lines, read_lines

    return read_lines(path) if path else decode_lines(sys.stdin.buffer, "<stdin>")


def _translate(args: argparse.Namespace) -> int:
    from aiayn.checkpoint import resolve_checkpoint
    from aiayn.decoding.search import Sampling
    from aiayn.files import write_output

    output = _output_file(args.output, "--output", (args.input,))
    resolve_checkpoint(args.checkpoint)  # a wrong --checkpoint is reported before stdin is waited for
    lines = _read_input(args.input)
    translator = _translator(args)
    sampling = (Sampling(args.temperature, args.top_k, args.top_p, args.seed) if args.sample else None)
    progress = bool(args.input) or not sys.stdin.isatty()
    if args.n_best > 1:
        found = translator.translate_n_best(lines, args.n_best, max(args.beam, args.n_best), args.alpha, args.batch_tokens)
        out_lines = [f"{i} ||| {text} ||| {score:.4f}" for i, hyps in enumerate(found) for text, score in hyps]
    else:
        out_lines = translator.translate(lines, 1 if sampling else args.beam, args.alpha, args.batch_tokens,
                                         args.no_repeat_ngram_size, sampling, progress=progress)
    text = "".join(line + "\n" for line in out_lines)
    if output:
        write_output(output, text)
    else:
        sys.stdout.write(text)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from aiayn.data.corpus import read_parallel
    from aiayn.evaluation.bleu import bleu, chrf, tokenized_lowercased_bleu
    from aiayn.files import write_output

    hyp = _output_file(args.hyp, "--hyp", (args.src, args.ref))
    sources, references = read_parallel(args.src, args.ref)
    if not sources:
        raise InputError(f"{args.src}: empty test set")
    translator = _translator(args)
    hypotheses = translator.translate(sources, args.beam, args.alpha, args.batch_tokens, progress=True)
    if hyp:
        write_output(hyp, "".join(h + "\n" for h in hypotheses))
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
    from aiayn.checkpoint import model_config_of, read_config, resolve_checkpoint
    from aiayn.evaluation.attention_plot import check_map_choice, draw_all_heads, draw_attention
    from aiayn.family.store import TRANSLATOR, kind_of
    from aiayn.family.vit import VIT

    out = _output_file(args.out, "--out", suffixes=PICTURES)
    kind = kind_of(args.checkpoint)
    if kind == VIT:
        return _image_attention(args, out)
    if kind != TRANSLATOR:
        raise InputError(f"{args.checkpoint}: a {kind} checkpoint; aiayn attention draws translators and ViTs")
    if args.src is None:
        raise InputError("--src: give the source sentence whose attention to draw")
    directory = resolve_checkpoint(args.checkpoint)
    check_map_choice(model_config_of(read_config(directory), directory / "config.json"), args.kind, args.layer, args.head)
    translator = _translator(args)
    result = translator.attention(args.src, args.tgt, beam=args.beam)
    print(f"{args.src}\n-> {result.translation}")
    if args.all_heads:
        path = draw_all_heads(result, out, args.kind)
    else:
        path = draw_attention(result, out, args.kind, args.layer, args.head)
    print(f"wrote {path}")
    return 0


def _image_attention(args: argparse.Namespace, out: Path) -> int:
    from aiayn.family.vit import Digits, draw_class_token_attention, load_vit

    model = load_vit(args.checkpoint, announce=True)
    digits = Digits.load()
    if not 0 <= args.image < len(digits.test_labels):
        raise InputError(f"--image {args.image}: the test split has images 0..{len(digits.test_labels) - 1}")
    n_layers = len(model.encoder.layers)
    if not -n_layers <= args.layer < n_layers:
        raise InputError(f"--layer {args.layer}: the model has layers 0..{n_layers - 1}")
    label = int(digits.test_labels[args.image])
    print(f"wrote {draw_class_token_attention(model, digits.test_images[args.image], label, out, args.layer)}")
    return 0


def _family_schedule(args: argparse.Namespace):
    from aiayn.family.loop import Schedule

    if getattr(args, "average_last", 1) > 1 and getattr(args, "valid", "") is None:  # before any data is read
        raise InputError(f"--average-last {args.average_last}: nothing is validated to average (give --valid)")
    return Schedule(max_steps=args.max_steps, time_budget_s=args.time_budget * 60 if args.time_budget else None,
                    warmup_steps=args.warmup, lr_scale=args.lr_scale, decay=args.decay, eval_every=args.eval_every,
                    average_last=getattr(args, "average_last", 1), log_every=args.log_every, bf16=args.bf16,
                    seed=args.seed, device=args.device)


def _family_config(args: argparse.Namespace, **defaults) -> ModelConfig:
    layers = getattr(args, "layers", None)  # each descendant keeps its own stack and empties the other
    overrides = {k: v for k, v in dict(dropout=args.dropout, n_encoder_layers=layers, n_decoder_layers=layers).items()
                 if v is not None}
    return ModelConfig.preset(getattr(args, "preset", "tiny"), **{**defaults, **overrides})


def _pretrain_mlm(args: argparse.Namespace) -> int:
    from aiayn.family.classifier import TextForm, pretrain_mlm, read_text

    schedule, config = _family_schedule(args), _family_config(args)
    form = TextForm(args.max_length, args.lowercase)
    outcome = pretrain_mlm(read_text(args.text), Path(args.out), config, schedule, args.vocab_size, form,
                           args.batch_tokens, args.overwrite, args.mask_rate, args.pack)
    print(f"pre-trained {outcome.steps} steps in {outcome.seconds / 60:.1f} min; wrote {args.out}")
    return 0


def _train_classifier(args: argparse.Namespace) -> int:
    from aiayn.family.classifier import TextForm, read_labelled, train_classifier

    if args.init and args.layers:
        raise InputError("--layers: not used with --init (the pre-trained checkpoint's depth is kept)")
    schedule, config = _family_schedule(args), _family_config(args)
    train, valid = read_labelled(args.train), read_labelled(args.valid) if args.valid else None
    names = [name.strip() for name in args.label_names.split(",")] if args.label_names else None
    _, accuracy = train_classifier(train, valid, Path(args.out), config, schedule, args.init, names, args.vocab_size,
                                   TextForm(args.max_length, args.lowercase), args.batch_tokens, args.overwrite,
                                   pooling=args.pooling)
    print(f"wrote {args.out}" + (f"; validation accuracy {100 * accuracy:.2f}%" if accuracy is not None else ""))
    return 0


def _classify(args: argparse.Namespace) -> int:
    from aiayn.family.classifier import TextClassifier
    from aiayn.runtime import check_device

    check_device(args.device)
    classifier = TextClassifier.from_checkpoint(args.checkpoint, args.device, announce=True)
    texts = args.texts or _read_input(None)
    sys.stdout.write("".join(f"{label}\t{score:.4f}\n" for label, score in classifier.classify(texts)))
    return 0


def _train_lm(args: argparse.Namespace) -> int:
    from aiayn.family.classifier import read_text
    from aiayn.family.lm import train_lm

    schedule, config = _family_schedule(args), _family_config(args)
    valid = read_text(args.valid) if args.valid else None
    _, ppl = train_lm(read_text(args.text), valid, Path(args.out), config, schedule, args.vocab_size,
                      args.max_length, args.batch_tokens, args.overwrite)
    print(f"wrote {args.out}" + (f"; validation perplexity {ppl:.2f}" if ppl is not None else ""))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from aiayn.decoding.search import Sampling
    from aiayn.family.lm import TextGenerator
    from aiayn.runtime import check_device

    if args.n > 1 and not args.sample:
        raise InputError(f"--n {args.n} without --sample: the most probable continuation is the same every time")
    check_device(args.device)
    generator = TextGenerator.from_checkpoint(args.checkpoint, args.device, announce=True)
    sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed) if args.sample else None
    for _ in range(args.n):
        print(generator.generate(args.prompt, args.max_new_tokens, sampling))
    return 0


def _train_vit(args: argparse.Namespace) -> int:
    from aiayn.family.vit import train_vit

    schedule = _family_schedule(args)
    config = _family_config(args, **VIT_MODEL)
    _, accuracy = train_vit(Path(args.out), config, schedule, overwrite=args.overwrite)
    print(f"wrote {args.out}; test accuracy {100 * accuracy:.2f}%")
    return 0


# ViT on 8 x 8 digits: a small encoder, pre-norm as in the ViT paper.
VIT_MODEL = dict(d_model=64, n_heads=4, d_ff=128, n_encoder_layers=4, n_decoder_layers=0, dropout=0.1,
                 norm_placement="pre")


def _serve(args: argparse.Namespace) -> int:
    from aiayn.runtime import check_device
    from aiayn.serving.app import ServiceLimits, check_address, serve

    check_device(args.device)
    _check_weights(args)
    check_address(args.host, args.port)
    limits = ServiceLimits(max_body_bytes=args.max_body_bytes, decode_timeout_s=args.timeout)
    serve(args.checkpoint, args.host, args.port, 0.0 if args.no_batching else args.max_wait_ms,
          0 if args.no_batching else args.max_batch_tokens, args.device, args.bf16, limits, args.int8)
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
    p.add_argument("--beam", type=POSITIVE, default=beam, help="beam size (§6.1: 4); 1 = greedy")
    p.add_argument("--alpha", type=number(float, 0.0, 10.0), default=0.6, help="GNMT length penalty ((5+|Y|)/6)^alpha")
    p.add_argument("--batch-tokens", type=POSITIVE,
                   help="decoding batch size in tokens x beams (8,000 on a CPU, 262,144 on a GPU)")
    p.add_argument("--device", default="cpu")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--bf16", action="store_true", help="bfloat16 weights (faster on CPUs with avx512_bf16, GPUs)")
    weights.add_argument("--int8", action="store_true", help="int8 linear layers, quantised dynamically (CPU)")


def _add_corpus_arguments(data: argparse._ArgumentGroup) -> None:
    """Raw parallel files and how to prepare them (aiayn.data.prepared): for `prepare` and `train`."""
    data.add_argument("--train-src", dest="train_src", help="source side, one sentence a line (plain or .gz)")
    data.add_argument("--train-tgt", dest="train_tgt", help="target side, line-aligned with the source")
    data.add_argument("--valid-src", dest="valid_src")
    data.add_argument("--valid-tgt", dest="valid_tgt")
    data.add_argument("--vocab-size", dest="vocab_size", type=POSITIVE, help="shared BPE vocabulary size (8000)")
    data.add_argument("--max-length", dest="max_length", type=POSITIVE,
                      help="skip pairs with a side longer than this many subwords (250)")
    data.add_argument("--sample-sentences", dest="sample_sentences", type=POSITIVE,
                      help="learn the vocabulary on a random sample of this many sentences (1,000,000)")
    data.add_argument("--workers", type=POSITIVE,
                      help="processes that encode the corpus (default: the CPUs; none for a small corpus)")


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data (prepared, or raw files prepared into RUN/data)")
    data.add_argument("--data", help="a folder made by `aiayn prepare` (with --resume: where the run's data moved)")
    data.add_argument("--multi30k", metavar="SRC-TGT", help="Multi30k language pair, e.g. de-en (train + val splits)")
    data.add_argument("--data-dir", help="local copy of the Multi30k raw files (default: download once to the cache)")
    data.add_argument("--source-lang", dest="source_lang", help="language codes, kept in the checkpoints (e.g. de)")
    data.add_argument("--target-lang", dest="target_lang")
    _add_corpus_arguments(data)
    model = p.add_argument_group("model")
    model.add_argument("--preset", default="small", choices=sorted(ModelConfig.PRESETS))
    model.add_argument("--dropout", type=FRACTION)
    model.add_argument("--positional-encoding", choices=["sinusoidal", "learned"])
    model.add_argument("--norm-placement", choices=["post", "pre"])
    opt = p.add_argument_group("optimisation (§5.3, §5.4)")
    opt.add_argument("--batch-tokens", dest="batch_tokens", type=POSITIVE, default=8000,
                     help="source+target tokens per batch")
    opt.add_argument("--batch-widths", dest="batch_widths", type=POSITIVE,
                     help="(source, target) lengths batches are padded to, chosen from the corpus (20): "
                          "at most twice as many batch shapes")
    opt.add_argument("--accumulate", type=POSITIVE, default=1, help="batches per optimizer step")
    opt.add_argument("--label-smoothing", dest="label_smoothing", type=FRACTION, default=0.1)
    opt.add_argument("--warmup", dest="warmup_steps", type=POSITIVE, default=4000)
    opt.add_argument("--lr-scale", dest="lr_scale", type=number(float, above=0.0), default=1.0,
                     help="factor on the §5.3 learning rate")
    opt.add_argument("--adam-beta1", dest="adam_beta1", type=FRACTION, default=0.9)
    opt.add_argument("--adam-beta2", dest="adam_beta2", type=FRACTION, default=0.98)
    opt.add_argument("--adam-eps", dest="adam_eps", type=number(float, above=0.0), default=1e-9)
    opt.add_argument("--clip-norm", dest="clip_norm", type=number(float, 0.0), default=0.0, help="0 = no clipping")
    opt.add_argument("--seed", type=SEED, default=1)
    stop = p.add_argument_group("stopping, validation, checkpoints")
    stop.add_argument("--max-steps", dest="max_steps", type=POSITIVE)
    stop.add_argument("--max-epochs", dest="max_epochs", type=POSITIVE)
    stop.add_argument("--time-budget", type=number(float, above=0.0), help="minutes of training steps")
    stop.add_argument("--eval-every", dest="eval_every", type=POSITIVE, default=500)
    stop.add_argument("--bleu-sentences", dest="bleu_sentences", type=POSITIVE,
                      help="validate BLEU on the first N sentences")
    stop.add_argument("--valid-share", dest="valid_share", type=number(float, above=0.0, maximum=1.0),
                      help="skip scheduled validations while they have taken more than this share of the "
                           "training time (0.05); the last step always validates")
    stop.add_argument("--save-every", dest="save_every", type=POSITIVE, default=500)
    stop.add_argument("--keep-last", dest="keep_last", type=POSITIVE, default=5)
    stop.add_argument("--log-every", dest="log_every", type=POSITIVE, default=10)
    device = p.add_argument_group("device")
    device.add_argument("--device", default="cpu")
    device.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPUs with avx512_bf16, GPUs)")
    device.add_argument("--compile", action="store_true", help="torch.compile the model")


def _add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sample", action="store_true", help="sample instead of the most probable token")
    p.add_argument("--temperature", type=number(float, 0.01, 100.0), default=1.0)
    p.add_argument("--top-k", type=number(int, 0), default=0)
    p.add_argument("--top-p", type=number(float, above=0.0, maximum=1.0), default=1.0)
    p.add_argument("--seed", type=SEED)


def _add_family_arguments(p: argparse.ArgumentParser, preset: str | None, batch_tokens: int = 4000, text: bool = True,
                          warmup: int = 400, lr_scale: float = 1.0, validates: bool = True) -> None:
    """What every descendant's training takes (aiayn.family.loop); `validates`: the verb can validate."""
    p.add_argument("--out", required=True, help="checkpoint folder to write (new or empty; --overwrite replaces one)")
    p.add_argument("--overwrite", action="store_true")
    if preset is not None:  # the ViT has one size of its own
        p.add_argument("--preset", default=preset, choices=sorted(ModelConfig.PRESETS))
        p.add_argument("--layers", type=number(int, 1, MOST_LAYERS), help="layers in the stack (default: the preset's)")
    p.add_argument("--dropout", type=FRACTION)
    if text:
        p.add_argument("--vocab-size", type=POSITIVE, default=8000)
        p.add_argument("--max-length", type=number(int, 3), default=128, help="subwords a sentence is cut to")
        p.add_argument("--batch-tokens", type=POSITIVE, default=batch_tokens)
    p.add_argument("--max-steps", type=POSITIVE)
    p.add_argument("--time-budget", type=number(float, above=0.0), help="minutes of training steps")
    p.add_argument("--warmup", type=POSITIVE, default=warmup)
    p.add_argument("--lr-scale", type=number(float, above=0.0), default=lr_scale)
    p.add_argument("--decay", choices=DECAYS, default="inverse-sqrt",
                   help="the rate: §5.3's (warm-up, then 1/sqrt(step)), or 'linear': the same warm-up times the "
                   "fraction of the budget left, BERT's linear decay to 0 at the end of --max-steps or --time-budget "
                   "(whichever is more spent; with a time budget the rates depend on the machine's speed)")
    p.add_argument("--eval-every", type=POSITIVE, default=200)
    if validates:
        p.add_argument("--average-last", type=POSITIVE, default=1,
                       help="validate the mean of the last N (at most 100) validated states (§6.1's checkpoint "
                       "averaging); the best mean is kept")
    p.add_argument("--log-every", type=POSITIVE, default=20)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    p.add_argument("--device", default="cpu", help="where the steps run (cpu, cuda, cuda:N)")
    p.add_argument("--seed", type=SEED, default=1)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aiayn", description="The Transformer of 'Attention Is All You Need'.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("demo", help="train a small English->German number-word translator (no download) and test it")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo run in --out")
    p.add_argument("--minutes", type=number(float, above=0.0), default=2.0, help="training time")
    p.add_argument("--seed", type=SEED, default=1)
    p.set_defaults(run=_demo)

    p = verbs.add_parser("prepare", help="prepare a parallel corpus of any size for training: vocabulary, token arrays")
    p.add_argument("--out", required=True, help="DATA folder to write (new or empty; --overwrite replaces prepared data)")
    _add_corpus_arguments(p.add_argument_group("corpus"))
    p.add_argument("--seed", type=SEED, default=1, help="for the vocabulary's sample")
    p.add_argument("--overwrite", action="store_true", help="replace data prepared from other inputs in --out")
    p.set_defaults(run=_prepare)

    p = verbs.add_parser("train", help="train a translator on parallel text (§5); under torchrun, data-parallel")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="new run directory")
    target.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly where it stopped")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    _add_train_arguments(p)
    p.set_defaults(run=_train)

    p = verbs.add_parser("translate", help="translate raw text, one sentence a line (stdin or --input)")
    _add_decoding_arguments(p)
    p.add_argument("--input", help="file to translate (default: stdin)")
    p.add_argument("--output", help="file to write (default: stdout)")
    p.add_argument("--n-best", type=POSITIVE, default=1, help="write the N best as 'line ||| text ||| score'")
    p.add_argument("--no-repeat-ngram-size", type=number(int, 0), default=0)
    _add_sampling_arguments(p)
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
    p.add_argument("--src", help="source sentence (translators)")
    p.add_argument("--tgt", help="target sentence (default: the model's translation)")
    p.add_argument("--image", type=number(int, 0), default=0, help="test image (Vision Transformers)")
    p.add_argument("--out", required=True, help="PNG file")
    p.add_argument("--kind", default="cross", choices=["cross", "encoder", "decoder"])
    p.add_argument("--layer", type=int, default=-1, help="layer (negative counts from the last)")
    p.add_argument("--head", type=int, help="one head, counted from 0 (default: the average over heads)")
    p.add_argument("--all-heads", action="store_true", help="a grid of every layer and head")
    p.set_defaults(run=_attention)

    p = verbs.add_parser("serve", help="serve a checkpoint over HTTP, with a web page showing the attention")
    p.add_argument("--checkpoint", required=True, help="a checkpoint, or a run directory (averaged, best or last)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=number(int, 0, 65535), default=8000)
    p.add_argument("--max-wait-ms", type=number(float, 0.0, 10_000.0), default=5.0,
                   help="how long a request waits for others to batch with")
    p.add_argument("--max-batch-tokens", type=POSITIVE, default=4000, help="source tokens in one decoding batch")
    p.add_argument("--no-batching", action="store_true", help="decode one request at a time")
    p.add_argument("--timeout", type=number(float, above=0.0, maximum=86_400.0), default=60.0,
                   help="seconds of decoding a request may take before it is cut off with an error")
    p.add_argument("--max-body-bytes", type=POSITIVE, default=2 * 1024 * 1024,
                   help="larger request bodies are refused (413) before they are parsed")
    p.add_argument("--device", default="cpu")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--bf16", action="store_true", help="bfloat16 weights (faster on CPUs with avx512_bf16, GPUs)")
    weights.add_argument("--int8", action="store_true", help="int8 linear layers, quantised dynamically (CPU)")
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

    p = verbs.add_parser("pretrain-mlm", help="pre-train an encoder as BERT does: masked-language modelling")
    p.add_argument("--text", nargs="+", required=True, help="plain or .gz text, one sentence a line (.tsv: column 1)")
    p.add_argument("--lowercase", action="store_true", help="lowercase all text (as GLUE's SST-2 is)")
    p.add_argument("--mask-rate", type=number(float, above=0.0, maximum=MOST_MASKED), default=BERT_MASKED,
                   help="share of the tokens to predict (BERT's 0.15); of those 80%% become <mask>, 10%% a random "
                   "token, 10%% stay")
    p.add_argument("--pack", type=number(int, 3), metavar="N",
                   help="several sentences to a row, [CLS] s1 </s> s2 </s> ..., at most N tokens (at most --batch-tokens; "
                   "sentences cut to --max-length first, and to N); default: one sentence a row")
    _add_family_arguments(p, preset="small", batch_tokens=4000, validates=False)
    p.set_defaults(run=_pretrain_mlm)

    p = verbs.add_parser("train-classifier", help="train a sentence classifier: the encoder, BERT's way")
    p.add_argument("--train", required=True, help="TSV whose header names a 'sentence' and a 'label' column")
    p.add_argument("--valid", help="TSV like --train; the best validation accuracy is kept")
    p.add_argument("--init", help="a pretrain-mlm checkpoint to start from: its size, vocabulary and text form are "
                   "kept (--preset, --vocab-size, --max-length and --lowercase are not used; --layers is refused)")
    p.add_argument("--label-names", help="names for the labels in sorted order, e.g. NEGATIVE,POSITIVE for 0,1")
    p.add_argument("--lowercase", action="store_true",
                   help="lowercase the text, in training and in use (with --init: as the pre-training did)")
    p.add_argument("--pooling", choices=POOLINGS, default="cls",
                   help="the sentence's vector: the [CLS] output (BERT's) or the mean output over its tokens")
    _add_family_arguments(p, preset="small", batch_tokens=4000)
    p.set_defaults(run=_train_classifier)

    p = verbs.add_parser("classify", help="label sentences with a classifier (arguments or stdin): LABEL<TAB>SCORE")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("texts", nargs="*")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=_classify)

    p = verbs.add_parser("train-lm", help="train a language model: the decoder alone, GPT's way")
    p.add_argument("--text", nargs="+", required=True, help="plain or .gz text, one sentence a line")
    p.add_argument("--valid", nargs="+", help="text for validation perplexity; the best is kept")
    _add_family_arguments(p, preset="small", batch_tokens=6000)
    p.set_defaults(run=_train_lm)

    p = verbs.add_parser("generate", help="continue a prompt with a language model")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--prompt", default="")
    p.add_argument("--max-new-tokens", type=POSITIVE, default=50)
    p.add_argument("--n", type=POSITIVE, default=1, help="how many continuations")
    _add_sampling_arguments(p)
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=_generate)

    p = verbs.add_parser("train-vit", help="train a Vision Transformer on scikit-learn's digits (no download)")
    _add_family_arguments(p, preset=None, text=False, warmup=100, lr_scale=0.3)
    p.set_defaults(run=_train_vit)

    p = verbs.add_parser("average", help="average the last N checkpoints of a run (§6.1)")
    p.add_argument("run_dir")
    p.add_argument("--last", type=POSITIVE, default=5)
    p.add_argument("--out", help="a new or empty folder (default: RUN_DIR/checkpoints/average, replaced)")
    p.add_argument("--overwrite", action="store_true", help="replace the aiayn checkpoint in --out")
    p.set_defaults(run=_average)

    p = verbs.add_parser("plot", help="draw a run's loss, learning rate and BLEU curves to a PNG")
    p.add_argument("run_dir")
    p.add_argument("--out", help="default: RUN_DIR/curves.png")
    p.set_defaults(run=_plot)

    p = verbs.add_parser("params", help="print the parameter count of a preset, per component")
    p.add_argument("--preset", default="base", choices=sorted(ModelConfig.PRESETS))
    p.add_argument("--vocab-size", type=number(int, 3, 10_000_000), default=37000,
                   help="shared vocabulary size (paper: 37000 BPE)")
    p.set_defaults(run=_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one verb. Bad input exits with status 2 and one line naming it; a diverged training run
    with status 1; Ctrl-C with 130."""
    args = build_parser().parse_args(argv)
    from aiayn.errors import TrainingDiverged
    from aiayn.runtime import bound_kernel_caches

    bound_kernel_caches()
    try:
        return args.run(args)
    except InputError as error:
        print(f"aiayn {args.verb}: error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"aiayn {args.verb}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"aiayn {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
