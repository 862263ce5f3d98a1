#!/usr/bin/env python3
"""Bounded load test of tandem-server on loopback with the official openai client. Not part of
CI's pass/fail. Three workloads:

  completions (default): N concurrent streaming clients send requests for at most --seconds (or
    --requests in all); requests/s, time to first token and time per output token (p50/p99).
  chat: N users hold multi-turn conversations (a shared system prompt, a history that grows by
    each question and answer); TTFT p50/p99 and the prefill the prefix cache saved (from
    /metrics). --compare runs it twice, on a server with prefix caching and one without.
  capacity: N clients send requests with unique prompts into a fixed KV budget (--kv-cache-mb);
    the peak and mean of running sequences (/metrics, polled), tokens/s and preemptions.
    --compare runs it with KV allocated as sequences grow and with prompt + max_tokens reserved
    at admission (--kv-reserve-max-tokens).

    .venv/bin/python bench/load_test.py                      # starts build/tools/tandem-server
    .venv/bin/python bench/load_test.py --url http://127.0.0.1:8000 --model NAME
    .venv/bin/python bench/load_test.py --workload chat --compare \
        --model models/demo/tandem-demo-moe --clients 8 --turns 4
    .venv/bin/python bench/load_test.py --workload capacity --compare \
        --model models/demo/tandem-demo-moe --kv-cache-mb 8 --clients 16
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import threading
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


def gauge(url, name):
    """A metric without labels from /metrics."""
    for line in requests.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise KeyError(name)


def start_server(model, threads, extra=()):
    proc = subprocess.Popen(
        [str(ROOT / "build" / "tools" / "tandem-server"), "--model", model, "--port", "0",
         "--threads", str(threads), "--log-level", "warn", *extra],
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


WORDS = ("fox river stone lantern meadow copper whistle orchard harbour candle ember willow "
         "thunder marble saddle quarry falcon hollow ribbon cellar").split()


def sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


async def chat_user(client, model, args, user, system, stats):
    """One user's conversation: each turn sends the whole history and appends the answer."""
    rng = random.Random(args.seed * 7919 + user)
    history = [{"role": "system", "content": system}]
    for turn in range(args.turns):
        history.append({"role": "user", "content": "Tell me about " + sentence(rng, 8)})
        start = time.perf_counter()
        first, text = None, []
        stream = await client.chat.completions.create(
            model=model, messages=history, max_tokens=args.max_tokens, temperature=0.8,
            seed=args.seed + 1000 * user + turn, stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
                if first is None:
                    first = time.perf_counter()
        if first is not None:
            stats["ttft"].append(first - start)
            stats["ttft_by_turn"].setdefault(turn, []).append(first - start)
        stats["done"] += 1
        history.append({"role": "assistant", "content": "".join(text)})


async def capacity_client(client, model, args, index, stats):
    rng = random.Random(args.seed * 104729 + index)
    for i in range(args.requests_per_client):
        # --max-tokens 0: none sent, the answer ends at EOS (a chat client's usual request,
        # which reservation must size for the rest of the context).
        limit = ({"max_tokens": args.max_tokens, "extra_body": {"ignore_eos": True}}
                 if args.max_tokens > 0 else {})
        start = time.perf_counter()
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"{index}.{i}: " +
                                    sentence(rng, args.prompt_words)}],
            temperature=0.8, seed=args.seed + index * 1000 + i, stream=True, **limit)
        first = None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content and first is None:
                first = time.perf_counter()
        if first is not None:
            stats["ttft"].append(first - start)
        stats["done"] += 1


def poll(url, name, stop, samples):
    while not stop.is_set():
        try:
            samples.append(gauge(url, name))
        except (requests.RequestException, KeyError):
            pass
        time.sleep(0.02)


COUNTERS = ["tandem_prefix_cache_queries_total", "tandem_prefix_cache_hits_total",
            "tandem_prompt_tokens_total", "tandem_generation_tokens_total",
            "tandem_preemptions_total"]


