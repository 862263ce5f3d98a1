#!/usr/bin/env python3
"""Train Tandem's demo model: a small Qwen3MoeForCausalLM on the corpus of
tools/make_demo_corpus.sh with the tokenizer of tools/train_demo_tokenizer.py, on the CPU.

    OMP_NUM_THREADS=1 python3 tools/train_demo_model.py            # the full run
    OMP_NUM_THREADS=1 python3 tools/train_demo_model.py --measure 5  # seconds per step only
    OMP_NUM_THREADS=1 python3 tools/train_demo_model.py --resume     # continue after a stop

Reproducible: one thread, a fixed seed, a fixed number of steps, the training stream laid out
from the corpus in a seeded order. Every --save-every steps the model is written with
save_pretrained in bf16 to --out (so a partial run leaves a usable model) and the full
training state (f32 weights, AdamW moments, step) to --state for --resume.

Recipe: AdamW (0.9, 0.95, weight decay 0.1 on matrices), linear warm-up then cosine decay to a
tenth of the peak, gradient clipping at 1.0, next-token cross-entropy plus Qwen3-MoE's router
load-balancing loss (output_router_logits, router_aux_loss_coef) on every MoE layer.
"""
import argparse
import json
import math
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer

# The model's shape. head_dim * heads == hidden as in the smaller Qwen3 models; 32 fine-grained
# experts, 4 active, on every layer (no dense MLP layers); tied embeddings keep the bf16 file
# under 50 MB.
MODEL = dict(
    vocab_size=8192, hidden_size=256, num_hidden_layers=8, num_attention_heads=4,
    num_key_value_heads=2, head_dim=64, intermediate_size=512, moe_intermediate_size=96,
    num_experts=32, num_experts_per_tok=4, norm_topk_prob=True, decoder_sparse_step=1,
    mlp_only_layers=[], max_position_embeddings=1024, rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, attention_bias=False,
    use_sliding_window=False, tie_word_embeddings=True, router_aux_loss_coef=0.01,
    output_router_logits=True, bos_token_id=None, eos_token_id=8191, pad_token_id=8189,
)
EOT = 8189  # <|endoftext|>, between documents
IM_END = 8191  # <|im_end|>


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=Path("build/demo-corpus"))
    p.add_argument("--out", type=Path, default=Path("models/demo/tandem-demo-moe"))
    p.add_argument("--state", type=Path, default=Path("build/demo-train/state.pt"))
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--measure", type=int, default=0, help="time this many steps and exit")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--override", type=json.loads, default={},
                   help='JSON of MODEL fields to change, e.g. \'{"moe_intermediate_size": 96}\'')
    return p.parse_args()


def token_stream(corpus, tokenizer_path, seed):
    """All training documents in a seeded order, tokenized, each followed by <|endoftext|>;
    cached as uint16 next to the corpus."""
    cache = corpus / f"train_tokens_seed{seed}.npy"
    if cache.exists():
        return np.load(cache)
    tok = Tokenizer.from_file(str(tokenizer_path))
    texts = [json.loads(line)["text"] for line in open(corpus / "train.jsonl", encoding="utf-8")]
    random.Random(seed).shuffle(texts)
    ids = []
    for start in range(0, len(texts), 4096):
        for enc in tok.encode_batch(texts[start:start + 4096]):
            ids.extend(enc.ids)
            ids.append(EOT)
    stream = np.asarray(ids, dtype=np.uint16)
    np.save(cache, stream)
    return stream


def valid_batches(corpus, tokenizer_path, seq_len, n_rows):
    """Fixed evaluation rows from the held-out split (the first documents, concatenated)."""
    tok = Tokenizer.from_file(str(tokenizer_path))
    ids = []
    for line in open(corpus / "valid.jsonl", encoding="utf-8"):
        ids.extend(tok.encode(json.loads(line)["text"]).ids + [EOT])
        if len(ids) >= n_rows * (seq_len + 1):
            break
    rows = torch.tensor(ids[:n_rows * (seq_len + 1)], dtype=torch.long).view(n_rows, seq_len + 1)
    return rows


