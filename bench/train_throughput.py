"""Training throughput (target tokens/s) of aiayn beside the peer harness, on identical batches.

Runs in the peer harness's virtual environment (see bench/peers.sh), which holds Hugging Face
transformers and has aiayn installed. Like ../shared/bench/peers/bench_train.py: each system lives
in its own worker process, the parent runs them round-robin (never concurrently) on the same
Multi30k de->en batches of ~4,000 target tokens (the harness's BPE of 8,000 pieces), and a step is
forward + label-smoothed loss + backward + Adam step
(aiayn's: the training objective `aiayn train` runs, TeacherForcingLoss). Prints figures and ratios to HF Marian.

    bash bench/peers.sh                       # once: harness venv, peers, BPE
    bench/.peers/.venv/bin/python bench/train_throughput.py --size S
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

HARNESS = Path(os.environ.get("AIAYN_PEERS", Path(__file__).resolve().parent / ".peers"))
sys.path.insert(0, str(HARNESS))
import common  # noqa: E402  (the peer harness)

SYSTEMS = {"hf": "HF MarianMTModel (fp32)", "aiayn": "aiayn (fp32)", "aiayn-bf16": "aiayn (bf16 autocast)"}


def build_aiayn(size: str):
    from aiayn import ModelConfig, Transformer

    c = common.SIZES[size]
    # The harness's vocabulary: eos 0, pad 8000 (also the decoder start, as in Marian).
    config = ModelConfig(vocab_size=common.VOCAB, d_model=c["d_model"], n_heads=c["heads"], d_ff=c["ffn"],
                         n_encoder_layers=c["layers"], n_decoder_layers=c["layers"], dropout=0.1,
                         pad_id=common.PAD, bos_id=common.PAD, eos_id=common.EOS)
    return Transformer(config)


def worker(conn, system: str, size: str, batch_ids: list[list[int]]) -> None:
    import torch

    from aiayn.training.loss import TeacherForcingLoss

    train = common.load_split("train")
    batches = [common.collate(train, b) for b in batch_ids]
    torch.manual_seed(1)
    if system == "hf":
        model = common.build_marian(size)

        def step_loss(s, d, y):
            return common.ls_loss(common.marian_logits(model, s, d), y)
    else:
        from aiayn.runtime import keep_freed_memory

        keep_freed_memory()  # what `aiayn train` does
        model = build_aiayn(size)
        objective = TeacherForcingLoss(model, 0.1)  # what `aiayn train` runs: padding dropped, chunked loss
        bf16 = system.endswith("bf16")

        def step_loss(s, d, y):
            positions = (y.flatten() != common.PAD).nonzero().squeeze(1)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return objective(s, d, y, positions)[0]
    model.train()
    opt, sched = common.make_opt(model, 1e-3, 4000)
    conn.send(dict(params=sum(p.numel() for p in model.parameters()), threads=torch.get_num_threads()))
    while True:
        msg = conn.recv()
        if msg is None:
            conn.send(dict(peak_rss_mib=round(common.peak_rss_mib(), 1)))
            return
        first, count = msg
        out = []
        for k in range(first, first + count):
            s, d, y = batches[k]
            ntok = int((y != common.PAD).sum())
            t = time.perf_counter()
            loss = step_loss(s, d, y)
            opt.zero_grad(set_to_none=True)
            (loss / ntok).backward()
            opt.step()
            sched.step()
            out.append((ntok, time.perf_counter() - t, loss.item() / ntok))
        conn.send(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="S", choices=sorted(common.SIZES))
    ap.add_argument("--systems", default="hf,aiayn,aiayn-bf16")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--out", default="bench/out/train_throughput.json")
    a = ap.parse_args()
    systems = a.systems.split(",")
    train = common.load_split("train")
    batch_ids = common.make_batches(train, 4000, seed=123)[: a.warmup + a.rounds * a.steps]
    ctx = mp.get_context("spawn")
    conns, procs, info = {}, {}, {}
    for name in systems:
        parent, child = ctx.Pipe()
        procs[name] = ctx.Process(target=worker, args=(child, name, a.size, batch_ids))
        procs[name].start()
        conns[name] = parent
        info[name] = parent.recv()
        print(name, SYSTEMS[name], info[name], flush=True)
    for name in systems:
        conns[name].send((0, a.warmup))
        conns[name].recv()
    steps = {n: [] for n in systems}
    rounds = {n: [] for n in systems}
    for r in range(a.rounds):
        first = a.warmup + r * a.steps
        for name in systems:
            conns[name].send((first, a.steps))
            out = conns[name].recv()
            steps[name] += out
            rounds[name].append(statistics.median(n / t for n, t, _ in out))
            print(f"size {a.size} round {r} {name}: median {rounds[name][-1]:,.0f} target tok/s "
                  f"(loss {out[-1][2]:.3f})", flush=True)
    result = dict(size=a.size, config=common.SIZES[a.size], measured_steps=a.rounds * a.steps, systems={})
    for name in systems:
        conns[name].send(None)
        rss = conns[name].recv()["peak_rss_mib"]
        procs[name].join()
        rates = [n / t for n, t, _ in steps[name]]
        entry = dict(name=SYSTEMS[name], **info[name], peak_rss_mib=rss,
                     tok_per_s_median=round(statistics.median(rates), 1), round_medians=[round(x, 1) for x in rounds[name]])
        if "hf" in systems and name != "hf":
            ratios = [x / y for x, y in zip(rounds[name], rounds["hf"])]
            entry["ratio_vs_hf_per_round"] = [round(x, 3) for x in ratios]
            entry["ratio_vs_hf_median"] = round(statistics.median(ratios), 3)
        result["systems"][name] = entry
    print(json.dumps(result, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print("\nsummary (target tokens/s, median):")
    for name, entry in result["systems"].items():
        ratio = f"  {entry['ratio_vs_hf_median']:.2f}x HF" if "ratio_vs_hf_median" in entry else ""
        print(f"  {entry['name']:<28} {entry['tok_per_s_median']:>9,.0f}{ratio}")


if __name__ == "__main__":
    main()
