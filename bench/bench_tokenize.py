"""Tokenization throughput of the data stage vs the tokenizer's raw batch encoding.

    .venv/bin/python bench/bench_tokenize.py [--threads 2] [--repeats 3] [--out bench/results/tokenize.json]

Text: the shipped sample (resources/sample, 8 shards, 10.1 M characters). Tokenizer: a 512-token
byte-level BPE trained as the default workflow does (archscale.data.tokenizer). Three timings,
each the best of ``--repeats`` (the machine may be shared), interleaved:

- raw: the tokenizer's batch encoding alone (``encode_batch_fast``, the call the stage makes,
  same batches) on texts already in memory, ``--threads`` threads;
- stage (one job): ``archscale.data.tokenize.tokenize_shard`` over every shard in one process
  with ``--threads`` threads: gzip + JSON reading, validation, split, encoding, megatron-core
  IndexedDatasetBuilder writes of .bin/.idx, atomic renames, the record;
- stage (parallel jobs): the same split over ``--threads`` worker processes of one thread each,
  the way Snakemake runs the ``tokenize`` rule (one job per shard).

Overhead = 1 - stage tokens/s / raw tokens/s (goal: < 20%). The fixed cost of a job
(interpreter start and the megatron-core import, paid once per shard job) is reported apart:
it does not grow with the shard and is amortised on real (GB-sized) Dolma shards.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "sample"


def _worker(args):
    shard, tok_path, out_dir = args
    from archscale.data.tokenize import tokenize_shard
    from archscale.data.tokenizer import load

    tok = load(tok_path)
    name = Path(shard).name[: -len(".json.gz")]
    prefix = Path(out_dir) / Path(shard).parent.name / name
    timings = {}
    rec = tokenize_shard(
        shard, tok, eod_id=0, vocab_size=512, out_prefix=prefix, record_path=f"{prefix}.json", valid_fraction=0.03,
        timings=timings,
    )
    return rec["tokens"]["train"] + rec["tokens"]["valid"], timings


def _init_single_thread():
    os.environ["RAYON_NUM_THREADS"] = "1"
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        import warnings

        warnings.simplefilter("ignore")
        import megatron.core.datasets.indexed_dataset  # noqa: F401  (paid once per worker, outside the timing)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "tokenize.json"))
    args = ap.parse_args(argv)
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)

    import contextlib
    import io
    import multiprocessing as mp
    import warnings

    from archscale.data.corpus import find_shards, read_documents
    from archscale.data.tokenize import batches, encode_batch
    from archscale.data.tokenizer import train_bpe, training_texts
    from archscale.io import write_json

    shards = find_shards(SAMPLE)
    tok = train_bpe(training_texts(shards, 20_000_000, 0.03), 512, "<|endoftext|>")
    work = Path(tempfile.mkdtemp(prefix="bench-tokenize-"))
    tok_path = work / "tokenizer.json"
    tok.save(str(tok_path))
    docs_by_shard = [list(read_documents(s)) for s in shards]
    n_chars = sum(len(d.text) for docs in docs_by_shard for d in docs)

    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-W", "ignore", "-c", "import megatron.core.datasets.indexed_dataset"],
        check=True, capture_output=True,
    )
    t_import = time.perf_counter() - t
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    t_python = time.perf_counter() - t
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import megatron.core.datasets.indexed_dataset  # noqa: F401

    def raw() -> tuple[float, int]:
        n = 0
        t0 = time.perf_counter()
        for docs in docs_by_shard:
            for batch in batches(docs, 1024, 4_000_000):  # the stage's batching
                n += sum(len(ids) + 1 for ids in encode_batch(tok, [d.text for d in batch]))
        return time.perf_counter() - t0, n

    inside = {"stage_one_job": [], "stage_parallel_jobs": []}

    def stage_one_job() -> tuple[float, int]:
        n, enc, tot = 0, 0.0, 0.0
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            for s in shards:
                k, t = _worker((str(s), str(tok_path), str(work / "one")))
                n, enc, tot = n + k, enc + t["encode_s"], tot + t["total_s"]
        inside["stage_one_job"].append({"encode_s": enc, "total_s": tot})
        return time.perf_counter() - t0, n

    ctx = mp.get_context("spawn")
    pool = ctx.Pool(args.threads, initializer=_init_single_thread)
    pool.map(_worker, [(str(shards[0]), str(tok_path), str(work / "warm"))] * args.threads)
    # largest shards first, as a scheduler would want
    order = sorted(shards, key=lambda s: -s.stat().st_size)

    def stage_parallel() -> tuple[float, int]:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            out = pool.map(_worker, [(str(s), str(tok_path), str(work / "par")) for s in order], chunksize=1)
        inside["stage_parallel_jobs"].append(
            {"encode_s": sum(t["encode_s"] for _, t in out), "total_s": sum(t["total_s"] for _, t in out)}
        )
        return time.perf_counter() - t0, sum(k for k, _ in out)

    runs = {"raw": [], "stage_one_job": [], "stage_parallel_jobs": []}
    fns = {"raw": raw, "stage_one_job": stage_one_job, "stage_parallel_jobs": stage_parallel}
    tokens = None
    for _ in range(args.repeats):
        for name, fn in fns.items():
            dt, n = fn()
            assert tokens in (None, n), f"{name}: {n} tokens, expected {tokens}"
            tokens = n
            runs[name].append(dt)
    pool.close()
    pool.join()

    best = {k: min(v) for k, v in runs.items()}
    tps = {k: tokens / v for k, v in best.items()}
    result = {
        "text": {"shards": len(shards), "documents": sum(map(len, docs_by_shard)), "characters": n_chars,
                 "tokens": tokens, "vocab_size": 512},
        "threads": args.threads,
        "repeats": args.repeats,
        "seconds": runs,
        "best_seconds": best,
        "tokens_per_s": tps,
        "ratio_stage_one_job_to_raw": tps["stage_one_job"] / tps["raw"],
        "ratio_stage_parallel_jobs_to_raw": tps["stage_parallel_jobs"] / tps["raw"],
        "overhead_stage_one_job": 1 - tps["stage_one_job"] / tps["raw"],
        "overhead_stage_parallel_jobs": 1 - tps["stage_parallel_jobs"] / tps["raw"],
        "goal_overhead_below": 0.2,
        # Within each job: seconds in the tokenizer's batch encoding vs the job's total (same
        # time window, so robust to a loaded machine): the stage's own overhead is the rest.
        "inside_jobs": inside,
        "overhead_inside_jobs": {
            k: 1 - sum(r["encode_s"] for r in v) / sum(r["total_s"] for r in v) for k, v in inside.items()
        },
        "per_job_fixed_cost_s": {"python_start": t_python, "python_start_and_megatron_import": t_import},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_end": os.getloadavg()},
    }
    import tokenizers

    result["versions"] = {"tokenizers": tokenizers.__version__, "python": platform.python_version()}
    write_json(args.out, result)
    print(f"{tokens:,} tokens from {n_chars:,} characters, {args.threads} cores")
    for k in fns:
        print(f"  {k:22s} {best[k]:7.2f} s  {tps[k]:12,.0f} tokens/s  ratio to raw {tps[k] / tps['raw']:.3f}")
    for k, v in result["overhead_inside_jobs"].items():
        print(f"  {k}: time outside the batch encoding, within the jobs: {v:.1%}")
    print(f"  per-job fixed cost (python + megatron-core import): {t_import:.1f} s")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
