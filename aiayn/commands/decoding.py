"""Using a translator: translate, evaluate, attention (translators and ViTs) and serve."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from aiayn.commands.options import (PICTURES, POSITIVE, add_decoding_arguments, add_ensemble_argument,
                                    add_moses_text_argument, add_sampling_arguments, add_weights_arguments,
                                    number, output_file, read_input)
from aiayn.errors import InputError

if TYPE_CHECKING:
    from aiayn.decoding.translator import Translator
    from aiayn.evaluation.bleu import Score


def add_translate(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("translate", help="translate raw text, one sentence a line (stdin or --input)")
    add_decoding_arguments(p)
    add_ensemble_argument(p)
    p.add_argument("--input", help="file to translate (default: stdin)")
    p.add_argument("--output", help="file to write (default: stdout)")
    p.add_argument("--n-best", type=POSITIVE, default=1, help="write the N best as 'line ||| text ||| score'")
    p.add_argument("--no-repeat-ngram-size", type=number(int, 0), default=0)
    add_sampling_arguments(p)
    p.set_defaults(run=_translate)


def add_evaluate(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("evaluate", help="translate a test set and score it (sacreBLEU, chrF, tokenised BLEU)")
    add_decoding_arguments(p)
    add_ensemble_argument(p)
    p.add_argument("--src", required=True)
    p.add_argument("--ref", required=True)
    p.add_argument("--hyp", help="also write the translations to this file")
    p.add_argument("--lang", help="target language for the Moses tokeniser (default: the checkpoint's)")
    p.add_argument("--alphas", nargs="+", type=number(float, 0.0, 10.0), metavar="ALPHA",
                   help="score each length penalty in turn and name the best: choose alpha on a validation set")
    p.add_argument("--min-brevity-penalty", type=number(float, 0.0, 1.0), metavar="BP",
                   help="with --alphas: the best among the alphas whose brevity penalty reaches BP "
                   "(none reaching it: the one with the highest BP)")
    p.add_argument("--compound-split-bleu", action="store_true",
                   help="also the paper's WMT14 BLEU: Moses' unicode punctuation replaced, Moses-tokenised, "
                   "cased, hyphenated compounds split")
    p.set_defaults(run=_evaluate)


def add_attention(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("attention", help="draw attention maps of a sentence as a PNG")
    add_decoding_arguments(p)
    p.add_argument("--src", help="source sentence (translators)")
    p.add_argument("--tgt", help="target sentence (default: the model's translation)")
    p.add_argument("--image", type=number(int, 0), default=0, help="test image (Vision Transformers)")
    p.add_argument("--out", required=True, help="PNG file")
    p.add_argument("--kind", default="cross", choices=["cross", "encoder", "decoder"])
    p.add_argument("--layer", type=int, default=-1, help="layer (negative counts from the last)")
    p.add_argument("--head", type=int, help="one head, counted from 0 (default: the average over heads)")
    p.add_argument("--all-heads", action="store_true", help="a grid of every layer and head")
    p.set_defaults(run=_attention)


def add_serve(verbs: argparse._SubParsersAction) -> None:
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
    add_moses_text_argument(p)
    add_weights_arguments(p)
    p.set_defaults(run=_serve)


def _check_weights(args: argparse.Namespace) -> None:
    if args.int8 and args.device != "cpu":
        raise InputError("--int8 runs on the CPU only (give --device cpu, or --bf16 for a GPU)")


def _translator(args: argparse.Namespace):
    from aiayn.decoding.translator import Translator
    from aiayn.runtime import check_device

    check_device(args.device)
    _check_weights(args)
    options = dict(device=args.device, announce=True, bf16=args.bf16, int8=args.int8, moses_text=args.moses_text)
    if getattr(args, "ensemble", None):
        return Translator.ensemble([args.checkpoint, *args.ensemble], **options)
    return Translator.from_checkpoint(args.checkpoint, **options)


def _translate(args: argparse.Namespace) -> int:
    from aiayn.checkpoint import resolve_checkpoint
    from aiayn.decoding.search import Sampling
    from aiayn.files import write_output

    output = output_file(args.output, "--output", (args.input,))
    for checkpoint in [args.checkpoint, *(args.ensemble or [])]:  # a wrong one is reported before stdin is waited for
        resolve_checkpoint(checkpoint)
    lines = read_input(args.input)
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
    from aiayn.evaluation.bleu import bleu, chrf, compound_split_bleu, tokenized_lowercased_bleu
    from aiayn.files import write_output

    hyp = output_file(args.hyp, "--hyp", (args.src, args.ref))
    sources, references = read_parallel(args.src, args.ref)
    if not sources:
        raise InputError(f"{args.src}: empty test set")
    if args.alphas and args.beam == 1:
        raise InputError("--alphas: greedy decoding (--beam 1) has no length penalty to choose")
    if args.min_brevity_penalty is not None and not args.alphas:
        raise InputError("--min-brevity-penalty: it constrains the choice among --alphas; give --alphas")
    translator = _translator(args)
    if args.alphas:
        args.alpha, hypotheses = _best_alpha(translator, sources, references, args)
    else:
        hypotheses = translator.translate(sources, args.beam, args.alpha, args.batch_tokens, progress=True)
    if hyp:
        write_output(hyp, "".join(h + "\n" for h in hypotheses))
    lang = args.lang or (translator.config.get("languages") or {}).get("target") or "en"
    decoding = "greedy" if args.beam == 1 else f"beam {args.beam}, alpha {args.alpha}"
    print(f"{len(hypotheses)} sentences, {decoding}")
    lowercase = translator.tokenizer.lowercases  # a lowercasing model is scored case-insensitively (case:lc)
    for label, score in (("sacreBLEU", bleu(hypotheses, references, lowercase)),
                         ("chrF", chrf(hypotheses, references, lowercase))):
        print(f"{label:<10} {score.text}\n{'':<10} signature {score.signature}")
    tokenized = tokenized_lowercased_bleu(hypotheses, references, lang)
    print(f"BLEU {tokenized.score:.2f} on Moses-tokenised, lowercased text (as in Multi30k papers; "
          f"not comparable with sacreBLEU)")
    if args.compound_split_bleu:
        split = compound_split_bleu(hypotheses, references, lang)
        print(f"BLEU {split.score:.2f} on Moses-tokenised text with hyphenated compounds split (the paper's "
              f"WMT14 figures; not comparable with sacreBLEU)")
    return 0


def _best_alpha(translator: Translator, sources: list[str], references: list[str],
                args: argparse.Namespace) -> tuple[float, list[str]]:
    """The length penalty of `args.alphas` with the highest sacreBLEU on this set (among those whose
    brevity penalty reaches `args.min_brevity_penalty`, when given), and its translations; each
    one's score and brevity penalty printed (§6.1 chose alpha on the development set). The scores
    printed after it are of the alpha tuned on this same set."""
    from aiayn.evaluation.bleu import bleu, choose_alpha

    scored: dict[float, Score] = {}
    translations: dict[float, list[str]] = {}
    for alpha in dict.fromkeys(args.alphas):
        translations[alpha] = translator.translate(sources, args.beam, alpha, args.batch_tokens)
        scored[alpha] = bleu(translations[alpha], references, translator.tokenizer.lowercases)
        print(f"alpha {alpha:<5g} {scored[alpha].text}")
    alpha = choose_alpha(scored, args.min_brevity_penalty)
    print(f"best alpha on {args.src}: {alpha:g}{_alpha_rule(scored[alpha], args.min_brevity_penalty)}; the scores "
          "below are tuned on this set (choose alpha on a validation set, never on the test set)")
    return alpha, translations[alpha]


def _alpha_rule(chosen: Score, floor: float | None) -> str:
    """How the chosen alpha was chosen, when a brevity-penalty floor was given."""
    if floor is None:
        return ""
    if chosen.brevity_penalty >= floor:
        return f" (the highest BLEU with brevity penalty >= {floor:g})"
    return f" (no alpha reaches brevity penalty {floor:g}: the one with the highest)"


def _attention(args: argparse.Namespace) -> int:
    from aiayn.checkpoint import kind_of
    from aiayn.kinds import kinds_with

    out = output_file(args.out, "--out", suffixes=PICTURES)
    kind = kind_of(args.checkpoint)  # the registry (aiayn.kinds) names each kind's drawer
    if not kind.attention:
        raise InputError(f"{args.checkpoint}: a {kind.name} checkpoint; aiayn attention draws "
                         f"{', '.join(kinds_with('attention'))} ones")
    return kind.part("attention")(args, out)


def text_attention(args: argparse.Namespace, out: Path) -> int:
    """aiayn attention for a translator: the maps of --src and its translation (or --tgt)."""
    from aiayn.checkpoint import model_config_of, read_config, resolve_checkpoint
    from aiayn.evaluation.attention_plot import check_map_choice, draw_all_heads, draw_attention

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


def image_attention(args: argparse.Namespace, out: Path) -> int:
    """aiayn attention for a Vision Transformer: the class token's attention over test image --image."""
    from aiayn.family.vit import Digits, draw_class_token_attention, load_vit

    if args.moses_text:
        raise InputError("--moses-text: a Vision Transformer reads images, not text")
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


def _serve(args: argparse.Namespace) -> int:
    from aiayn.runtime import check_device
    from aiayn.serving.app import ServiceLimits, check_address, serve

    check_device(args.device)
    _check_weights(args)
    check_address(args.host, args.port)
    limits = ServiceLimits(max_body_bytes=args.max_body_bytes, decode_timeout_s=args.timeout)
    serve(args.checkpoint, args.host, args.port, 0.0 if args.no_batching else args.max_wait_ms,
          0 if args.no_batching else args.max_batch_tokens, args.device, args.bf16, limits, args.int8, args.moses_text)
    return 0
