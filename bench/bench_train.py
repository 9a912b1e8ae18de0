"""Training-step benchmark on CPU: archscale's megatron-core step vs Hugging Face LlamaForCausalLM.

For architectures of about 1M and 10M parameters (LLaMA style, vocabulary 512, batch 8 x 128
tokens, fp32, 2 threads) this measures, in one run:

* the archscale training step (``archscale.train.loop``: megatron-core GPTModel in DDP,
  megatron optimizer (AdamW + clipping), scheduler, forward-backward schedule, data from
  megatron-core GPT datasets): tokens/s and achieved FLOP/s (``archscale.cost`` FLOPs per token);
* the machine's dense fp32 matmul FLOP/s (torch.mm, same threads), measured between rounds;
* a Hugging Face ``LlamaForCausalLM`` training step of the identical architecture (same parameter
  count, SDPA attention, tied embeddings, RoPE base 500000) with torch AdamW and clipping, on the
  same batches.

Each implementation runs in its own worker process (the CPU compatibility layer of megatron is
process-wide, so HF must not share a process with it); the orchestrator alternates the workers in
rounds, so both see the same machine load. Medians over rounds are reported.

    .venv/bin/python bench/bench_train.py [--rounds 7] [--steps 5] [--threads 2]

Writes bench/results/bench_train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

ARCHS = {
    # ~1M total parameters
    "1m": dict(d_model=128, ffn=384, layers=5, heads=4, kv_heads=2, head_dim=32, vocab=512, tied=True),
    # ~10M total parameters
    "10m": dict(d_model=384, ffn=1024, layers=6, heads=6, kv_heads=2, head_dim=64, vocab=512, tied=True),
}
SEQ, BATCH = 128, 8


def _job(arch: dict, manifest: str, root: str):
    from archscale.arch import Architecture
    from archscale.train.job import TrainJob
    from archscale.config import schema_default

    a = Architecture(**arch, scale="bench")
    recipe = {"seq_length": SEQ, "global_batch": BATCH, "lr": 1e-3, "min_lr_ratio": 0.1, "warmup_fraction": 0.0,
              "weight_decay": 0.1, "adam_beta1": 0.9, "adam_beta2": 0.95, "clip_grad": 1.0, "init_std": 0.02,
              "seed": 1, "eval_tokens": SEQ * BATCH, "eval_interval": 0}
    a = a.with_network(rope_base=schema_default("model.rope_base"))
    return TrainJob(arch=a, budget={"tokens": 10_000 * SEQ * BATCH}, recipe=recipe, manifest=manifest,
                    checkpoint_dir=root, metrics=f"{root}/m.json", curve=f"{root}/c.parquet", final=f"{root}/final",
                    hardware={"micro_batch": BATCH, "threads": int(os.environ.get("OMP_NUM_THREADS", "1"))})


# ---- workers: read "N" on stdin, run N training steps, print the seconds -------------------------

def worker_megatron(arch: dict, manifest: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from archscale.model import resolve_runtime, setup_runtime
    from archscale.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as root:
        job = _job(arch, manifest, root)
        rt = resolve_runtime()
        setup_runtime(rt, 1)
        tr = Trainer(job, rt, log=lambda m: None)
        tr.build()
        from archscale.model import count_parameters

        print(json.dumps({"ready": True, "params": count_parameters(tr.ddp.module)}), flush=True)
        step = 0
        for line in sys.stdin:
            n = int(line)
            t = time.perf_counter()
            for _ in range(n):
                loss, _, _ = tr.train_step(step)
                loss.item()
                step += 1
            print(json.dumps({"seconds": time.perf_counter() - t, "loss": float(loss)}), flush=True)


def worker_hf(arch: dict, manifest: str, threads: int) -> None:
    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(threads)
    from archscale.data.dataset import Manifest, SampleSchedule, build_datasets, collate

    cfg = LlamaConfig(
        vocab_size=arch["vocab"], hidden_size=arch["d_model"], intermediate_size=arch["ffn"],
        num_hidden_layers=arch["layers"], num_attention_heads=arch["heads"], num_key_value_heads=arch["kv_heads"],
        head_dim=arch["head_dim"], max_position_embeddings=SEQ, rms_norm_eps=1e-5, rope_theta=500000.0,
        tie_word_embeddings=arch["tied"], attention_bias=False, mlp_bias=False, hidden_act="silu",
        initializer_range=0.02,
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(1)
    model = LlamaForCausalLM(cfg).train()
    seen, params = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            params += p.numel()
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    train, _ = build_datasets(Manifest.load(manifest), SEQ, 10_000 * BATCH, BATCH, seed=1)
    sched = SampleSchedule(BATCH, BATCH)
    print(json.dumps({"ready": True, "params": params}), flush=True)
    step = 0
    for line in sys.stdin:
        n = int(line)
        t = time.perf_counter()
        for _ in range(n):
            batch = collate(train, sched.indices(step, 0))
            logits = model(input_ids=batch["tokens"]).logits
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), batch["labels"].view(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss.item()
            step += 1
        print(json.dumps({"seconds": time.perf_counter() - t, "loss": float(loss)}), flush=True)


# ---- orchestrator -------------------------------------------------------------------------------

def matmul_flops(threads: int, n: int = 1024, repeats: int = 10) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best


class Worker:
    def __init__(self, kind: str, arch_name: str, manifest: str, threads: int):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "MKL_CBWR": "AUTO,STRICT", "CUDA_VISIBLE_DEVICES": ""}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, "--arch", arch_name, "--manifest", manifest,
             "--threads", str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            stderr=subprocess.DEVNULL)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.proc.args} died")
        return json.loads(line)

    def steps(self, n: int) -> dict:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5, help="steps per round and implementation")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--archs", default="1m,10m")
    ap.add_argument("--out", default=str(HERE / "results" / "bench_train.json"))
    ap.add_argument("--worker", choices=["megatron", "hf"])
    ap.add_argument("--arch")
    ap.add_argument("--manifest")
    args = ap.parse_args()
    if args.worker:
        fn = worker_megatron if args.worker == "megatron" else worker_hf
        fn(ARCHS[args.arch], args.manifest, args.threads)
        return

    from archscale.arch import Architecture
    from archscale.cost import training_flops_per_token
    from archscale.data.dataset import write_synthetic_manifest

    results = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                           "load_avg_start": os.getloadavg()},
               "batch": BATCH, "seq_length": SEQ, "precision": "fp32", "rounds": args.rounds,
               "steps_per_round": args.steps, "archs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = str(write_synthetic_manifest(tmp, vocab_size=512, train_tokens=300_000, valid_tokens=5_000))
        for name in args.archs.split(","):
            arch = ARCHS[name]
            a = Architecture(**arch)
            mega, hf = Worker("megatron", name, manifest, args.threads), Worker("hf", name, manifest, args.threads)
            assert mega.info["params"] == hf.info["params"] == a.params_total, (mega.info, hf.info, a.params_total)
            mega.steps(2), hf.steps(2)  # warm-up
            t_mega, t_hf, peaks = [], [], []
            for r in range(args.rounds):
                peaks.append(matmul_flops(args.threads))
                first, second = (mega, hf) if r % 2 == 0 else (hf, mega)
                a_res, b_res = first.steps(args.steps), second.steps(args.steps)
                res = {id(first): a_res, id(second): b_res}
                t_mega.append(res[id(mega)]["seconds"] / args.steps)
                t_hf.append(res[id(hf)]["seconds"] / args.steps)
            peaks.append(matmul_flops(args.threads))
            mega.close(), hf.close()
            tokens = BATCH * SEQ
            fpt = training_flops_per_token(a, SEQ)
            s_m, s_h, peak = statistics.median(t_mega), statistics.median(t_hf), statistics.median(peaks)
            results["archs"][name] = {
                "arch": arch, "params_total": a.params_total, "params_non_embedding": a.params_non_embedding,
                "tokens_per_step": tokens, "flops_per_token": fpt,
                "megatron_s_per_step": s_m, "megatron_tokens_per_s": tokens / s_m,
                "megatron_achieved_flops_per_s": tokens * fpt / s_m,
                "hf_s_per_step": s_h, "hf_tokens_per_s": tokens / s_h,
                "matmul_flops_per_s": peak,
                "ratio_megatron_to_matmul_peak": tokens * fpt / s_m / peak,
                "speedup_megatron_vs_hf": s_h / s_m,
                "megatron_s_per_step_rounds": t_mega, "hf_s_per_step_rounds": t_hf, "matmul_flops_rounds": peaks,
            }
            r = results["archs"][name]
            print(f"{name}: {a.params_total:,} params | archscale/megatron {r['megatron_tokens_per_s']:,.0f} tok/s "
                  f"({r['megatron_achieved_flops_per_s'] / 1e9:.2f} GFLOP/s, {r['ratio_megatron_to_matmul_peak']:.1%} "
                  f"of matmul {peak / 1e9:.1f} GFLOP/s) | HF {r['hf_tokens_per_s']:,.0f} tok/s | "
                  f"megatron/HF speed {r['speedup_megatron_vs_hf']:.2f}x", flush=True)
            r["load_avg_after"] = os.getloadavg()
            _write(args.out, results)  # after each architecture, so a long run keeps what it measured
    results["machine"]["load_avg_end"] = os.getloadavg()
    _write(args.out, results)


def _write(path: str, results: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
