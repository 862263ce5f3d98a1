"""The rollout engine's measurements of issue 21, on the demo model and this machine, in one run:
  1. rollout throughput, n = 8 samples x 32 prompts, Tandem against transformers' generate;
  2. the logprob mismatch between Tandem and the trainer: for every rollout token, Tandem's
     logprob against the trainer's recomputed one (f32 transformers), with Tandem's
     batch-invariant mode on and off, and with the trainer's MoE routing recomputed or replayed
     from Tandem's routed experts.

  python tools/posttrain/measure.py [--out measure.json]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import policy
import task
import tandem

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "models" / "demo" / "tandem-demo-moe"


def prompts_of(engine, count, seed):
    rng = np.random.default_rng(seed)
    problems = [task.Problem(*(int(x) for x in rng.integers(0, 100, size=2)))
                for _ in range(count)]
    return [task.prompt_ids(p, engine.tokenize) for p in problems]


def tandem_throughput(engine, prompts, n, max_tokens):
    params = tandem.SamplingParams(n=n, temperature=1.0, seed=1, max_tokens=max_tokens,
                                   ignore_eos=True)
    engine.generate(prompts[:2], params)  # warm-up
    t0 = time.perf_counter()
    outs = engine.generate(prompts, params)
    seconds = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for o in outs for c in o.completions)
    return tokens / seconds, seconds


def transformers_throughput(model, prompts, n, max_tokens, pad_id):
    # Left padding for a batch of prompts; every sample generates exactly max_tokens.
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in prompts])[:, None])
    kwargs = dict(do_sample=True, temperature=1.0, top_k=0, num_return_sequences=n,
                  max_new_tokens=max_tokens, min_new_tokens=max_tokens, pad_token_id=pad_id)
    with torch.no_grad():
        model.generate(input_ids=ids[:2], attention_mask=mask[:2].long(), **kwargs)
        t0 = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=mask.long(), **kwargs)
        seconds = time.perf_counter() - t0
    tokens = (out.shape[1] - width) * out.shape[0]
    return tokens / seconds, seconds


def mismatch(model, engine, prompts, n, max_tokens):
    """Per rollout token: Tandem's logprob minus the trainer's, with routing recomputed and
    replayed; the KL of Tandem's sampling distribution to the trainer's, estimated with k3
    (mean of e^d - 1 - d for d = trainer - Tandem, >= 0 per token)."""
    params = tandem.SamplingParams(n=n, temperature=1.0, seed=7, max_tokens=max_tokens,
                                   logprobs=0, return_routed_experts=True)
    outs = engine.generate(prompts, params)
    diffs = {"recomputed": [], "replayed": []}
    for o in outs:
        for c in o.completions:
            ids = o.prompt_token_ids + c.token_ids
            mine = np.array(c.logprobs)
            start = len(o.prompt_token_ids) - 1
            for kind, replay in (("recomputed", None), ("replayed", c.routed_experts.experts)):
                theirs = policy.sequence_logprobs(model, ids, replay).numpy()[start:]
                diffs[kind].append(theirs - mine)
    routers = [layer.mlp.gate for layer in model.model.layers]
    flips = sum(getattr(r, "replay_flips", 0) for r in routers)
    for r in routers:
        r.replay_flips = 0
    rows = {}
    for kind, parts in diffs.items():
        d = np.concatenate(parts).astype(np.float64)
        rows[kind] = {"tokens": int(d.size), "mean_abs": float(np.abs(d).mean()),
                      "max_abs": float(np.abs(d).max()),
                      "kl_k3": float(np.mean(np.exp(d) - 1 - d))}
    # (position, MoE layer) pairs where the trainer's router alone would choose other experts
    rows["replayed"]["routing_flips"] = flips
    return rows


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(DEMO))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--mismatch-prompts", type=int, default=8)
    p.add_argument("--out")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = policy.load_policy(args.model).eval()
    result = {"threads": args.threads, "prompts": args.prompts, "n": args.n,
              "max_tokens": args.max_tokens, "mismatch": {}}
    for batch_invariant in (False, True):
        # (batch_invariant is process-wide in Tandem: one engine at a time)
        engine = tandem.Engine(args.model, n_threads=args.threads, pin_threads=False,
                               batch_invariant=batch_invariant)
        prompts = prompts_of(engine, args.prompts, seed=1)
        if not batch_invariant:
            tps, s = tandem_throughput(engine, prompts, args.n, args.max_tokens)
            result["tandem_tokens_per_s"], result["tandem_seconds"] = tps, s
            print(f"Tandem: {tps:.0f} tokens/s ({s:.2f} s)", flush=True)
            tps, s = transformers_throughput(model, prompts, args.n, args.max_tokens,
                                             engine.eos_token_ids[0])
            result["transformers_tokens_per_s"], result["transformers_seconds"] = tps, s
            print(f"transformers: {tps:.0f} tokens/s ({s:.2f} s)", flush=True)
        rows = mismatch(model, engine, prompts[:args.mismatch_prompts], args.n, 24)
        key = "batch_invariant" if batch_invariant else "default"
        result["mismatch"][key] = rows
        for kind, r in rows.items():
            print(f"{key:15s} routing {kind:10s}: {r['tokens']} tokens, mean |d| "
                  f"{r['mean_abs']:.2e}, max |d| {r['max_abs']:.2e}, KL(k3) {r['kl_k3']:.2e}"
                  + (f", routing flips {r['routing_flips']}" if "routing_flips" in r else ""),
                  flush=True)
        del engine
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