def run_workload(args, extra_flags):
    """Starts a server with extra_flags (unless --url), runs args.workload, returns the row."""
    proc, url = (None, args.url) if args.url else start_server(args.model, args.threads,
                                                                extra_flags)
    try:
        model = requests.get(url + "/v1/models").json()["data"][0]["id"]
        before = {n: gauge(url, n) for n in COUNTERS}
        ttft_before = histogram(url, "tandem_time_to_first_token_seconds")
        stats = {"ttft": [], "ttft_by_turn": {}, "done": 0}
        samples, stop = [], threading.Event()
        poller = threading.Thread(target=poll, args=(url, "tandem_active_sequences", stop,
                                                      samples))
        poller.start()

        async def go():
            client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", timeout=600)
            if args.workload == "chat":
                system = "You are a patient dictionary. " + " ".join(
                    sentence(random.Random(args.seed), 12) for _ in range(args.system_sentences))
                await asyncio.gather(*(chat_user(client, model, args, u, system, stats)
                                       for u in range(args.clients)))
            else:
                await asyncio.gather(*(capacity_client(client, model, args, c, stats)
                                       for c in range(args.clients)))

        start = time.perf_counter()
        asyncio.run(go())
        elapsed = time.perf_counter() - start
        stop.set()
        poller.join()
        after = {n: gauge(url, n) for n in COUNTERS}
        ttft_after = histogram(url, "tandem_time_to_first_token_seconds")
        blocks = gauge(url, "tandem_kv_cache_blocks_total")
    finally:
        if proc:
            proc.terminate()
            proc.wait()
    delta = {n: after[n] - before[n] for n in COUNTERS}
    row = {
        "server flags": " ".join(extra_flags) or "(defaults)",
        "requests": stats["done"],
        "seconds": round(elapsed, 1),
        "ttft_p50_ms": round(1e3 * percentile(stats["ttft"], 50), 1),
        "ttft_p99_ms": round(1e3 * percentile(stats["ttft"], 99), 1),
        "server_ttft_mean_ms": round(1e3 * server_side(ttft_before, ttft_after, 50)[1], 1),
        "prompt_tokens": int(delta["tandem_prompt_tokens_total"]),
        "prefill_tokens_saved": int(delta["tandem_prefix_cache_hits_total"]),
        "hit_ratio": round(delta["tandem_prefix_cache_hits_total"] /
                           max(1.0, delta["tandem_prefix_cache_queries_total"]), 3),
        "preemptions": int(delta["tandem_preemptions_total"]),
        "peak_running_sequences": int(max(samples, default=0)),
        "mean_running_sequences": round(statistics.mean(samples), 1) if samples else 0,
        "kv_blocks": int(blocks),
        "output_tokens_per_second": round(delta["tandem_generation_tokens_total"] / elapsed, 1),
    }
    if args.workload == "chat":
        row["ttft_p50_ms_by_turn"] = " / ".join(
            str(round(1e3 * percentile(v, 50), 1)) for _, v in sorted(stats["ttft_by_turn"].items()))
    return row


def print_rows(rows):
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="a running server; default: start one")
    ap.add_argument("--model", default=str(ROOT / "tests" / "data" / "chat_tiny"))
    ap.add_argument("--workload", choices=["completions", "chat", "capacity"],
                    default="completions")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--turns", type=int, default=4, help="chat: turns per user")
    ap.add_argument("--system-sentences", type=int, default=30,
                    help="chat: sentences of 12 words in the shared system prompt")
    ap.add_argument("--requests-per-client", type=int, default=3, help="capacity")
    ap.add_argument("--prompt-words", type=int, default=24, help="capacity: words per prompt")
    ap.add_argument("--kv-cache-mb", type=float, help="the server's KV budget")
    ap.add_argument("--compare", action="store_true",
                    help="chat: with and without prefix caching; capacity: lazy and reserved KV")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.workload != "completions":
        base = ["--kv-cache-mb", str(args.kv_cache_mb)] if args.kv_cache_mb else []
        variants = [base]
        if args.compare:
            variants.append(base + (["--no-prefix-caching"] if args.workload == "chat" else
                                    ["--kv-reserve-max-tokens"]))
        rows = [run_workload(args, v) for v in variants]
        print(f"load average {os.getloadavg()[0]:.2f}")
        print_rows(rows)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
        return
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
