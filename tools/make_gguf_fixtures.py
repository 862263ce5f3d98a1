#!/usr/bin/env python3
"""Write tests/data/gguf/: tiny models of every architecture Tandem loads from GGUF, in F32, F16,
Q8_0, Q4_0 and Q4_K, written with gguf-py the way llama.cpp's convert_hf_to_gguf.py names and
lays them out, plus the logits transformers computes for them (run by hand; CI only reads them).

Each model starts from the golden checkpoint's config (tests/data/golden/<arch>/f32/config.json)
shrunk so that all files stay small, with fresh random weights (make_golden.randomize):
  small  hidden 32, for F32, F16, Q8_0 and Q4_0 (blocks of 32)
  k      hidden 256, for Q4_K (blocks of 256); rows of other widths fall back per tensor as in
         llama.cpp (Q5_0, or F16 below 32), and attn_v is Q6_K as in llama.cpp's Q4_K_M: that file
         mixes Q4_K, Q6_K, Q5_0, F16 and F32 as real Q4_K_M files of Qwen1.5-MoE or DeepSeek-V2-Lite
         do.
reference.safetensors per arch holds prompt_ids and, per file, `logits_<type>`: transformers' f32
forward pass on the weights as gguf-py's reference code dequantizes them from that file, and
`logits_f32_k`: the same on the k model's original f32 weights (logits_f32 is the small one's).

Layout variants, so that each naming convention is read somewhere: mixtral F16 uses the legacy
per-expert names (blk.N.ffn_gate.E.weight), qwen3_moe Q8_0 the fused ffn_gate_up_exps, olmoe Q4_0
is split in two files (-00001-of-00002.gguf). deepseek2 files come in both of llama.cpp's
generations: F32 and Q4_0 as converters wrote them before llama.cpp's MLA support (one attn_kv_b,
key_length = the head's qk width), F16, Q8_0 and Q4_K as they write them since (attn_kv_b split
into attn_k_b, per head transposed, and attn_v_b; key_length_mla; head_count_kv 1).

    pip install gguf numpy torch transformers
    python3 tools/make_gguf_fixtures.py                 # every architecture
    python3 tools/make_gguf_fixtures.py deepseek_v3     # only the ones named
"""

import json
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import transformers
from gguf import GGMLQuantizationType as T
from gguf import ExpertGatingFuncType, GGUFWriter, RopeScalingType, TokenType, quants
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from make_golden import IMPL, randomize  # noqa: E402

OUT = ROOT / "tests" / "data" / "gguf"
GOLDEN = ROOT / "tests" / "data" / "golden"
PROMPT_LEN = 8
VOCAB = 128  # 3 specials + the 95 printable ASCII bytes + 30 merges: ASCII text only

GGUF_ARCH = {"llama": "llama", "mixtral": "llama", "qwen2": "qwen2", "qwen2_moe": "qwen2moe",
             "qwen3_moe": "qwen3moe", "olmoe": "olmoe", "deepseek_v2": "deepseek2",
             "deepseek_v3": "deepseek2", "glm4_moe": "glm4moe"}
SEEDS = {"llama": 11, "mixtral": 12, "qwen2": 13, "qwen2_moe": 14, "qwen3_moe": 15, "olmoe": 16,
         "deepseek_v2": 17, "deepseek_v3": 18, "glm4_moe": 19}


def shrink(arch, variant):
    cfg = json.loads((GOLDEN / arch / "f32" / "config.json").read_text())
    hidden = 32 if variant == "small" else 256
    head_dim = 16 if variant == "small" else 32
    cfg.update(vocab_size=VOCAB, hidden_size=hidden, num_attention_heads=2, num_key_value_heads=1,
               tie_word_embeddings=arch != "llama" and arch != "mixtral" or variant == "k")
    cfg["head_dim"] = head_dim * 2 if arch == "qwen3_moe" else head_dim  # q width != hidden
    if arch == "olmoe":  # its q_norm spans hidden_size: heads * head_dim must equal it
        cfg["head_dim"] = hidden // 2
    if "num_local_experts" in cfg or "num_experts" in cfg:
        for key in ("num_local_experts", "num_experts"):
            if key in cfg:
                cfg[key] = 4
    ffn_expert = 16
    if arch in ("mixtral", "olmoe"):
        cfg["intermediate_size"] = ffn_expert
    else:
        cfg["intermediate_size"] = 64
    if arch in ("qwen2_moe", "qwen3_moe"):
        cfg["moe_intermediate_size"] = ffn_expert
        cfg["num_hidden_layers"] = 2 if variant == "small" else 1
        cfg["mlp_only_layers"] = [0] if variant == "small" else []
    else:
        cfg["num_hidden_layers"] = 1
    if "layer_types" in cfg:
        cfg["layer_types"] = cfg["layer_types"][: cfg["num_hidden_layers"]]
    if arch == "qwen2_moe":
        cfg["shared_expert_intermediate_size"] = 32
    if arch == "llama":  # llama3 rope: GGUF stores it as the rope_freqs tensor
        cfg["rope_parameters"]["original_max_position_embeddings"] = 64
    if arch.startswith("deepseek"):
        shrink_deepseek(cfg, arch)
    if arch == "glm4_moe":  # layer 0 dense, layer 1 MoE of 4 experts in 2 groups, 1 MTP layer
        cfg.update(num_hidden_layers=2, first_k_dense_replace=1, n_routed_experts=4,
                   num_experts_per_tok=2, moe_intermediate_size=16, n_group=2, topk_group=1)
    return cfg


