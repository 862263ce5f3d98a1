#!/usr/bin/env python3
"""Evaluate the demo model (models/demo/tandem-demo-moe) with transformers, on the held-out
split of tools/make_demo_corpus.sh, and write the figures as JSON:

  perplexity   per token over every held-out document (each followed by <|endoftext|>), in
               non-overlapping windows of --ctx tokens; also bits per byte of UTF-8 text
  samples      greedy continuations of fixed text and chat prompts, from transformers and,
               when build/tools/tandem-run exists, from Tandem (the ids must be equal)
  lookahead    gate-lookahead recall (see below) over --prompts held-out prompts
  experts      how evenly each layer's experts are used (share of the busiest expert, and the
               number of experts that together take half of the routed tokens)

Gate lookahead. For a token at layer L, let r_L be the residual stream entering layer L's MoE
block (after attention, before post_attention_layernorm) and n_L = post_attention_layernorm_L
(r_L), the state layer L's router sees. Layer L+j's actual choice is top-k(gate_{L+j} n_{L+j}).
Predictors of it, from what is known while layer L runs:
  own_norm    top-k(gate_{L+j} n_L)                               (layer L's normalised state)
  next_norm   top-k(gate_{L+j} post_attention_layernorm_{L+j}(r_L))
and, as the baseline, prev_token: layer L+j's choice for the previous token of the sequence.
Recall = |predicted ∩ actual| / k, averaged over tokens (positions >= 1) and over L.

    OMP_NUM_THREADS=1 python3 tools/eval_demo_model.py [--out build/demo-eval.json]
"""
import argparse
import json
import math
import subprocess
import time
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer

MODEL = Path("models/demo/tandem-demo-moe")  # the default of --model
EOT = 8189
TEXT_PROMPTS = [
    "In the beginning God created the heaven and the earth.",
    "And the LORD said unto Moses,",
    "Apple, n.",
    "The hacker",
    "A computer is",
]
CHAT_PROMPTS = [
    'What does "lantern" mean?',
    'Define "honest".',
    "Recite Psalms 23 from the King James Bible.",
]


def chat_text(question):
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def held_out(corpus):
    return [json.loads(line)["text"] for line in open(corpus / "valid.jsonl", encoding="utf-8")]


@torch.no_grad()
def perplexity(model, tok, docs, ctx):
    ids = []
    for enc in tok.encode_batch(docs):
        ids.extend(enc.ids + [EOT])
    n_bytes = sum(len(d.encode()) for d in docs)
    total_nll, total_tokens = 0.0, 0
    for start in range(0, len(ids) - 1, ctx):
        window = torch.tensor(ids[start:start + ctx + 1])[None]
        logits = model(window[:, :-1]).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[0], window[0, 1:], reduction="sum")
        total_nll += nll.item()
        total_tokens += window.shape[1] - 1
    return {"tokens": total_tokens, "bytes": n_bytes, "ctx": ctx,
            "nll_per_token": total_nll / total_tokens,
            "perplexity": math.exp(total_nll / total_tokens),
            "bits_per_byte": total_nll / math.log(2) / n_bytes}


def tandem_greedy(tandem_run, model_dir, text, max_tokens):
    out = subprocess.run([str(tandem_run), "--model", str(model_dir), "--prompt", text,
                          "--max-tokens", str(max_tokens), "--temperature", "0", "--threads", "1"],
                         capture_output=True, text=True, check=True).stdout
    return [int(x) for x in out.splitlines()[0].split()]


@torch.no_grad()
def samples(model, tok, max_tokens, tandem_run, model_dir):
    out = []
    for kind, text in [("text", t) for t in TEXT_PROMPTS] + \
                      [("chat", chat_text(q)) for q in CHAT_PROMPTS]:
        prompt = torch.tensor([tok.encode(text).ids])
        gen = model.generate(prompt, max_new_tokens=max_tokens, do_sample=False)
        ids = gen[0, prompt.shape[1]:].tolist()
        entry = {"kind": kind, "prompt": text, "ids": ids,
                 "text": tok.decode(ids, skip_special_tokens=False)}
        if tandem_run.exists():
            entry["tandem_ids_equal"] = tandem_greedy(tandem_run, model_dir, text, max_tokens) == ids
        out.append(entry)
    return out


@torch.no_grad()
def routing_states(model, ids):
    """Per layer: the residual r_L entering the MoE block and n_L, its normalised form."""
    captured = []

    def hook(module, args, output):
        captured.append((args[0][0].float(), output[0].float()))

    handles = [layer.post_attention_layernorm.register_forward_hook(hook)
               for layer in model.model.layers]
    model(ids[None])
    for h in handles:
        h.remove()
    return captured


