#!/usr/bin/env python3
"""Tandem against llama.cpp on the CPU: the same GGUF file, the same threads, the same prompt and
generation lengths, runs alternating, and the per-pair ratio Tandem / llama.cpp.

    bench/compare_llamacpp.py [--install] [--threads 2] [-p 512] [-n 64] [--pairs 3]
                              [--cases olmoe-q8_0,olmoe-q4_k,qwen3-q8_0,qwen3-q4_k,gpt-oss-mxfp4]

llama.cpp is llama-cpp-python from PyPI, which compiles llama.cpp for this CPU when it installs
(--install does it; on 2 cores it takes most of an hour: CMAKE_BUILD_PARALLEL_LEVEL=1 keeps the
machine usable). The synthetic models are written by tandem-bench (seeded random weights at the
real shapes, generated directly in the weight type) as GGUF files with llama.cpp's names and a
placeholder vocabulary; both engines read the same file, every weight matrix in that type.

Each pair runs both engines once, each in a fresh process after a warm-up, in alternating order
(Tandem first in even pairs), so that slow drifts of a shared machine hit both sides alike.
Prompts are random token ids, decoding is greedy with EOS ignored. Prefill: prompt tokens over
the time to the first generated token; decode: the n tokens after it over the time they took.
The ratios printed are medians over pairs of the per-pair ratios.

Every row records the ISA level Tandem's kernels ran at (--cpu-isa forces a lower one, e.g. avx2
on an AVX-512 machine; llama.cpp keeps what it was compiled for), the CPU model and the 1-minute
load average before each run; the tables are printed one per ISA level, as bench/RESULTS.md keeps
them. A figure taken at a load above 1.5 is marked: it says little about the engines.

--peer tandem-dot puts Tandem against itself with the large-M tile path off (TANDEM_TILE_GEMM=
never: the dot products, the only prefill path at the avx2 level before #25) instead of
llama.cpp, the same alternating pairs: the A/B of a kernel change without llama.cpp installed.
(In --json the peer's figures keep their llama_* keys; each result's "peer" says which it was.)

CMAKE_ARGS, if set, replaces the llama.cpp build flags of --install. Where the CPU reports AMX
but the machine cannot run it (a VM without AMX state; llama.cpp then crashes on Q8_0 and K-quant
models), build with GGML_NATIVE=OFF and the CPU's other flags listed, AMX off; bench/RESULTS.md
records the flags of each table. A table at a forced --cpu-isa wants a llama.cpp built for that
level too: run this script with the python of a venv whose llama-cpp-python was built so.

llama.cpp's OpenMP workers spin between ops by default. On a machine whose two cores other
processes also use, that spinning slows it by up to 10x in some runs and not in others;
--llama-omp-wait passive gives it steady figures there (bench/RESULTS.md has both).
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name: (synthetic preset, layers, weight type). Depth is cut to fit the 24 GB dev machine with
# room for both engines' page cache and llama.cpp's repacked copies.
CASES = {
    "olmoe-q8_0": ("olmoe-1b-7b", 8, "q8_0"),
    "olmoe-q4_k": ("olmoe-1b-7b", 8, "q4_k"),
    "qwen3-q8_0": ("qwen3-30b-a3b", 8, "q8_0"),
    "qwen3-q4_k": ("qwen3-30b-a3b", 8, "q4_k"),
    # gpt-oss-20b's shape with its experts in MXFP4 (the rest in the writer's types for it), as
    # the released checkpoints and llama.cpp's conversions of them store them.
    "gpt-oss-mxfp4": ("gpt-oss-20b", 4, "mxfp4"),
}


# KV cache element types as both engines name them: Tandem's --kv-cache-type and ggml's type ids
# for llama.cpp's type_k / type_v (GGML_TYPE_F32 = 0, GGML_TYPE_F16 = 1).
KV_TYPES = {"f32": 0, "f16": 1}


def llama_run(model, p, n, threads, seed, kv_type):
    """One llama.cpp measurement in this process; prints one JSON line."""
    import llama_cpp
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=model, n_ctx=p + n + 16, n_threads=threads, n_threads_batch=threads,
                n_batch=512, n_ubatch=512, type_k=KV_TYPES[kv_type], type_v=KV_TYPES[kv_type],
                verbose=False)
    rng = random.Random(seed)
    vocab = llm.n_vocab()

    def greedy():
        # The last row's logits straight from llama.cpp: Llama.scores is only filled with
        # logits_all, which would make llama.cpp compute logits for every prompt token.
        row = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(row, shape=(vocab,))))

    prompt = [rng.randrange(3, vocab) for _ in range(p)]
    llm.eval(prompt[:16])  # warm-up, as tandem-bench does
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt)
    token = greedy()
    prefill_end = time.perf_counter()
    for _ in range(n):
        llm.eval([token])
        token = greedy()
    end = time.perf_counter()
    print(json.dumps({"prefill_tps": p / (prefill_end - start),
                      "decode_tps": n / (end - prefill_end) if n else None}))


# Above this 1-minute load average a figure is marked as taken on a busy machine.
QUIET_LOAD = 1.5


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def load_average():
    return os.getloadavg()[0]


def wait_for_quiet(seconds):
    """Waits up to `seconds` for the 1-minute load average to fall below QUIET_LOAD. A 2-thread
    run lifts it to ~2 by itself, so back-to-back runs never start quiet without a pause."""
    deadline = time.monotonic() + seconds
    while load_average() > QUIET_LOAD and time.monotonic() < deadline:
        time.sleep(5)


def warm_page_cache(path):
    """Reads the model file so that it is in the page cache before either engine maps it: the
    cases' files together exceed the dev machine's free memory, and the first run of a case would
    otherwise read from disk for both engines' prefill, whichever comes first (pairs alternate,
    so that cost fell on one engine per pair)."""
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 24):
            pass


def tandem_run(bench, model, p, n, threads, seed, kv_type, cpu_isa=None, tile_gemm=None,
               no_avx_vnni=False):
    env = dict(os.environ)
    if tile_gemm:
        env["TANDEM_TILE_GEMM"] = tile_gemm
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [str(bench), "--model", model, "-p", str(p), "-n", str(n), "-t", str(threads),
               "-r", "1", "--seed", str(seed), "--kv-cache-type", kv_type, "--no-progress",
               "--json", out.name]
        if cpu_isa:
            cmd += ["--cpu-isa", cpu_isa]
        if no_avx_vnni:
            cmd += ["--no-avx-vnni"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        row = json.loads(Path(out.name).read_text())["rows"][0]
    return row


def llama_subprocess(model, p, n, threads, seed, omp_wait, kv_type):
    env = dict(os.environ)
    if omp_wait:
        env["OMP_WAIT_POLICY"] = omp_wait
    out = subprocess.run([sys.executable, __file__, "--llama-run", model, str(p), str(n),
                          str(threads), str(seed), kv_type], check=True, capture_output=True,
                         text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def ensure_llama_cpp(install):
    try:
        import llama_cpp  # noqa: F401
        return
    except ImportError:
        pass
    if not install:
        sys.exit("llama-cpp-python is not installed: run with --install (it compiles llama.cpp, "
                 "most of an hour on 2 cores)")
    env = dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL=os.environ.get(
        "CMAKE_BUILD_PARALLEL_LEVEL", "1"), CMAKE_ARGS=os.environ.get(
        "CMAKE_ARGS", "-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF"))
    subprocess.run([sys.executable, "-m", "pip", "install", "llama-cpp-python"], env=env,
                   check=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--llama-run":
        model, p, n, threads, seed, kv_type = sys.argv[2:8]
        llama_run(model, int(p), int(n), int(threads), int(seed), kv_type)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: " +
                        ", ".join(f"{k} ({v[0]}, {v[1]} layers, {v[2]})"
                                  for k, v in CASES.items()))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-p", type=int, default=512, help="prompt tokens")
    parser.add_argument("-n", type=int, default=64, help="decoded tokens")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--kv-cache-type", choices=sorted(KV_TYPES), default="f16",
                        help="KV cache type of both engines (f16: llama.cpp's default; entries "
                             "in bench/RESULTS.md before 2026-11-29 08:30 ran Tandem in f32)")
    parser.add_argument("--layers", type=int, default=0, help="override every case's depth")
    parser.add_argument("--bench", default=str(ROOT / "build" / "bench" / "tandem-bench"))
    parser.add_argument("--model-dir",
                        default=str(Path(tempfile.gettempdir()) / "tandem-bench-models"))
    parser.add_argument("--install", action="store_true", help="pip install llama-cpp-python")
    # llama.cpp's OpenMP workers spin between ops by default; on a machine whose cores other
    # processes also want, that spinning costs it several times its speed (bench/RESULTS.md),
    # and passive waits are what such a machine should be run with.
    parser.add_argument("--llama-omp-wait", choices=["active", "passive"],
                        help="OMP_WAIT_POLICY for llama.cpp (default: OpenMP's own)")
    parser.add_argument("--json", help="write every measurement and the ratios here")
    parser.add_argument("--cpu-isa", choices=["scalar", "avx2", "avx512"],
                        help="force Tandem's kernels to this ISA level (default: the CPU's best)")
    parser.add_argument("--no-avx-vnni", action="store_true",
                        help="Tandem at the avx2 level without AVX-VNNI, as on CPUs before it "
                             "(run llama.cpp built without it beside)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                        help=f"before each run, wait up to this long for a load below "
                             f"{QUIET_LOAD}")
    parser.add_argument("--peer", choices=["llama", "tandem-dot"], default="llama",
                        help="what Tandem is compared with: llama.cpp, or Tandem with the tile "
                             "path off (TANDEM_TILE_GEMM=never)")
    args = parser.parse_args()
    if args.peer == "llama":
        ensure_llama_cpp(args.install)
        import llama_cpp
        peer_name = f"llama.cpp (llama-cpp-python {llama_cpp.__version__})"
    else:
        peer_name = "Tandem, tile path off (TANDEM_TILE_GEMM=never)"
    bench = Path(args.bench)
    if not bench.exists():
        sys.exit(f"{bench} not found: build it (ninja -C build tandem-bench)")

    results = []
    for case in args.cases.split(","):
        if case not in CASES:
            sys.exit(f"unknown case {case}; known: {', '.join(CASES)}")
        preset, layers, wtype = CASES[case]
        layers = args.layers or layers
        model = Path(args.model_dir) / f"{preset}-{layers}l-{wtype}-seed1.gguf"
        if not model.exists():
            subprocess.run([str(bench), "--model", f"synthetic:{preset}", "--layers", str(layers),
                            "--quantize", wtype, "--write", str(model)], check=True)
        pairs = []
        for i in range(args.pairs):
            seed = 100 + i
            order = ["tandem", "llama"] if i % 2 == 0 else ["llama", "tandem"]
            got = {"load": {}}
            for side in order:
                warm_page_cache(model)
                wait_for_quiet(args.wait_quiet)
                got["load"][side] = load_average()
                if side == "tandem":
                    # Each run measures the bandwidth itself: on a shared machine it changes
                    # within minutes, and the bound must be the one of the same moment.
                    row = tandem_run(bench, str(model), args.p, args.n, args.threads, seed,
                                     args.kv_cache_type, args.cpu_isa,
                                     no_avx_vnni=args.no_avx_vnni)
                    got["isa"] = row["isa"]
                    got["tandem"] = {"prefill_tps": row["prefill_tps"]["median"],
                                     "decode_tps": row["decode_tps"]["median"],
                                     "bandwidth_gbps": row["bandwidth_gbps"],
                                     "bound_tps": row["bound_tps"],
                                     "bytes_per_token": row["bytes_per_token"]}
                    got["of_bound"] = got["tandem"]["decode_tps"] / row["bound_tps"]
                elif args.peer == "tandem-dot":
                    row = tandem_run(bench, str(model), args.p, args.n, args.threads, seed,
                                     args.kv_cache_type, args.cpu_isa, tile_gemm="never",
                                     no_avx_vnni=args.no_avx_vnni)
                    got["llama"] = {"prefill_tps": row["prefill_tps"]["median"],
                                    "decode_tps": row["decode_tps"]["median"]}
                else:
                    got["llama"] = llama_subprocess(str(model), args.p, args.n, args.threads,
                                                    seed, args.llama_omp_wait,
                                                    args.kv_cache_type)
            got["prefill_ratio"] = got["tandem"]["prefill_tps"] / got["llama"]["prefill_tps"]
            got["decode_ratio"] = got["tandem"]["decode_tps"] / got["llama"]["decode_tps"]
            print(f"{case} pair {i + 1} ({got['isa']}, load "
                  f"{got['load']['tandem']:.2f}/{got['load']['llama']:.2f}): Tandem prefill "
                  f"{got['tandem']['prefill_tps']:.1f} decode {got['tandem']['decode_tps']:.2f} | "
                  f"{args.peer} prefill {got['llama']['prefill_tps']:.1f} decode "
                  f"{got['llama']['decode_tps']:.2f} tok/s", file=sys.stderr, flush=True)
            pairs.append(got)
        med = lambda key, side=None: statistics.median(  # noqa: E731
            p[side][key] if side else p[key] for p in pairs)
        loads = [x for q in pairs for x in q["load"].values()]
        results.append({
            "case": case, "model": preset, "layers": layers, "weight_type": wtype,
            "isa": pairs[0]["isa"], "cpu_model": cpu_model(), "peer": args.peer,
            "load_min": min(loads), "load_max": max(loads),
            "threads": args.threads, "p": args.p, "n": args.n, "pairs": pairs,
            "kv_cache_type": args.kv_cache_type,
            "tandem_prefill": med("prefill_tps", "tandem"),
            "llama_prefill": med("prefill_tps", "llama"),
            "tandem_decode": med("decode_tps", "tandem"),
            "llama_decode": med("decode_tps", "llama"),
            "prefill_ratio": med("prefill_ratio"), "decode_ratio": med("decode_ratio"),
            "bandwidth_gbps": med("bandwidth_gbps", "tandem"),
            "bound_tps": med("bound_tps", "tandem"), "of_bound": med("of_bound"),
            "bytes_per_token": pairs[0]["tandem"]["bytes_per_token"],
        })

    print(f"Peer: {peer_name} (OMP_WAIT_POLICY {args.llama_omp_wait or 'unset'}); KV cache "
          f"{args.kv_cache_type} in both; {args.threads} threads; prompt {args.p}, decode "
          f"{args.n} tokens; {args.pairs} alternating pairs; medians (bandwidth and bound: "
          f"measured in each Tandem run); load: 1-minute load average before each run, min-max; "
          f"* marks a row with a load above {QUIET_LOAD} (not a quiet machine)")
    for isa in sorted({r["isa"] for r in results}):
        rows = [r for r in results if r["isa"] == isa]
        print()
        print(f"Tandem at ISA level {isa}, {rows[0]['cpu_model']}:")
        print()
        print("| case | load | MB/token | BW GB/s | bound t/s | Tandem prefill | peer prefill | "
              "ratio | Tandem decode | peer decode | ratio | Tandem decode of bound |")
        print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        for r in rows:
            busy = "*" if r["load_max"] > QUIET_LOAD else ""
            print(f"| {r['model']} {r['layers']}L {r['weight_type']} | "
                  f"{r['load_min']:.1f}-{r['load_max']:.1f}{busy} | "
                  f"{r['bytes_per_token'] / 1e6:.0f} | {r['bandwidth_gbps']:.1f} | "
                  f"{r['bound_tps']:.1f} | "
                  f"{r['tandem_prefill']:.1f} | {r['llama_prefill']:.1f} | "
                  f"**{r['prefill_ratio']:.2f}x** | {r['tandem_decode']:.2f} | "
                  f"{r['llama_decode']:.2f} | **{r['decode_ratio']:.2f}x** | "
                  f"{100 * r['of_bound']:.0f} % |")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
