#!/usr/bin/env python3
"""Bounded load test of tandem-server on loopback: N concurrent streaming clients (the official
openai client) send requests for at most --seconds (or --requests in all), and the script
reports requests/s, time to first token and time per output token (p50/p99), measured on the
client side. Not part of CI's pass/fail.

    .venv/bin/python bench/load_test.py                      # starts build/tools/tandem-server
    .venv/bin/python bench/load_test.py --url http://127.0.0.1:8000 --model NAME
"""

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import openai
import requests

ROOT = Path(__file__).resolve().parent.parent


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def histogram(url, name):
    """Cumulative buckets {le: count} and (sum, count) of a Prometheus histogram."""
    buckets, total, count = {}, 0.0, 0
    for line in requests.get(url + "/metrics").text.splitlines():
        if line.startswith(name + "_bucket{le="):
            le = line.split('"')[1]
            buckets[float("inf") if le == "+Inf" else float(le)] = int(line.split()[-1])
        elif line.startswith(name + "_sum "):
            total = float(line.split()[-1])
        elif line.startswith(name + "_count "):
            count = int(line.split()[-1])
    return buckets, total, count


def server_side(before, after, p):
    """The upper bound of the bucket holding the p-th percentile, over the requests between
    two scrapes, and the mean."""
    (b0, s0, c0), (b1, s1, c1) = before, after
    n = c1 - c0
    if n <= 0:
        return float("nan"), float("nan")
    for le in sorted(b1):
        if b1[le] - b0.get(le, 0) >= p / 100 * n:
            return le, (s1 - s0) / n
    return float("inf"), (s1 - s0) / n


def start_server(model, threads):
    proc = subprocess.Popen(
        [str(ROOT / "build" / "tools" / "tandem-server"), "--model", model, "--port", "0",
         "--threads", str(threads), "--log-level", "warn"],
        stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().split()[-1]
    while requests.get(url + "/health").status_code != 200:
        time.sleep(0.05)
    return proc, url


async def client_loop(client, model, args, deadline, stats, counter):
    while time.perf_counter() < deadline and counter[0] < args.requests:
        counter[0] += 1
        i = counter[0]
        start = time.perf_counter()
        first, tokens = None, 0
        stream = await client.completions.create(
            model=model, prompt=f"Request {i}: once upon a time", max_tokens=args.max_tokens,
            temperature=0.8, seed=i, stream=True, extra_body={"ignore_eos": True})
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].text is not None:
                tokens += 1
                if first is None:
                    first = time.perf_counter()
        end = time.perf_counter()
        stats["ttft"].append(first - start)
        if tokens > 1:
            stats["tpot"].append((end - first) / (tokens - 1))
        stats["done"] += 1


async def run(args, url, model):
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused",
                                timeout=120)
    stats = {"ttft": [], "tpot": [], "done": 0}
    counter = [0]
    start = time.perf_counter()
    deadline = start + args.seconds
    await asyncio.gather(*(client_loop(client, model, args, deadline, stats, counter)
                           for _ in range(args.clients)))
    elapsed = time.perf_counter() - start
    return stats, elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="a running server; default: start one")
    ap.add_argument("--model", default=str(ROOT / "tests" / "data" / "chat_tiny"))
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server(args.model, args.threads)
    try:
        model = requests.get(url + "/v1/models").json()["data"][0]["id"]
        names = ["tandem_time_to_first_token_seconds", "tandem_time_per_output_token_seconds"]
        before = [histogram(url, n) for n in names]
        stats, elapsed = asyncio.run(run(args, url, model))
        after = [histogram(url, n) for n in names]
    finally:
        if proc:
            proc.terminate()
            proc.wait()
    result = {
        "clients": args.clients,
        "requests": stats["done"],
        "seconds": round(elapsed, 2),
        "requests_per_second": round(stats["done"] / elapsed, 1),
        "ttft_p50_ms": round(1e3 * percentile(stats["ttft"], 50), 1),
        "ttft_p99_ms": round(1e3 * percentile(stats["ttft"], 99), 1),
        "tpot_p50_ms": round(1e3 * percentile(stats["tpot"], 50), 2),
        "tpot_p99_ms": round(1e3 * percentile(stats["tpot"], 99), 2),
        # Server-side (from /metrics): the bucket bound holding p50/p99, and the mean. The
        # client-side figures include the client's own scheduling, which on a small machine
        # shares the cores with the server and reads streamed tokens in bursts.
        "server_ttft_p50_le_ms": 1e3 * server_side(before[0], after[0], 50)[0],
        "server_ttft_p99_le_ms": 1e3 * server_side(before[0], after[0], 99)[0],
        "server_ttft_mean_ms": round(1e3 * server_side(before[0], after[0], 50)[1], 1),
        "server_tpot_p50_le_ms": 1e3 * server_side(before[1], after[1], 50)[0],
        "server_tpot_p99_le_ms": 1e3 * server_side(before[1], after[1], 99)[0],
        "server_tpot_mean_ms": round(1e3 * server_side(before[1], after[1], 50)[1], 2),
        "output_tokens_per_second": round(
            stats["done"] * args.max_tokens / elapsed, 1),
    }
    print("| " + " | ".join(result) + " |")
    print("|" + "---|" * len(result))
    print("| " + " | ".join(str(v) for v in result.values()) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