def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def save_model(model, out, step, args, log):
    """save_pretrained in bf16 (a copy, so training stays in f32), with generation defaults."""
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    bf16 = transformers.Qwen3MoeForCausalLM(model.config)
    bf16.load_state_dict(model.state_dict())
    bf16 = bf16.to(torch.bfloat16)
    bf16.config.output_router_logits = False  # inference does not need router logits
    bf16.generation_config = transformers.GenerationConfig(
        eos_token_id=[IM_END, EOT], pad_token_id=EOT, do_sample=False, max_new_tokens=128)
    bf16.save_pretrained(tmp)
    # Keep the tokenizer files and README already in --out; replace only the weights and configs.
    for f in tmp.iterdir():
        shutil.move(str(f), out / f.name)
    tmp.rmdir()
    (out / "training_state.json").write_text(json.dumps(
        {"step": step, "steps": args.steps, "log_tail": log[-3:]}, indent=1) + "\n")


def main():
    args = parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    tokenizer_path = args.out / "tokenizer.json"
    stream = token_stream(args.corpus, tokenizer_path, args.seed)
    rows_total = (len(stream) - 1) // args.seq_len
    print(f"train stream {len(stream):,} tokens, {rows_total:,} rows of {args.seq_len + 1}; "
          f"{args.steps} steps x {args.batch} rows = "
          f"{args.steps * args.batch / rows_total:.2f} epochs", flush=True)
    # Row order: a seeded permutation of non-overlapping windows, cycled if more are needed.
    order = torch.randperm(rows_total, generator=torch.Generator().manual_seed(args.seed))
    stream_t = torch.from_numpy(stream.astype(np.int64))
    valid = valid_batches(args.corpus, tokenizer_path, args.seq_len, 32)

    config = transformers.Qwen3MoeConfig(**{**MODEL, **args.override})
    model = transformers.Qwen3MoeForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    active = n_params - config.num_hidden_layers * 3 * config.hidden_size * \
        config.moe_intermediate_size * (config.num_experts - config.num_experts_per_tok)
    print(f"parameters {n_params:,} ({active:,} active per token)", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                               {"params": no_decay, "weight_decay": 0.0}],
                              lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    step, log, train_seconds = 0, [], 0.0
    if args.resume and args.state.exists():
        state = torch.load(args.state, weights_only=False)
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        step, log, train_seconds = state["step"], state["log"], state["train_seconds"]
        torch.set_rng_state(state["rng"])
        print(f"resumed at step {step}", flush=True)

    def next_token_loss(rows, **kwargs):
        """Cross-entropy of each position's next token; rows [batch, seq_len + 1]."""
        out = model(input_ids=rows[:, :-1], **kwargs)
        ce = torch.nn.functional.cross_entropy(out.logits.float().view(-1, config.vocab_size),
                                               rows[:, 1:].reshape(-1))
        return ce, out

    def evaluate():
        model.eval()
        with torch.no_grad():
            losses = [next_token_loss(valid[i:i + 8], output_router_logits=False)[0].item()
                      for i in range(0, len(valid), 8)]
        model.train()
        return sum(losses) / len(losses)

    model.train()
    last_print = time.time()
    while step < (args.measure or args.steps):
        t0 = time.time()
        idx = order[(torch.arange(args.batch) + step * args.batch) % rows_total]
        starts = idx * args.seq_len
        batch = torch.stack([stream_t[s:s + args.seq_len + 1] for s in starts.tolist()])
        for g in optim.param_groups:
            g["lr"] = lr_at(step, args)
        # The loss is computed here, not by passing labels (the model's loss_function shifts
        # them once more); aux_loss comes from the model's router logits.
        ce, out = next_token_loss(batch, output_router_logits=True)
        loss = ce + config.router_aux_loss_coef * out.aux_loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        optim.step()
        step += 1
        dt = time.time() - t0
        train_seconds += dt
        if args.measure:
            print(f"step {step}: {dt:.2f} s, {args.batch * args.seq_len / dt:.0f} tokens/s, "
                  f"loss {ce.item():.3f}", flush=True)
            continue
        entry = {"step": step, "loss": round(ce.item(), 4), "aux": round(out.aux_loss.item(), 4),
                 "lr": lr_at(step - 1, args), "grad_norm": round(grad_norm, 3),
                 "train_seconds": round(train_seconds, 1)}
        if step % args.save_every == 0 or step == args.steps:
            entry["valid_loss"] = round(evaluate(), 4)
        log.append(entry)
        if time.time() - last_print > 30 or "valid_loss" in entry:
            print(json.dumps(entry), flush=True)
            last_print = time.time()
        if "valid_loss" in entry:
            save_model(model, args.out, step, args, log)
            args.state.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict(), "optim": optim.state_dict(), "step": step,
                        "log": log, "train_seconds": train_seconds,
                        "rng": torch.get_rng_state()}, args.state)
            (args.state.parent / "log.json").write_text(json.dumps(log) + "\n")


if __name__ == "__main__":
    main()