def top_k(h, gate_weight, k):
    return torch.topk(h @ gate_weight.float().T, k, dim=-1).indices  # softmax keeps the order


def recall(pred, actual):
    """Mean over tokens of |pred ∩ actual| / k; both [n_tokens, k]."""
    hits = (pred[:, :, None] == actual[:, None, :]).any(-1).float().sum(-1)
    return hits / actual.shape[-1]


@torch.no_grad()
def lookahead(model, tok, docs, n_prompts, prompt_tokens):
    cfg = model.config
    layers = model.model.layers
    k, n_layers = cfg.num_experts_per_tok, cfg.num_hidden_layers
    gates = [layer.mlp.gate.weight for layer in layers]
    norms = [layer.post_attention_layernorm for layer in layers]
    sums = {name: {j: [0.0, 0] for j in (1, 2, 3)} for name in ("own_norm", "next_norm")}
    prev = [0.0, 0]
    load = torch.zeros(n_layers, cfg.num_experts)
    # Evenly spaced held-out documents of at least 16 tokens, cut to prompt_tokens.
    long_enough = [ids for ids in (enc.ids for enc in tok.encode_batch(docs)) if len(ids) >= 16]
    step = max(1, len(long_enough) // n_prompts)
    prompts = long_enough[::step][:n_prompts]
    for prompt in prompts:
        ids = torch.tensor(prompt[:prompt_tokens])
        states = routing_states(model, ids)
        actual = [top_k(n, gates[L], k) for L, (_, n) in enumerate(states)]
        for L in range(n_layers):
            load[L] += torch.bincount(actual[L].flatten(), minlength=cfg.num_experts)
            r = recall(actual[L][:-1], actual[L][1:])  # previous token, same layer
            prev[0] += r.sum().item()
            prev[1] += len(r)
            for j in (1, 2, 3):
                if L + j >= n_layers:
                    continue
                residual, normed = states[L]
                preds = {"own_norm": top_k(normed, gates[L + j], k),
                         "next_norm": top_k(norms[L + j](residual), gates[L + j], k)}
                for name, pred in preds.items():
                    r = recall(pred[1:], actual[L + j][1:])  # positions >= 1, as prev_token
                    sums[name][j][0] += r.sum().item()
                    sums[name][j][1] += len(r)
    result = {name: {f"j={j}": s / n for j, (s, n) in by_j.items()} for name, by_j in sums.items()}
    result["prev_token"] = prev[0] / prev[1]
    result["chance"] = k / cfg.num_experts
    result["prompts"] = len(prompts)
    result["tokens_per_prompt_max"] = prompt_tokens
    share = load / load.sum(-1, keepdim=True)
    half = [(int((torch.cumsum(s.sort(descending=True).values, 0) < 0.5).sum()) + 1)
            for s in share]
    experts = {"max_share_per_layer": [round(x, 4) for x in share.max(-1).values.tolist()],
               "experts_for_half_the_load_per_layer": half,
               "uniform_share": 1 / cfg.num_experts}
    return result, experts


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=MODEL)
    p.add_argument("--corpus", type=Path, default=Path("build/demo-corpus"))
    p.add_argument("--out", type=Path, default=Path("build/demo-eval.json"))
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--prompts", type=int, default=300)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--tandem-run", type=Path, default=Path("build/tools/tandem-run"))
    p.add_argument("--skip", nargs="*", default=[], help="parts to skip: perplexity samples ...")
    args = p.parse_args()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    tok = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    # bf16 weights upcast to f32: the computation Tandem's CPU path does.
    model = transformers.AutoModelForCausalLM.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation="eager",
        experts_implementation="eager").eval()
    docs = held_out(args.corpus)
    result = {"model_step": json.loads((args.model / "training_state.json").read_text())["step"]}
    for name, fn in [("samples", lambda: samples(model, tok, args.max_tokens, args.tandem_run,
                                                 args.model)),
                     ("lookahead", lambda: lookahead(model, tok, docs, args.prompts,
                                                     args.prompt_tokens)),
                     ("perplexity", lambda: perplexity(model, tok, docs, args.ctx))]:
        if name in args.skip:
            continue
        t0 = time.time()
        value = fn()
        if name == "lookahead":
            result["lookahead"], result["experts"] = value
        else:
            result[name] = value
        print(f"{name}: {time.time() - t0:.0f} s", flush=True)
        args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