def shrink_deepseek(cfg, arch):
    """MLA rows of whole Q8_0 blocks (kv_lora_rank 64, qk_nope 32) so that kv_b, k_b and v_b are
    quantized in the small files, and no two MLA widths equal (a k_b read transposed, or a key
    length of the wrong generation, cannot pass); 2 layers (dense, MoE) of 8 experts in 4
    groups. YaRN on both, with mscale equal to mscale_all_dim as in every DeepSeek config: GGUF
    keeps only yarn_log_multiplier (0.1 * mscale_all_dim), and llama.cpp computes the rest as if
    the two were equal."""
    for key in ("head_dim", "qk_head_dim"):
        cfg.pop(key, None)
    cfg.update(num_key_value_heads=cfg["num_attention_heads"],  # transformers' MLA needs it
               kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=8, v_head_dim=16,
               q_lora_rank=32 if arch == "deepseek_v3" else None, num_hidden_layers=2,
               first_k_dense_replace=1, n_routed_experts=8, num_experts_per_tok=2,
               moe_intermediate_size=16, n_group=4, topk_group=2)
    if arch == "deepseek_v2":  # unscaled experts, as in DeepSeek-V2-Lite (V3 keeps its 2.5)
        cfg["routed_scaling_factor"] = 1.0
        cfg["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 20000.0, "factor": 8.0,
                                  "original_max_position_embeddings": 32, "beta_fast": 32,
                                  "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707}
    else:
        cfg["rope_parameters"]["mscale"] = cfg["rope_parameters"]["mscale_all_dim"]


def make_model(arch, variant):
    cfg = transformers.AutoConfig.for_model(**{k: v for k, v in shrink(arch, variant).items()
                                               if k not in ("architectures", "transformers_version")})
    torch.manual_seed(SEEDS[arch] * 10 + (variant == "k"))
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, **IMPL).eval()
    randomize(model)
    return model


# --- quantizers: gguf-py quantizes Q8_0/Q4_0 like ggml; it has no K-quant quantizer, so these
# are simple ones (not ggml's search); the reference is what gguf-py dequantizes from them.

def f16_bytes(x):
    return np.asarray(x, dtype=np.float16).reshape(-1, 1).view(np.uint8)


