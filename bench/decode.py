"""Decoding speed on Multi30k test_2016_flickr (1,000 sentences, batches of 32 in file order):
aiayn beside Hugging Face MarianMTModel.generate and CTranslate2, all three running THE SAME
WEIGHTS (an aiayn checkpoint converted to Marian and to CTranslate2), greedy and beam 4; aiayn
also with its weights in bfloat16 (`--bf16`, the lever this CPU has: avx512_bf16) and in int8
(`--int8`, dynamic quantisation), CTranslate2 in float32 and int8.

Runs in the peer harness's environment (bench/peers.sh), like ../shared/bench/peers/infer.py:
the timed region is the decoding calls only (tokenisation outside), repeats interleaved
round-robin so machine noise hits every system alike, 2 threads each.

    bench/.peers/.venv/bin/python bench/decode.py --checkpoint bench/out/m30k_small

On a GPU (`--device cuda`, as bench/gpu_check.sh runs it) the batches are the translator's own
for the device (length-sorted, up to its default batch tokens; HF generate gets the same ones),
the systems aiayn and HF in float32 and bfloat16 (no int8, no CTranslate2), timed to the last
token on the host.

Length caps: aiayn stops each sentence at its source length + 50 (§6.1); HF and CTranslate2 take
one cap per batch, set to the batch's longest source + 50 (hf_beam4_cap200: 200 new tokens, as the
peer harness's infer.py runs HF). Each system uses its own length
penalty formula with alpha 0.6 (aiayn GNMT's, the others |Y|^alpha), so beam outputs may differ.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sacrebleu
import torch

from aiayn.checkpoint import resolve_checkpoint
from aiayn.data.batching import pad
from aiayn.data.corpus import read_lines
from aiayn.decoding.search import beam_search, greedy_search
from aiayn.decoding.translator import Translator, length_sorted_batches
from aiayn.interop import marian_model, write_ctranslate2

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"
GPU_SYSTEMS = ("aiayn_greedy,aiayn_beam4,aiayn_bf16_greedy,aiayn_bf16_beam4,hf_greedy,hf_beam4,hf_bf16_greedy,"
               "hf_bf16_beam4")


def ct2_worker(conn, checkpoint: str, batches: list[list[list[str]]], pieces: dict[str, int]) -> None:
    """Convert the checkpoint (float32 and int8 weights), then serve CTranslate2 decoding requests
    ((compute type, beam size)) with the outputs as ids."""
    import ctranslate2

    translator = Translator.from_checkpoint(checkpoint)
    systems = {}
    with tempfile.TemporaryDirectory() as tmp:  # CTranslate2 holds the model in memory once loaded
        for compute_type, quantization in (("float32", None), ("int8", "int8")):
            model_dir = write_ctranslate2(translator.model, translator.tokenizer, Path(tmp) / compute_type, quantization)
            systems[compute_type] = ctranslate2.Translator(str(model_dir), device="cpu", compute_type=compute_type,
                                                           intra_threads=2, inter_threads=1)
    conn.send("ready")
    while (request := conn.recv()) is not None:
        compute_type, beam = request
        out = []
        for tokens in batches:
            cap = max(map(len, tokens)) + 50
            for r in systems[compute_type].translate_batch(tokens, beam_size=beam, length_penalty=0.6,
                                                           max_batch_size=0, max_decoding_length=cap):
                out.append([pieces[t] for t in r.hypotheses[0]])
        conn.send(out)


def check_arguments(ap: argparse.ArgumentParser, a: argparse.Namespace) -> bool:
    """Bad arguments end with one line (exit 2) before any work; whether the device is a GPU."""
    from aiayn.errors import InputError
    from aiayn.runtime import check_device

    try:
        check_device(a.device)
    except InputError as error:
        ap.error(str(error))
    on_gpu = torch.device(a.device).type == "cuda"
    if a.systems == "gpu" or on_gpu and a.systems == ap.get_default("systems"):
        a.systems = GPU_SYSTEMS
    if on_gpu and ("int8" in a.systems or "ct2" in a.systems):
        ap.error("--systems: int8 and CTranslate2 run on the CPU only (give --device cpu)")
    for language in (a.src, a.tgt):
        if not (a.data / f"test_2016_flickr.{language}.gz").is_file():
            ap.error(f"--data {a.data}: no test_2016_flickr.{language}.gz there")
    for name in ("repeats", "bs"):
        if getattr(a, name) < 1:
            ap.error(f"--{name} must be at least 1")
    try:
        resolve_checkpoint(a.checkpoint)
    except InputError as error:
        ap.error(str(error))
    return on_gpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--systems", default="aiayn_greedy,aiayn_beam4,aiayn_bf16_greedy,aiayn_bf16_beam4,aiayn_int8_greedy,"
                                         "aiayn_int8_beam4,hf_greedy,hf_beam4,ct2_f32_greedy,ct2_f32_beam4,"
                                         "ct2_int8_greedy,ct2_int8_beam4")
    ap.add_argument("--out", default="bench/out/decode.json")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--translator-batches", action="store_true",
                    help="the translator's own batches for the device, as on a GPU (default there)")
    ap.add_argument("--data", type=Path, default=DATA, help="the Multi30k folder")
    ap.add_argument("--src", default="de", help="the source language (the checkpoint's)")
    ap.add_argument("--tgt", default="en")
    a = ap.parse_args()
    on_gpu = check_arguments(ap, a)
    if not on_gpu:
        torch.set_num_threads(2)
    checkpoint = resolve_checkpoint(a.checkpoint, announce=True)
    translator = Translator.from_checkpoint(checkpoint, device=a.device)
    src_text = read_lines(a.data / f"test_2016_flickr.{a.src}.gz")
    ref_text = read_lines(a.data / f"test_2016_flickr.{a.tgt}.gz")
    if a.limit:
        src_text, ref_text = src_text[: a.limit], ref_text[: a.limit]
    src_ids = translator.tokenizer.encode(src_text)
    if on_gpu or a.translator_batches:  # the translator's batches for the device (sources and references in their order)
        groups = length_sorted_batches([len(s) + 1 for s in src_ids], translator.batch_tokens, 4)
        batches = [[src_ids[i] for i in group] for group in groups]
        order = [i for group in groups for i in group]  # outputs come in this order
        src_text, ref_text = [src_text[i] for i in order], [ref_text[i] for i in order]
    else:
        batches = [src_ids[i: i + a.bs] for i in range(0, len(src_ids), a.bs)]
    c = translator.model.config  # an imported model's ids differ from aiayn's own 0/1/2
    tensors = [pad([s + [c.eos_id] for s in b], pad_id=c.pad_id).to(a.device) for b in batches]
    model = translator.model

    hf = marian_model(translator.model.cpu()).to(a.device)
    model.to(a.device)
    with torch.no_grad():
        x = tensors[0]
        tgt = torch.full((x.size(0), 5), model.config.bos_id, device=x.device)
        ours = model(x, tgt)
        theirs = hf(input_ids=x, attention_mask=x != model.config.pad_id, decoder_input_ids=tgt).logits
        print(f"conversion check: max |logit difference| aiayn vs Marian = {(ours - theirs).abs().max():.2e}", flush=True)
    # CTranslate2 runs in a process of its own: loaded beside PyTorch, its OpenMP threads slowed the
    # other systems (aiayn bf16 beam 4: 65 sent/s with CTranslate2 in the process, 109 without).
    ct2_src = [[translator.tokenizer.pieces(s + [c.eos_id]) for s in b] for b in batches]
    pieces = {p: i for i, p in enumerate(translator.tokenizer.pieces(list(range(translator.tokenizer.vocab_size))))}
    ct2_conn = None
    if "ct2" in a.systems and not on_gpu:
        ctx = multiprocessing.get_context("spawn")
        ct2_conn, child = ctx.Pipe()
        ctx.Process(target=ct2_worker, args=(child, str(checkpoint), ct2_src, pieces),
                    daemon=True).start()
        assert ct2_conn.recv() == "ready"

    bf16_model = Translator.from_checkpoint(checkpoint, device=a.device, bf16=True).model
    int8_model = None if on_gpu else Translator.from_checkpoint(checkpoint, int8=True).model
    hf_bf16 = marian_model(translator.model.cpu()).to(a.device, torch.bfloat16) if "hf_bf16" in a.systems else None
    model.to(a.device)

    def run_aiayn(beam: int, network=model) -> list[list[int]]:
        out = []
        for src in tensors:
            if beam == 1:
                out += greedy_search(network, src)
            else:
                out += [h[0].tokens for h in beam_search(network, src, beam_size=beam, alpha=0.6)]
        return out

    def run_hf(beam: int, fixed_cap: int | None = None, network=hf) -> list[list[int]]:
        out = []
        c = model.config
        with torch.inference_mode():
            for src in tensors:
                cap = fixed_cap or int((src != c.pad_id).sum(1).max()) + 50
                generated = network.generate(input_ids=src, attention_mask=src != c.pad_id, num_beams=beam, do_sample=False,
                                        length_penalty=0.6, max_new_tokens=cap, early_stopping=beam > 1,
                                        suppress_tokens=[c.pad_id, c.bos_id], decoder_start_token_id=c.bos_id,
                                        eos_token_id=c.eos_id, pad_token_id=c.pad_id)
                out += [[t for t in row[1:] if t not in (c.pad_id, c.eos_id)] for row in generated.tolist()]
        return out

    def run_ct2(compute_type: str, beam: int) -> list[list[int]]:
        ct2_conn.send((compute_type, beam))
        return ct2_conn.recv()

    systems = {"aiayn_greedy": lambda: run_aiayn(1), "aiayn_beam4": lambda: run_aiayn(4),
               "aiayn_bf16_greedy": lambda: run_aiayn(1, bf16_model), "aiayn_bf16_beam4": lambda: run_aiayn(4, bf16_model),
               "aiayn_int8_greedy": lambda: run_aiayn(1, int8_model), "aiayn_int8_beam4": lambda: run_aiayn(4, int8_model),
               "hf_greedy": lambda: run_hf(1), "hf_beam4": lambda: run_hf(4),
               "hf_bf16_greedy": lambda: run_hf(1, network=hf_bf16), "hf_bf16_beam4": lambda: run_hf(4, network=hf_bf16),
               "hf_beam4_cap200": lambda: run_hf(4, 200),  # as ../shared/bench/peers/infer.py runs it
               "ct2_f32_greedy": lambda: run_ct2("float32", 1), "ct2_f32_beam4": lambda: run_ct2("float32", 4),
               "ct2_int8_greedy": lambda: run_ct2("int8", 1), "ct2_int8_beam4": lambda: run_ct2("int8", 4)}
    names = a.systems.split(",")
    times: dict[str, list[float]] = {n: [] for n in names}
    outputs: dict[str, list[list[int]]] = {}
    for r in range(a.repeats):
        for n in names:
            t = time.perf_counter()
            outputs[n] = systems[n]()
            times[n].append(time.perf_counter() - t)
            print(f"round {r} {n}: {times[n][-1]:.2f}s", flush=True)

    if ct2_conn is not None:
        ct2_conn.send(None)
    result = {"checkpoint": str(checkpoint), "n_sent": len(src_text), "device": a.device,
              "batch": "the translator's for the device" if on_gpu else a.bs, "threads": None if on_gpu else 2,
              "systems": {}}
    for n in names:
        hyp = translator.tokenizer.decode(outputs[n])
        median = statistics.median(times[n])
        result["systems"][n] = dict(wall_s_median=round(median, 3), runs=[round(x, 3) for x in times[n]],
                                    sent_per_s=round(len(src_text) / median, 1),
                                    tgt_tok_per_s=round(sum(map(len, outputs[n])) / median, 1),
                                    bleu=round(sacrebleu.corpus_bleu(hyp, [ref_text], lowercase=translator.tokenizer.lowercases).score, 2))
    for n in names:
        if n.startswith("aiayn"):
            suffix = n.rsplit("_", 1)[1]
            kind = "bf16_" if "_bf16_" in n else ""
            peers = (f"hf_{kind}{suffix}", f"hf_{suffix}", f"ct2_f32_{suffix}", f"ct2_int8_{suffix}", f"hf_{suffix}_cap200",
                     f"aiayn_{suffix}" if kind else "")
            for other in (p for p in dict.fromkeys(peers) if p and p != n):
                if other in times:
                    ratios = [t_peer / t_ours for t_peer, t_ours in zip(times[other], times[n])]
                    result["systems"][n][f"speedup_vs_{other}"] = round(statistics.median(ratios), 2)
                    same = sum(x == y for x, y in zip(outputs[n], outputs[other])) / len(src_text)
                    result["systems"][n][f"identical_to_{other}"] = round(same, 3)
    print(json.dumps(result, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print("\nsummary (sentences/s, target tokens/s, sacreBLEU):")
    for n, s in result["systems"].items():
        extra = "  ".join(f"{k}={v}" for k, v in s.items() if k.startswith(("speedup", "identical")))
        print(f"  {n:<16} {s['sent_per_s']:>7.1f} sent/s {s['tgt_tok_per_s']:>8.0f} tok/s  BLEU {s['bleu']:5.2f}  {extra}")


if __name__ == "__main__":
    sys.exit(main())
