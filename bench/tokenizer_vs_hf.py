#!/usr/bin/env python3
"""Tandem's tokenizer against Hugging Face `tokenizers`, single thread, same text, one run.

    python3 bench/tokenizer_vs_hf.py [--tokenizer ../shared/tokenizers/qwen3] [--mb 10]

Builds ~10 MB of mixed English text and code from files every Debian machine has (Python's
standard library sources and the licence texts in /usr/share/common-licenses), cuts it into
chunks exactly as build/bench/tandem-tokenizer-bench does, encodes the chunks with HF
(TOKENIZERS_PARALLELISM=false, one encode() per chunk, no special tokens) and with Tandem, checks
that both produce the same number of tokens, and prints MB/s of each, the ratio and load times.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import sysconfig
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer  # noqa: E402


def make_text(target_bytes):
    code_files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
    prose_files = sorted(glob.glob("/usr/share/common-licenses/*")) + \
        sorted(glob.glob("/usr/share/doc/*/copyright"))
    half = target_bytes // 2
    parts, size = [], 0
    for files, limit in ((prose_files, half), (code_files, target_bytes)):
        for f in files:
            if size >= limit:
                break
            try:
                data = open(f, encoding="utf-8").read()
            except (UnicodeDecodeError, IsADirectoryError, PermissionError):
                continue
            parts.append(data)
            size += len(data.encode("utf-8"))
    return "".join(parts).encode("utf-8")[:target_bytes].decode("utf-8", errors="ignore")


def chunks_of(data):
    chunks, begin = [], 0
    while begin < len(data):
        end = len(data) if begin + 4096 >= len(data) else data.find(b"\n", begin + 4096)
        end = len(data) if end < 0 else end + 1
        chunks.append(data[begin:end].decode("utf-8"))
        begin = end
    return chunks


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", default=os.path.join(root, "..", "shared", "tokenizers", "qwen3"))
    p.add_argument("--mb", type=float, default=10)
    p.add_argument("--bench", default=os.path.join(root, "build", "bench", "tandem-tokenizer-bench"))
    args = p.parse_args()

    text = make_text(int(args.mb * 1e6))
    data = text.encode("utf-8")
    path = os.path.join(root, "build", "tokenizer-bench-text.txt")
    with open(path, "wb") as f:
        f.write(data)
    chunks = chunks_of(data)

    t0 = time.perf_counter()
    hf = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
    hf_load = time.perf_counter() - t0
    best = None
    for _ in range(2):
        t0 = time.perf_counter()
        hf_tokens = sum(len(hf.encode(c, add_special_tokens=False).ids) for c in chunks)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    hf_mbs = len(data) / 1e6 / best

    out = subprocess.run([args.bench, "--tokenizer", args.tokenizer, "--text", path,
                          "--benchmark_format=json"], check=True, capture_output=True, text=True)
    results = {b["name"].split("/")[0]: b for b in json.loads(out.stdout)["benchmarks"]}
    enc, load = results["BM_Encode"], results["BM_Load"]
    tandem_mbs = enc["MB_per_s"]
    print(f"text: {len(data) / 1e6:.2f} MB in {len(chunks)} chunks ({path})")
    print(f"tokens: tandem {int(enc['tokens'])}, hf {hf_tokens}"
          f"{'' if int(enc['tokens']) == hf_tokens else '  MISMATCH'}")
    print(f"encode, 1 thread: tandem {tandem_mbs:.2f} MB/s, hf tokenizers {hf_mbs:.2f} MB/s, "
          f"ratio {tandem_mbs / hf_mbs:.2f}")
    print(f"load: tandem {load['real_time']:.0f} ms, hf tokenizers {hf_load * 1e3:.0f} ms")
    return 0 if int(enc["tokens"]) == hf_tokens else 1


if __name__ == "__main__":
    sys.exit(main())