def quantize_q4_k(rows):
    x = rows.reshape(-1, 8, 32).astype(np.float32)  # super-blocks of 8 sub-blocks
    lo = np.minimum(x.min(axis=2), 0)
    scale = (x.max(axis=2) - lo) / 15
    d = np.maximum(scale.max(axis=1), 1e-12) / 63
    dmin = np.maximum((-lo).max(axis=1), 1e-12) / 63
    d16, dmin16 = d.astype(np.float16), dmin.astype(np.float16)
    sc = np.clip(np.round(scale / d16.astype(np.float32)[:, None]), 1, 63).astype(np.uint8)
    m = np.clip(np.round(-lo / dmin16.astype(np.float32)[:, None]), 0, 63).astype(np.uint8)
    eff_d = d16.astype(np.float32)[:, None] * sc
    eff_m = dmin16.astype(np.float32)[:, None] * m
    q = np.clip(np.round((x + eff_m[..., None]) / eff_d[..., None]), 0, 15).astype(np.uint8)
    n = x.shape[0]
    scales = np.zeros((n, 12), np.uint8)
    scales[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = m[:, 0:4] | ((m[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)
    q = q.reshape(n, 4, 2, 32)  # chunk c: sub-blocks 2c (low nibbles), 2c+1 (high)
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(n, 128)
    return np.concatenate([f16_bytes(d16), f16_bytes(dmin16), scales, qs], axis=1)


def quantize_q6_k(rows):
    x = rows.reshape(-1, 16, 16).astype(np.float32)
    s = np.abs(x).max(axis=2) / 31.5
    d16 = (np.maximum(np.abs(s).max(axis=1), 1e-12) / 127).astype(np.float16)
    sc = np.clip(np.round(s / d16.astype(np.float32)[:, None]), 1, 127).astype(np.int8)
    eff = d16.astype(np.float32)[:, None] * sc
    q = (np.clip(np.round(x / eff[..., None]), -32, 31) + 32).astype(np.uint8).reshape(-1, 2, 4, 32)
    ql = np.concatenate([q[:, :, 0] & 15 | (q[:, :, 2] & 15) << 4,
                         q[:, :, 1] & 15 | (q[:, :, 3] & 15) << 4], axis=2).reshape(-1, 128)
    qh = (q[:, :, 0] >> 4 | (q[:, :, 1] >> 4) << 2 | (q[:, :, 2] >> 4) << 4 |
          (q[:, :, 3] >> 4) << 6).reshape(-1, 64)
    return np.concatenate([ql, qh, sc.view(np.uint8), f16_bytes(d16)], axis=1)


def encode(w, qtype):
    """w: float32 [..., k] -> (bytes array for gguf-py, dequantized float32 of w's shape)."""
    k = w.shape[-1]
    if qtype == T.F32:
        return w, w
    if qtype == T.F16:
        h = w.astype(np.float16)
        return h, h.astype(np.float32)
    if qtype in (T.Q4_K, T.Q6_K):
        raw = (quantize_q4_k if qtype == T.Q4_K else quantize_q6_k)(w.reshape(-1, k))
        raw = raw.reshape(*w.shape[:-1], k // 256 * raw.shape[-1])
    else:
        raw = quants.quantize(w, qtype)
    return raw, quants.dequantize(raw, qtype).astype(np.float32).reshape(w.shape)


def weight_type(name, shape, ftype):
    """The type of one tensor in a file of `ftype`, as llama.cpp's quantizer chooses."""
    if len(shape) == 1 or name.endswith("ffn_gate_inp.weight") or "rope_freqs" in name:
        return T.F32  # norms, biases, routers
    if ftype == T.Q4_K and name.endswith("attn_v.weight") and shape[-1] % 256 == 0:
        return T.Q6_K
    block = quants.GGML_QUANT_SIZES[ftype][0]
    if shape[-1] % block == 0:
        return ftype
    return T.Q5_0 if shape[-1] % 32 == 0 else T.F16  # llama-quant.cpp's fallback for Q4_K


def permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute (rotate-half rows -> interleaved pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(arch, model, layout):
    """HF state dict -> [(gguf name, array, hf names + how to undo)] in convert_hf_to_gguf order."""
    if GGUF_ARCH[arch] == "deepseek2":
        return deepseek_tensors(model, layout)
    cfg = model.config
    sd = saved_state(model)
    llama = GGUF_ARCH[arch] == "llama"
    out = []  # (gguf_name, array, restore) where restore(dequantized) -> {hf_name: array}
    moe = "block_sparse_moe" if arch == "mixtral" else "mlp"
    proj = {"gate": "w1", "up": "w3", "down": "w2"} if arch == "mixtral" else \
        {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}

    def plain(gname, hname):
        out.append((gname, sd[hname], lambda d, h=hname: {h: d}))

    plain("token_embd.weight", "model.embed_tokens.weight")
    for layer in range(cfg.num_hidden_layers):
        p, b = f"model.layers.{layer}.", f"blk.{layer}."
        plain(b + "attn_norm.weight", p + "input_layernorm.weight")
        for x, n_head in (("q", cfg.num_attention_heads), ("k", cfg.num_key_value_heads)):
            for suffix in ("weight", "bias"):
                h = f"{p}self_attn.{x}_proj.{suffix}"
                if h not in sd:
                    continue
                if llama:
                    out.append((f"{b}attn_{x}.{suffix}", permute(sd[h], n_head),
                                lambda d, h=h, n=n_head: {h: unpermute(d, n)}))
                else:
                    plain(f"{b}attn_{x}.{suffix}", h)
        for suffix in ("weight", "bias"):
            if p + f"self_attn.v_proj.{suffix}" in sd:
                plain(f"{b}attn_v.{suffix}", p + f"self_attn.v_proj.{suffix}")
        plain(b + "attn_output.weight", p + "self_attn.o_proj.weight")
        for x in ("q", "k"):
            if p + f"self_attn.{x}_norm.weight" in sd:
                plain(f"{b}attn_{x}_norm.weight", p + f"self_attn.{x}_norm.weight")
        # Glm4MoeModel names it for what it is; the others for where it goes.
        post_norm = "post_attention_norm" if arch == "glm4_moe" else "ffn_norm"
        plain(f"{b}{post_norm}.weight", p + "post_attention_layernorm.weight")
        if p + f"{moe}.gate.weight" in sd:
            plain(b + "ffn_gate_inp.weight", p + f"{moe}.gate.weight")
            if p + "mlp.gate.e_score_correction_bias" in sd:
                plain(b + "exp_probs_b.bias", p + "mlp.gate.e_score_correction_bias")
            n_exp = sd[p + f"{moe}.gate.weight"].shape[0]
            names = {w: [f"{p}{moe}.experts.{e}.{proj[w]}.weight" for e in range(n_exp)]
                     for w in ("gate", "up", "down")}
            if layout == "legacy":
                for w in ("gate", "up", "down"):
                    for e, h in enumerate(names[w]):
                        plain(f"{b}ffn_{w}.{e}.weight", h)
            else:
                stacked = {w: np.stack([sd[h] for h in names[w]]) for w in names}
                split = lambda d, w: {h: d[e] for e, h in enumerate(names[w])}  # noqa: E731
                if layout == "fused":
                    f = stacked["gate"].shape[1]
                    out.append((b + "ffn_gate_up_exps.weight",
                                np.concatenate([stacked["gate"], stacked["up"]], axis=1),
                                lambda d, f=f: {**split(d[:, :f], "gate"), **split(d[:, f:], "up")}))
                else:
                    for w in ("gate", "up"):
                        out.append((f"{b}ffn_{w}_exps.weight", stacked[w], lambda d, w=w: split(d, w)))
                out.append((b + "ffn_down_exps.weight", stacked["down"], lambda d: split(d, "down")))
            if p + "mlp.shared_experts.gate_proj.weight" in sd:  # GLM: plural, no gate
                for w in ("gate", "up", "down"):
                    plain(f"{b}ffn_{w}_shexp.weight", f"{p}mlp.shared_experts.{w}_proj.weight")
            if p + "mlp.shared_expert.gate_proj.weight" in sd:
                for w in ("gate", "up", "down"):
                    plain(f"{b}ffn_{w}_shexp.weight", f"{p}mlp.shared_expert.{w}_proj.weight")
                h = p + "mlp.shared_expert_gate.weight"
                out.append((b + "ffn_gate_inp_shexp.weight", sd[h].reshape(-1),
                            lambda d, h=h: {h: d.reshape(1, -1)}))
        else:
            for w in ("gate", "up", "down"):
                plain(f"{b}ffn_{w}.weight", f"{p}mlp.{w}_proj.weight")
    plain("output_norm.weight", "model.norm.weight")
    if "lm_head.weight" in sd and not cfg.tie_word_embeddings:
        plain("output.weight", "lm_head.weight")
    for layer in range(cfg.num_hidden_layers, cfg.num_hidden_layers + mtp_layers(cfg)):
        # GLM's next-token layer as Glm4MoeModel writes it: after the decoder's blocks, a
        # block of its own plus nextn.* tensors; transformers and llama.cpp's graph skip it.
        b, h = f"blk.{layer}.", cfg.hidden_size
        for name, shape in (("attn_norm.weight", (h,)), ("nextn.eh_proj.weight", (h, 2 * h)),
                            ("nextn.enorm.weight", (h,)), ("nextn.hnorm.weight", (h,)),
                            ("nextn.shared_head_norm.weight", (h,))):
            out.append((b + name, np.random.default_rng(layer).standard_normal(shape)
                        .astype(np.float32), lambda d: {}))
    return out


def mtp_layers(cfg):
    return getattr(cfg, "num_nextn_predict_layers", 0) if cfg.model_type == "glm4_moe" else 0


def deepseek_tensors(model, layout):
    """convert_hf_to_gguf.py's DeepseekV2Model: 3-D experts, e_score_correction_bias as
    exp_probs_b.bias, and kv_b_proj whole (layout "kv_b") or, as converters do since llama.cpp's
    MLA support (layout "split"), viewed as [heads, nope + v, rank] and split into k_b (transposed
    to [heads, rank, nope]) and v_b ([heads, v, rank]). No q/k permutation."""
    cfg = model.config
    sd = saved_state(model)
    out = []

    def plain(gname, hname):
        out.append((gname, sd[hname], lambda d, h=hname: {h: d}))

    plain("token_embd.weight", "model.embed_tokens.weight")
    heads, nope, v = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.v_head_dim
    for layer in range(cfg.num_hidden_layers):
        p, b = f"model.layers.{layer}.", f"blk.{layer}."
        a = p + "self_attn."
        plain(b + "attn_norm.weight", p + "input_layernorm.weight")
        if cfg.q_lora_rank:
            plain(b + "attn_q_a.weight", a + "q_a_proj.weight")
            plain(b + "attn_q_a_norm.weight", a + "q_a_layernorm.weight")
            plain(b + "attn_q_b.weight", a + "q_b_proj.weight")
        else:
            plain(b + "attn_q.weight", a + "q_proj.weight")
        plain(b + "attn_kv_a_mqa.weight", a + "kv_a_proj_with_mqa.weight")
        plain(b + "attn_kv_a_norm.weight", a + "kv_a_layernorm.weight")
        h = a + "kv_b_proj.weight"
        if layout == "split":  # k_b's restore keeps its part for v_b's, which rebuilds kv_b
            kv_b = sd[h].reshape(heads, nope + v, -1)
            k_b = np.ascontiguousarray(kv_b[:, :nope].transpose(0, 2, 1))
            part = {}

            def restore_kv_b(d, h=h, part=part):
                k_rows = part["k_b"].transpose(0, 2, 1)
                return {h: np.concatenate([k_rows, d], axis=1).reshape(heads * (nope + v), -1)}

            out.append((b + "attn_k_b.weight", k_b, lambda d, part=part: part.update(k_b=d) or {}))
            out.append((b + "attn_v_b.weight", np.ascontiguousarray(kv_b[:, nope:]), restore_kv_b))
        else:
            plain(b + "attn_kv_b.weight", h)
        plain(b + "attn_output.weight", a + "o_proj.weight")
        plain(b + "ffn_norm.weight", p + "post_attention_layernorm.weight")
        if p + "mlp.gate.weight" in sd:
            plain(b + "ffn_gate_inp.weight", p + "mlp.gate.weight")
            if p + "mlp.gate.e_score_correction_bias" in sd:
                plain(b + "exp_probs_b.bias", p + "mlp.gate.e_score_correction_bias")
            n_exp = cfg.n_routed_experts
            for w in ("gate", "up", "down"):
                names = [f"{p}mlp.experts.{e}.{w}_proj.weight" for e in range(n_exp)]
                out.append((f"{b}ffn_{w}_exps.weight", np.stack([sd[n] for n in names]),
                            lambda d, names=names: {n: d[e] for e, n in enumerate(names)}))
            for w in ("gate", "up", "down"):
                plain(f"{b}ffn_{w}_shexp.weight", f"{p}mlp.shared_experts.{w}_proj.weight")
        else:
            for w in ("gate", "up", "down"):
                plain(f"{b}ffn_{w}.weight", f"{p}mlp.{w}_proj.weight")
    plain("output_norm.weight", "model.norm.weight")
    if not cfg.tie_word_embeddings:
        plain("output.weight", "lm_head.weight")
    return out


def add_deepseek_metadata(w, cfg, layout):
    """DeepseekV2Model.set_gguf_parameters and the TextModel keys it relies on, of the converter
    generation that `layout` belongs to (see deepseek_tensors)."""
    split = layout == "split"
    rank, rope = cfg.kv_lora_rank, cfg.qk_rope_head_dim
    w.add_leading_dense_block_count(cfg.first_k_dense_replace)
    w.add_vocab_size(cfg.vocab_size)
    if cfg.q_lora_rank:
        w.add_q_lora_rank(cfg.q_lora_rank)
    w.add_kv_lora_rank(rank)
    if split:
        w.add_key_length(rank + rope)
        w.add_value_length(rank)
        w.add_key_length_mla(cfg.qk_nope_head_dim + rope)
        w.add_value_length_mla(cfg.v_head_dim)
    else:
        w.add_key_length(cfg.qk_nope_head_dim + rope)
        w.add_value_length(cfg.v_head_dim)
    w.add_expert_feed_forward_length(cfg.moe_intermediate_size)
    w.add_expert_count(cfg.n_routed_experts)
    w.add_expert_used_count(cfg.num_experts_per_tok)
    w.add_expert_shared_count(cfg.n_shared_experts)
    w.add_expert_weights_scale(cfg.routed_scaling_factor)
    if cfg.norm_topk_prob or not split:
        w.add_expert_weights_norm(cfg.norm_topk_prob)
    v3 = cfg.model_type == "deepseek_v3"
    if v3 or split:  # an old V2 file without it tests the default, softmax
        w.add_expert_gating_func(
            ExpertGatingFuncType.SIGMOID if v3 else ExpertGatingFuncType.SOFTMAX)
    w.add_expert_group_count(cfg.n_group)
    w.add_expert_group_used_count(cfg.topk_group)
    w.add_rope_dimension_count(rope)
    rp = cfg.rope_parameters
    if rp.get("rope_type") == "yarn":
        w.add_rope_scaling_type(RopeScalingType.YARN)
        w.add_rope_scaling_factor(rp["factor"])
        w.add_rope_scaling_orig_ctx_len(rp["original_max_position_embeddings"])
        if split:
            w.add_rope_scaling_yarn_beta_fast(rp["beta_fast"])
            w.add_rope_scaling_yarn_beta_slow(rp["beta_slow"])
        w.add_rope_scaling_yarn_log_mul(0.1 * rp["mscale_all_dim"])


def add_glm4moe_metadata(w, cfg):
    """Glm4MoeModel.set_gguf_parameters: rotary dims = head_dim * partial_rotary_factor, the
    router as DeepSeek-V3's (sigmoid, exp_probs_b, groups), MTP layers in block_count and
    nextn_predict_layers."""
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_dimension_count(int(cfg.head_dim * cfg.rope_parameters["partial_rotary_factor"]))
    w.add_leading_dense_block_count(cfg.first_k_dense_replace)
    w.add_expert_count(cfg.n_routed_experts)
    w.add_expert_used_count(cfg.num_experts_per_tok)
    w.add_expert_feed_forward_length(cfg.moe_intermediate_size)
    w.add_expert_shared_count(cfg.n_shared_experts)
    w.add_expert_weights_scale(cfg.routed_scaling_factor)
    w.add_expert_weights_norm(cfg.norm_topk_prob)
    w.add_expert_gating_func(ExpertGatingFuncType.SIGMOID)
    w.add_expert_group_count(cfg.n_group)
    w.add_expert_group_used_count(cfg.topk_group)
    w.add_nextn_predict_layers(mtp_layers(cfg))


def rope_freqs(cfg):
    """convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors for llama3 scaling."""
    rope = cfg.rope_parameters
    dim = cfg.head_dim
    freqs = 1.0 / (rope["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old = rope["original_max_position_embeddings"]
    out = []
    for f in freqs.tolist():
        wavelen = 2 * np.pi / f
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def add_tokenizer(w):
    """A small byte-level BPE (ASCII only, to keep the vocabulary and so the files small):
    specials, the printable ASCII byte symbols (space is GPT-2's 'Ġ'), a few merges."""
    tokens = ["<|pad|>", "<|bos|>", "<|eos|>", "Ġ"] + [chr(b) for b in range(ord("!"), ord("~") + 1)]
    types = [TokenType.CONTROL] * 3 + [TokenType.NORMAL] * 95
    merges = []
    pairs = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("e", "r"), ("a", "n"), ("Ġ", "a"),
             ("o", "n"), ("Ġ", "w"), ("r", "e"), ("Ġ", "s"), ("a", "t"), ("e", "n"), ("Ġ", "c"),
             ("i", "t"), ("i", "s"), ("o", "r"), ("e", "s"), ("Ġ", "b"), ("e", "d"), ("Ġ", "f"),
             ("in", "g"), ("Ġ", "p"), ("o", "u"), ("Ġa", "n"), ("a", "l"), ("a", "r"), ("Ġt", "o"),
             ("Ġ", "m"), ("Ġ", "o")]
    for left, right in pairs:
        merges.append(f"{left} {right}")
        tokens.append(left + right)
        types.append(TokenType.NORMAL)
    assert len(tokens) == VOCAB, len(tokens)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_chat_template("{% for m in messages %}<|bos|>{{ m.role }}: {{ m.content }}\n"
                        "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")


def write_gguf(path, arch, model, ftype, layout, splits):
    cfg = model.config
    ga = GGUF_ARCH[arch]
    w = GGUFWriter(path, ga, split_max_tensors=splits)
    w.add_name(f"tandem-test-{arch}")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers + mtp_layers(cfg))  # GLM: MTP blocks counted
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    # llama.cpp's MLA graphs treat the latent as one KV head (see deepseek_tensors)
    w.add_head_count_kv(1 if layout == "split" else cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    if ga == "deepseek2":
        add_deepseek_metadata(w, cfg, layout)
    elif ga == "glm4moe":
        add_glm4moe_metadata(w, cfg)
    else:
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
        w.add_rope_dimension_count(cfg.head_dim)
    w.add_file_type({T.F32: 0, T.F16: 1, T.Q8_0: 7, T.Q4_0: 2, T.Q4_K: 15}[ftype])
    n_exp = getattr(cfg, "num_local_experts", None) or getattr(cfg, "num_experts", None)
    if n_exp and ga not in ("deepseek2", "glm4moe"):
        w.add_expert_count(n_exp)
        w.add_expert_used_count(cfg.num_experts_per_tok)
    if arch in ("qwen2_moe", "qwen3_moe"):
        w.add_expert_feed_forward_length(cfg.moe_intermediate_size)
    if arch == "qwen2_moe":
        w.add_expert_shared_feed_forward_length(cfg.shared_expert_intermediate_size)
    add_tokenizer(w)
    restored = {}
    if arch == "llama":
        w.add_tensor("rope_freqs.weight", rope_freqs(cfg))
    for name, array, restore in gguf_tensors(arch, model, layout):
        qtype = weight_type(name, array.shape, ftype)
        raw, deq = encode(np.ascontiguousarray(array), qtype)
        w.add_tensor(name, raw, raw_dtype=qtype if qtype not in (T.F32, T.F16) else None)
        restored.update(restore(deq))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return restored


def saved_state(model):
    """The tensors as save_pretrained writes them (transformers 5 fuses experts in memory and
    splits them per expert on save, which is the layout checkpoints and converters see)."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        out = {}
        for f in Path(tmp).glob("*.safetensors"):
            with safe_open(f, "np") as st:
                out.update({k: st.get_tensor(k).astype(np.float32) for k in st.keys()})
        return out


@torch.no_grad()
def logits_with(model, state, ids):
    """transformers' f32 forward pass with the HF-named tensors of `state`."""
    with tempfile.TemporaryDirectory() as tmp:
        model.config.save_pretrained(tmp)
        save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()},
                  Path(tmp) / "model.safetensors")
        m = transformers.AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, **IMPL)
        return m.eval()(ids[None], use_cache=False).logits[0].float()


def write_gpt_oss():
    """tests/data/gguf/gpt_oss/model-mxfp4.gguf: the golden gpt_oss/mxfp4 checkpoint (experts in
    the Hub's MXFP4 blocks / scales) as llama.cpp's GptOssModel converter lays it out: gate and
    up split into ffn_gate_exps / ffn_up_exps (the Hub's rows interleave them), MXFP4 blocks in
    ggml's order (element j in the low nibble of byte j < 16, else the high nibble of byte
    j - 16; the Hub's is element 2i low, 2i + 1 high), biases, sinks and every other tensor f32.
    Each expert tensor is checked against gguf-py's own MXFP4 dequantizer on the way: it must
    give the values of the Hub blocks exactly. Its logits must equal the safetensors
    checkpoint's (the same weights, bit for bit), so no reference file is written."""
    src = ROOT / "tests" / "data" / "golden" / "gpt_oss" / "mxfp4"
    cfg = json.loads((src / "config.json").read_text())
    with safe_open(src / "model.safetensors", "np") as st:
        t = {k: st.get_tensor(k) for k in st.keys()}
    e2m1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], np.float32)

    def hf_values(blocks, scales):  # [..., nb, 16], [..., nb] -> [..., nb * 32]
        codes = np.stack([blocks & 0xF, blocks >> 4], -1).reshape(*blocks.shape[:-1], 32)
        vals = e2m1[codes] * np.ldexp(np.float32(1), scales.astype(np.int32) - 127)[..., None]
        return vals.reshape(*blocks.shape[:-2], -1)

    def to_ggml(blocks, scales):  # [..., nb, 16] + [..., nb] -> [..., nb * 17] u8
        codes = np.stack([blocks & 0xF, blocks >> 4], -1).reshape(*blocks.shape[:-1], 32)
        qs = (codes[..., :16] | (codes[..., 16:] << 4)).astype(np.uint8)
        out = np.concatenate([scales[..., None], qs], -1)
        return np.ascontiguousarray(out.reshape(*blocks.shape[:-2], -1))

    out = OUT / "gpt_oss"
    out.mkdir(parents=True, exist_ok=True)
    w = GGUFWriter(out / "model-mxfp4.gguf", "gpt-oss")
    w.add_name("tandem-test-gpt-oss")
    n_layers, heads = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(n_layers)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_key_length(cfg["head_dim"])
    w.add_value_length(cfg["head_dim"])
    w.add_rope_dimension_count(cfg["head_dim"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    rp = cfg["rope_parameters"]
    w.add_rope_freq_base(rp["rope_theta"])
    w.add_rope_scaling_type(RopeScalingType.YARN)
    w.add_rope_scaling_factor(rp["factor"])
    w.add_rope_scaling_orig_ctx_len(rp["original_max_position_embeddings"])
    w.add_expert_count(cfg["num_local_experts"])
    w.add_expert_used_count(cfg["num_experts_per_tok"])
    w.add_expert_feed_forward_length(cfg["intermediate_size"])
    w.add_sliding_window(cfg["sliding_window"])
    # the fixture's layer_types are sliding, full, sliding: llama.cpp's default pattern of 2
    assert cfg["layer_types"] == ["sliding_attention" if i % 2 == 0 else "full_attention"
                                  for i in range(n_layers)]
    assert (cfg["swiglu_limit"], cfg["swiglu_alpha"]) != (7.0, 1.702)
    f32 = lambda x: np.ascontiguousarray(x.astype(np.float32))  # noqa: E731
    w.add_tensor("token_embd.weight", f32(t["model.embed_tokens.weight"]))
    w.add_tensor("output_norm.weight", f32(t["model.norm.weight"]))
    w.add_tensor("output.weight", f32(t["lm_head.weight"]))
    for layer in range(n_layers):
        p, b = f"model.layers.{layer}.", f"blk.{layer}."
        plain = {"input_layernorm.weight": "attn_norm.weight",
                 "post_attention_layernorm.weight": "post_attention_norm.weight",
                 "self_attn.sinks": "attn_sinks.weight", "mlp.router.weight": "ffn_gate_inp.weight",
                 "mlp.router.bias": "ffn_gate_inp.bias"}
        for proj, g in (("q", "attn_q"), ("k", "attn_k"), ("v", "attn_v"), ("o", "attn_output")):
            plain[f"self_attn.{proj}_proj.weight"] = f"{g}.weight"
            plain[f"self_attn.{proj}_proj.bias"] = f"{g}.bias"
        for hf, gg in plain.items():
            w.add_tensor(b + gg, f32(t[p + hf]))
        x = p + "mlp.experts."
        gub, gus = t[x + "gate_up_proj_blocks"], t[x + "gate_up_proj_scales"]
        dnb, dns = t[x + "down_proj_blocks"], t[x + "down_proj_scales"]
        gate_up_bias = t[x + "gate_up_proj_bias"]
        for name, blocks, scales in (("ffn_gate_exps", gub[:, 0::2], gus[:, 0::2]),
                                     ("ffn_up_exps", gub[:, 1::2], gus[:, 1::2]),
                                     ("ffn_down_exps", dnb, dns)):
            raw = to_ggml(blocks, scales)
            want = hf_values(blocks, scales)
            got = quants.dequantize(raw, T.MXFP4)
            assert np.array_equal(got, want), f"{name}: gguf-py reads the blocks differently"
            w.add_tensor(b + name + ".weight", raw, raw_dtype=T.MXFP4)
        w.add_tensor(b + "ffn_gate_exps.bias", f32(gate_up_bias[:, 0::2]))
        w.add_tensor(b + "ffn_up_exps.bias", f32(gate_up_bias[:, 1::2]))
        w.add_tensor(b + "ffn_down_exps.bias", f32(t[x + "down_proj_bias"]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"gpt_oss/mxfp4: {(out / 'model-mxfp4.gguf').stat().st_size // 1024} KiB")


def main():
    transformers.logging.set_verbosity_error()
    if sys.argv[1:] == ["gpt_oss"]:
        write_gpt_oss()
        return
    OUT.mkdir(parents=True, exist_ok=True)
    types = [("f32", T.F32, "small"), ("f16", T.F16, "small"), ("q8_0", T.Q8_0, "small"),
             ("q4_0", T.Q4_0, "small"), ("q4_k", T.Q4_K, "k")]
    for arch in sys.argv[1:] or GGUF_ARCH:
        out = OUT / arch
        out.mkdir(exist_ok=True)
        for old in out.glob("*.gguf"):
            old.unlink()
        models = {v: make_model(arch, v) for v in ("small", "k")}
        gen = torch.Generator().manual_seed(SEEDS[arch])
        ids = torch.randint(3, VOCAB, (PROMPT_LEN,), generator=gen)
        ref = {"prompt_ids": ids.to(torch.int64)}
        f32 = {v: logits_with(m, saved_state(m), ids) for v, m in models.items()}
        ref["logits_f32_k"] = f32["k"]  # logits_f32 is that of the small model (exact weights)
        for tag, ftype, variant in types:
            layout = {("mixtral", "f16"): "legacy", ("qwen3_moe", "q8_0"): "fused"}.get((arch, tag), "3d")
            if GGUF_ARCH[arch] == "deepseek2":
                layout = "kv_b" if tag in ("f32", "q4_0") else "split"
            splits = 8 if (arch, tag) == ("olmoe", "q4_0") else 0
            state = write_gguf(out / f"model-{tag}.gguf", arch, models[variant], ftype, layout, splits)
            ref[f"logits_{tag}"] = logits_with(models[variant], state, ids)
            diff = (ref[f"logits_{tag}"] - f32[variant]).norm(dim=1) / f32[variant].norm(dim=1)
            print(f"{arch}/{tag}: rel L2 to f32 worst {diff.max():.4f}, mean {diff.mean():.4f}")
        save_file({k: v.contiguous() for k, v in ref.items()}, out / "reference.safetensors",
                  metadata={"gguf": version("gguf"), "transformers": transformers.__version__,
                            "torch": torch.__version__})
    size = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())  # all archs
    print(f"total {size // 1024} KiB")


if __name__ == "__main__":
    main()
