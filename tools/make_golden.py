#!/usr/bin/env python3
"""Build the golden fixtures in tests/data/golden/ (run by hand; CI never runs this).

For each architecture: a tiny random-weight checkpoint written by `save_pretrained` in
float32 and bfloat16, plus `reference.safetensors` with transformers' logits and greedy
continuation. See tests/data/golden/README.md for the format.

    pip install torch transformers safetensors
    python3 tools/make_golden.py                 # every architecture
    python3 tools/make_golden.py deepseek_v3     # only the ones named
    python3 tools/make_golden.py demo            # the trained demo model (never by default)

`demo` is not a random checkpoint: it is models/demo/tandem-demo-moe (bf16, trained by
tools/train_demo_model.py), and only its reference is written, to
tests/data/golden/demo/reference.safetensors, for a fixed English prompt. Rerun it whenever
the demo model is retrained.
"""

import contextlib
import copy
import hashlib
import json
import math
import re
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "golden"
PROMPT_LEN = 20
GREEDY_STEPS = 16
MIN_MARGIN = 1e-3  # top-1 minus top-2 logit, below which an argmax is a coin toss
MIN_ROUTER_GAP = 1e-4  # k-th minus (k+1)-th router logit: a near tie could flip an expert
# Native bf16 rounds router logits to 2^-6 around 3, so a near tie there flips an expert and
# moves logits_bf16 by whole units; ask for a few bf16 ulps so that it stays a usable reference.
MIN_ROUTER_GAP_BF16 = 0.05
# DeepSeek's routers run in f32 even in a bf16 model (gate.weight is kept in f32 and the
# hidden state upcast), so only the bf16 rounding of the activations upstream moves them: a
# tenth of the above suffices, and 0.05 over ~200 grouped decisions per layer is rarely met.
MIN_ROUTER_GAP_BF16_F32_ROUTER = 0.005
MAX_TRIES = 100

# Shapes shared by all archs: head_dim 64/4 = 16, GQA 4 query heads on 2 KV heads. head_dim
# is left out of config.json where the Hub configs lack it (the engine derives it), and
# qwen3_moe sets it to 32, because real Qwen3 checkpoints have heads * head_dim != hidden.
COMMON = dict(
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
)


def rope(theta, **scaling):
    return {"rope_type": scaling.pop("rope_type", "default"), "rope_theta": theta, **scaling}


# rope_theta and rms_norm_eps differ from each class's default so that an engine that
# falls back to defaults instead of reading config.json fails the comparison.
# fmt: off
ARCHS = {
    "mixtral": dict(
        cls=transformers.MixtralForCausalLM,
        cfg=transformers.MixtralConfig,
        seed=1069,
        kw=dict(
            vocab_size=256, num_hidden_layers=2, intermediate_size=32,
            num_local_experts=8, num_experts_per_tok=2,
            rope_parameters=rope(250000.0), rms_norm_eps=1e-6,
        ),
    ),
    "qwen2_moe": dict(
        cls=transformers.Qwen2MoeForCausalLM,
        cfg=transformers.Qwen2MoeConfig,
        seed=2009,
        kw=dict(
            vocab_size=320, num_hidden_layers=3, intermediate_size=128,
            moe_intermediate_size=32, shared_expert_intermediate_size=64,
            num_experts=8, num_experts_per_tok=2, norm_topk_prob=False,
            decoder_sparse_step=1, mlp_only_layers=[1], qkv_bias=True,
            use_sliding_window=False, rope_parameters=rope(1e6), rms_norm_eps=1e-5,
        ),
        shard="400KB",  # the one sharded checkpoint (f32 only)
    ),
    "qwen3_moe": dict(
        cls=transformers.Qwen3MoeForCausalLM,
        cfg=transformers.Qwen3MoeConfig,
        seed=3056,
        kw=dict(
            vocab_size=288, num_hidden_layers=3, head_dim=32, intermediate_size=128,
            moe_intermediate_size=32, num_experts=8, num_experts_per_tok=2,
            norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[0],
            attention_bias=False, use_sliding_window=False,
            rope_parameters=rope(50000.0), rms_norm_eps=1e-5,
        ),
    ),
    "olmoe": dict(
        cls=transformers.OlmoeForCausalLM,
        cfg=transformers.OlmoeConfig,
        seed=4012,
        kw=dict(
            vocab_size=304, num_hidden_layers=2, intermediate_size=32,
            num_experts=8, num_experts_per_tok=2, norm_topk_prob=False,
            clip_qkv=None, attention_bias=False, pad_token_id=0,
            rope_parameters=rope(20000.0), rms_norm_eps=1e-6,
        ),
    ),
    # original_max_position_embeddings 64 puts the 8 rotary frequencies of head_dim 16
    # into all three llama3 regimes: kept (wavelen < 16), smoothed, and divided by 8.
    "llama": dict(
        cls=transformers.LlamaForCausalLM,
        cfg=transformers.LlamaConfig,
        seed=5000,
        kw=dict(
            vocab_size=384, num_hidden_layers=2, head_dim=16, intermediate_size=128,
            rope_parameters=rope(
                500000.0, rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                high_freq_factor=4.0, original_max_position_embeddings=64,
            ),
            rms_norm_eps=1e-5,
        ),
    ),
    "qwen2": dict(
        cls=transformers.Qwen2ForCausalLM,
        cfg=transformers.Qwen2Config,
        seed=6000,
        kw=dict(
            vocab_size=352, num_hidden_layers=2, intermediate_size=128,
            tie_word_embeddings=True, use_sliding_window=False,
            rope_parameters=rope(1e6), rms_norm_eps=1e-5,
        ),
    ),
    # MLA with a full q_proj, softmax router limited to 2 of 4 groups, routed scaling 2,
    # 2 shared experts, layer 0 dense. num_key_value_heads must equal the heads: transformers'
    # repeat_kv would otherwise multiply the already per-head expanded keys.
    "deepseek_v2": dict(
        cls=transformers.DeepseekV2ForCausalLM,
        cfg=transformers.DeepseekV2Config,
        seed=7000,
        kw=dict(
            vocab_size=272, num_hidden_layers=3, num_key_value_heads=4, intermediate_size=96,
            q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
            v_head_dim=16, n_routed_experts=16, num_experts_per_tok=3, moe_intermediate_size=16,
            n_shared_experts=2, first_k_dense_replace=1, topk_method="group_limited_greedy",
            n_group=4, topk_group=2, routed_scaling_factor=2.0, norm_topk_prob=False,
            rope_parameters=rope(20000.0), rms_norm_eps=1e-5,
        ),
    ),
    # q through the q_a / q_a_layernorm / q_b low-rank path, greedy top-k, 1 shared expert.
    "deepseek_v2_qlora": dict(
        cls=transformers.DeepseekV2ForCausalLM,
        cfg=transformers.DeepseekV2Config,
        seed=7100,
        kw=dict(
            vocab_size=240, num_hidden_layers=2, num_key_value_heads=4, intermediate_size=96,
            q_lora_rank=24, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
            v_head_dim=24, n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=16,
            n_shared_experts=1, first_k_dense_replace=0, topk_method="greedy",
            routed_scaling_factor=1.0, norm_topk_prob=False,
            rope_parameters=rope(50000.0), rms_norm_eps=1e-6,
        ),
    ),
    # V3: sigmoid router with a random e_score_correction_bias, noaux_tc over 2 of 4 groups,
    # renormalised then scaled by 2.5, layer 0 dense, YaRN whose attention factor
    # (mscale / mscale_all_dim) and softmax mscale^2 both differ from 1, and whose
    # original context 64 puts the 4 rotary frequencies in all three ramp regimes.
    "deepseek_v3": dict(
        cls=transformers.DeepseekV3ForCausalLM,
        cfg=transformers.DeepseekV3Config,
        seed=7200,
        kw=dict(
            vocab_size=304, num_hidden_layers=3, num_key_value_heads=4, intermediate_size=96,
            q_lora_rank=24, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
            v_head_dim=16, n_routed_experts=16, num_experts_per_tok=3, moe_intermediate_size=16,
            n_shared_experts=1, first_k_dense_replace=1, n_group=4, topk_group=2,
            routed_scaling_factor=2.5, norm_topk_prob=True, rope_interleave=True,
            rope_parameters=rope(
                10000.0, rope_type="yarn", factor=4.0, original_max_position_embeddings=64,
                beta_fast=32, beta_slow=1, mscale=1.0, mscale_all_dim=0.8,
            ),
            rms_norm_eps=1e-6,
        ),
    ),
    # GLM-4.5: sigmoid router with a random e_score_correction_bias, noaux_tc over 2 of 4
    # groups, renormalised then scaled by 2.5, 1 shared expert, layer 0 dense; q/k/v biases,
    # per-head q/k RMSNorm, head_dim 32 (q width 128 != hidden 64) of which 0.25 rotates
    # (not transformers' default 0.5, so that a reader falling back to it fails); and one
    # next-token (MTP) layer's tensors after the decoder, as the real checkpoints carry.
    # Seed 9100 rather than 9000: 9000's first robust seed (9002) passed every exact test, but
    # with q8_0 weights only 16 of its 20 positions stayed within GoldenQ8's 5e-2 (grouped
    # sigmoid routing near a tie, as DeepSeek-V3's).
    "glm4_moe": dict(
        cls=transformers.Glm4MoeForCausalLM,
        cfg=transformers.Glm4MoeConfig,
        seed=9100,
        kw=dict(
            vocab_size=320, num_hidden_layers=3, head_dim=32, intermediate_size=96,
            moe_intermediate_size=16, n_routed_experts=16, num_experts_per_tok=3,
            n_shared_experts=1, n_group=4, topk_group=2, routed_scaling_factor=2.5,
            norm_topk_prob=True, first_k_dense_replace=1, attention_bias=True,
            use_qk_norm=True, num_nextn_predict_layers=1,
            rope_parameters=rope(20000.0, partial_rotary_factor=0.25), rms_norm_eps=1e-5,
        ),
        after_save="add_mtp_layer",
    ),
    # gpt-oss: attention sinks, biases everywhere, layers 0 and 2 sliding (window 6, inside the
    # 20-token prompt) and layer 1 full, YaRN (truncate false, as the Hub's), top-4 of 16 experts
    # with a biased router, and the clamped SwiGLU with a limit of 1.5 and alpha 1.2 (not the
    # defaults 7.0 and 1.702, which random activations would never reach the clamp of, and which
    # an engine hard-coding them would then pass). Experts in transformers' fused layout
    # (gate_up_proj [E, hidden, 2 * ffn], gate and up interleaved). Besides f32 and bf16, an
    # "mxfp4" checkpoint: the f32 one with its experts quantized to MXFP4 blocks and scales (as
    # the Hub's gpt-oss holds them), whose reference is transformers' own dequantization of the
    # file (Mxfp4Config(dequantize=True)).
    "gpt_oss": dict(
        cls=transformers.GptOssForCausalLM,
        cfg=transformers.GptOssConfig,
        seed=9200,
        kw=dict(
            vocab_size=320, num_hidden_layers=3, head_dim=16, intermediate_size=64,
            num_local_experts=16, num_experts_per_tok=4, sliding_window=6,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            swiglu_limit=1.5, swiglu_alpha=1.2,
            rope_parameters=rope(
                150000.0, rope_type="yarn", factor=8.0, original_max_position_embeddings=32,
                beta_fast=32.0, beta_slow=1.0, truncate=False,
            ),
            rms_norm_eps=1e-5,
        ),
        dtypes=("f32", "bf16", "mxfp4"),
        fused_experts=True,
        # gpt-oss's router runs in bf16 natively (its weight is not kept in f32), so its logits
        # are bf16 values 1/32 apart near 6, and exact ties between the 4th and 5th of 16
        # experts are common: 0.05 (and even 0.01) rejected every seed tried. No bound: where
        # native bf16 ties, transformers' f32 computation and Tandem route alike, and
        # GoldenBf16 only asks Tandem to be as close to native bf16 as transformers' f32 is.
        min_router_gap_bf16=0.0,
    ),
}


def add_mtp_layer(path, config):
    """Append the tensors of a GLM next-token-prediction layer (model.layers.{num_hidden_layers}:
    eh_proj, enorm, hnorm, shared_head.norm and a decoder layer's own names), which real
    GLM-4.5 checkpoints hold and transformers skips on load."""
    from safetensors.torch import load_file

    f = path / "model.safetensors"
    tensors = load_file(f)
    dtype, h = tensors["model.embed_tokens.weight"].dtype, config.hidden_size
    p = f"model.layers.{config.num_hidden_layers}."
    extra = {"eh_proj.weight": (h, 2 * h), "enorm.weight": (h,), "hnorm.weight": (h,),
             "shared_head.norm.weight": (h,), "input_layernorm.weight": (h,),
             "self_attn.q_proj.weight": (config.num_attention_heads * config.head_dim, h)}
    for name, shape in extra.items():
        tensors[p + name] = torch.randn(shape).to(dtype)
    save_file(tensors, f, {"format": "pt"})

# Fixtures that each pin config options the main ones leave at their defaults (f32 only, and
# smaller: hidden 32, 4 query heads of 8 on 2 KV heads, vocab 96). The option walk
# (OPTIONS below, tests/golden/test_option_walk.cpp) points at them.
SMALL = dict(hidden_size=32, vocab_size=96, num_hidden_layers=2)
OPTION_ARCHS = {
    # YaRN outside MLA: cos and sin scaled by 0.1 ln(4) + 1 (no attention_factor given);
    # biases on q, k, v and o; head_dim 16 != hidden / heads.
    "llama_yarn": dict(
        cls=transformers.LlamaForCausalLM,
        cfg=transformers.LlamaConfig,
        seed=8000,
        kw=dict(
            **SMALL, head_dim=16, intermediate_size=32, attention_bias=True,
            rope_parameters=rope(10000.0, rope_type="yarn", factor=4.0,
                                 original_max_position_embeddings=64),
            rms_norm_eps=1e-5,
        ),
    ),
    # Qwen2's sliding window on the layers from max_window_layers on (1 and 2 of 3), a window
    # of 5 that 20 prompt tokens overrun; linear rope scaling.
    "qwen2_window": dict(
        cls=transformers.Qwen2ForCausalLM,
        cfg=transformers.Qwen2Config,
        seed=8100,
        kw=dict(
            **{**SMALL, "num_hidden_layers": 3}, intermediate_size=32, use_sliding_window=True,
            sliding_window=5, max_window_layers=1,
            rope_parameters=rope(10000.0, rope_type="linear", factor=2.0), rms_norm_eps=1e-5,
        ),
    ),
    # Qwen2-MoE's own rule: the even layers below max_window_layers (layer 0 of 3); no
    # q/k/v biases.
    "qwen2_moe_window": dict(
        cls=transformers.Qwen2MoeForCausalLM,
        cfg=transformers.Qwen2MoeConfig,
        seed=8200,
        kw=dict(
            **{**SMALL, "num_hidden_layers": 3}, intermediate_size=32, moe_intermediate_size=16,
            shared_expert_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
            use_sliding_window=True, sliding_window=5, max_window_layers=2, qkv_bias=False,
            rope_parameters=rope(10000.0), rms_norm_eps=1e-5,
        ),
    ),
    # Qwen3-MoE: the window on every layer; YaRN with an explicit attention_factor, no
    # truncation and beta_fast 16; attention biases.
    "qwen3_moe_yarn": dict(
        cls=transformers.Qwen3MoeForCausalLM,
        cfg=transformers.Qwen3MoeConfig,
        seed=8300,
        kw=dict(
            **SMALL, head_dim=16, intermediate_size=32, moe_intermediate_size=16, num_experts=4,
            num_experts_per_tok=2, norm_topk_prob=True, attention_bias=True,
            use_sliding_window=True, sliding_window=6,
            rope_parameters=rope(10000.0, rope_type="yarn", factor=2.0, attention_factor=1.3,
                                 truncate=False, beta_fast=16.0,
                                 original_max_position_embeddings=64),
            rms_norm_eps=1e-5,
        ),
    ),
    "mixtral_window": dict(
        cls=transformers.MixtralForCausalLM,
        cfg=transformers.MixtralConfig,
        seed=8400,
        kw=dict(
            **SMALL, head_dim=16, intermediate_size=16, num_local_experts=4,
            num_experts_per_tok=2, sliding_window=5, rope_parameters=rope(10000.0), rms_norm_eps=1e-5,
        ),
    ),
    "olmoe_clip": dict(
        cls=transformers.OlmoeForCausalLM,
        cfg=transformers.OlmoeConfig,
        seed=8500,
        kw=dict(
            **SMALL, intermediate_size=16, num_experts=4, num_experts_per_tok=2,
            clip_qkv=2.0, attention_bias=True, rope_parameters=rope(10000.0),
            rms_norm_eps=1e-5,
        ),
    ),
    # DeepSeek-V2 with norm_topk_prob: the reference is DeepSeek's modeling_deepseek.py
    # router (see deepseek_v2_reference_router), not transformers'. YaRN as DeepSeek-V2's
    # configs have it (mscale == mscale_all_dim: cos and sin unscaled, the softmax scaled by
    # mscale^2), attention biases.
    "deepseek_v2_norm": dict(
        cls=transformers.DeepseekV2ForCausalLM,
        cfg=transformers.DeepseekV2Config,
        seed=8600,
        kw=dict(
            **SMALL, num_key_value_heads=4, intermediate_size=32, q_lora_rank=None,
            kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
            n_routed_experts=8, num_experts_per_tok=3, moe_intermediate_size=16,
            n_shared_experts=1, first_k_dense_replace=1, topk_method="greedy",
            routed_scaling_factor=2.0, norm_topk_prob=True, attention_bias=True,
            rope_parameters=rope(10000.0, rope_type="yarn", factor=4.0,
                                 original_max_position_embeddings=64, mscale=0.707,
                                 mscale_all_dim=0.707),
            rms_norm_eps=1e-6,
        ),
        patch="deepseek_v2_reference_router",
    ),
    # DeepSeek-V3 with rotary pairs (i, i + d/2) instead of interleaved, and attention biases.
    "deepseek_v3_options": dict(
        cls=transformers.DeepseekV3ForCausalLM,
        cfg=transformers.DeepseekV3Config,
        seed=8700,
        kw=dict(
            **SMALL, num_key_value_heads=4, intermediate_size=32, q_lora_rank=16,
            kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
            n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=16,
            n_shared_experts=1, first_k_dense_replace=1, n_group=2, topk_group=1,
            routed_scaling_factor=2.5, norm_topk_prob=True, rope_interleave=False,
            attention_bias=True, rope_parameters=rope(10000.0), rms_norm_eps=1e-6,
        ),
    ),
}
for _spec in OPTION_ARCHS.values():
    _spec["dtypes"] = ("f32",)
ARCHS.update(OPTION_ARCHS)
# fmt: on


@contextlib.contextmanager
def deepseek_v2_reference_router():
    """DeepSeek-V2's own MoEGate (modeling_deepseek.py, shipped with its checkpoints):
    `if top_k > 1 and norm_topk_prob: weights /= weights.sum() + 1e-20; else: weights *=
    routed_scaling_factor`. transformers 5 ignores norm_topk_prob for V2 and always scales; with
    norm_topk_prob true the renormalised weights no longer carry the scale, since
    (s w) / sum(s w) = w / sum(w)."""
    router = transformers.models.deepseek_v2.modeling_deepseek_v2.DeepseekV2TopkRouter
    original = router.forward

    def forward(self, hidden_states):
        logits, weights, indices = original(self, hidden_states)
        if self.top_k > 1 and self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return logits, weights, indices

    old_init = router.__init__

    def init(self, config):
        old_init(self, config)
        self.norm_topk_prob = config.norm_topk_prob

    router.forward, router.__init__ = forward, init
    try:
        yield
    finally:
        router.forward, router.__init__ = original, old_init


IMPL = dict(attn_implementation="eager", experts_implementation="eager")


def randomize(model):
    """Replace the default init (std 0.02: flat logits, flat routers, fragile argmax)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # RMSNorm gains, incl. q_norm/k_norm
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn_like(p))
            elif name.endswith(("mlp.gate.weight", "block_sparse_moe.gate.weight",
                                "mlp.router.weight")):
                p.copy_(2.0 / math.sqrt(p.shape[-1]) * torch.randn_like(p))  # router
            elif name.endswith("self_attn.sinks"):  # gpt-oss: comparable to the scores
                p.copy_(1.0 + torch.randn_like(p))
            elif name.endswith("_proj_bias"):  # gpt-oss's fused expert biases
                p.copy_(0.2 * torch.randn_like(p))
            elif name.endswith(("experts.gate_up_proj", "experts.down_proj")):
                # gpt-oss's fused experts are [E, in, out]: fan-in is dim 1
                p.copy_(torch.randn_like(p) / math.sqrt(p.shape[1]))
            elif "embed_tokens" in name or "lm_head" in name:
                p.copy_(0.3 * torch.randn_like(p))  # also the tied qwen2 head
            else:  # keep each projection roughly variance-preserving; fan-in is the last dim
                p.copy_(torch.randn_like(p) / math.sqrt(p.shape[-1]))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # DeepSeek-V3's selection bias
                b.copy_(0.2 * torch.randn_like(b))


def bf16_copy(model):
    """`Module.to(bfloat16)` would also round the rotary inv_freq buffers, which
    from_pretrained(dtype=bfloat16) keeps in float32; cast the parameters only."""
    out = copy.deepcopy(model)
    for p in out.parameters():
        p.data = p.data.to(torch.bfloat16)
    out.config.dtype = torch.bfloat16
    return out


@torch.no_grad()
def logits_of(model, ids):
    return model(ids[None], use_cache=False).logits[0].float()


@torch.no_grad()
def greedy(model, prompt):
    """Full forward per step (no KV cache, no generate(), no EOS) so nothing but the
    model itself can differ from the engine. Returns the ids and each step's top-1 minus
    top-2 logit."""
    ids, margins = prompt.clone(), []
    for _ in range(GREEDY_STEPS):
        top = torch.topk(logits_of(model, ids)[-1], 2)
        margins.append(top.values[0] - top.values[1])
        ids = torch.cat([ids, top.indices[:1]])
    return ids[len(prompt) :], torch.stack(margins)


@torch.no_grad()
def min_router_gap(model, ids):
    """Smallest gap, over all tokens and MoE layers, between the last chosen and the first
    rejected router logit. One causal forward over prompt + continuation covers every
    position that the greedy steps routed."""
    gaps = []

    def hook(module, args, out):
        top = torch.topk(out[0].float(), module.top_k + 1, dim=-1).values
        gaps.append((top[:, -2] - top[:, -1]).min().item())

    def deepseek_hook(module, args, out):
        gaps.append(deepseek_router_gap(module, out[0]))

    routers = [m for m in model.modules() if type(m).__name__.endswith("TopKRouter")]
    handles = [m.register_forward_hook(hook) for m in routers]
    deepseek = [m for m in model.modules() if type(m).__name__.startswith(("Deepseek", "Glm4Moe"))]
    handles += [
        m.register_forward_hook(deepseek_hook)
        for m in deepseek
        if type(m).__name__.endswith("TopkRouter")
    ]
    logits_of(model, ids)
    for h in handles:
        h.remove()
    return min(gaps, default=math.inf)


def deepseek_router_gap(router, logits):
    """Smallest margin of a DeepSeek router's decisions, in router-logit units: between the
    last kept and the first dropped group, and between the k-th and (k+1)-th expert among the
    kept groups. Softmax is monotone, so V2 compares logits; V3 chooses on sigmoid + bias,
    whose slope is at most 1/4, so a choice gap g needs a logit change of at least 4g."""
    logits = logits.double()
    n_experts = logits.shape[-1]
    if hasattr(router, "e_score_correction_bias"):
        choice = logits.sigmoid() + router.e_score_correction_bias.double()
        unit, method = 4.0, "noaux_tc"
    else:
        choice, unit, method = logits, 1.0, router.topk_method
    gaps = []
    if method != "greedy":
        grouped = choice.view(-1, router.num_group, n_experts // router.num_group)
        if method == "noaux_tc":
            group_scores = grouped.topk(2, dim=-1).values.sum(-1)
        else:
            group_scores = grouped.max(dim=-1).values
        top = torch.sort(group_scores, dim=-1, descending=True).values
        k = router.topk_group
        gaps.append((top[:, k - 1] - top[:, k]).min().item())
        keep = torch.zeros_like(group_scores, dtype=torch.bool)
        keep.scatter_(1, group_scores.topk(k, dim=-1).indices, True)
        keep = keep.repeat_interleave(n_experts // router.num_group, dim=-1)
        choice = choice.masked_fill(~keep, -math.inf)
    top = torch.topk(choice, router.top_k + 1, dim=-1).values
    expert_gap = top[:, -2] - top[:, -1]
    gaps.append(expert_gap[torch.isfinite(expert_gap)].min().item())
    return unit * min(gaps)


def load(path, dtype):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **IMPL).eval()


def to_hub_v4_config(path):
    """transformers 5 writes `rope_parameters` and `dtype`; checkpoints on the Hub (and any
    written by transformers 4) have top-level `rope_theta`, optional `rope_scaling` and
    `torch_dtype` (and Qwen3-MoE says `num_experts` where v5 writes `num_local_experts`).
    The bf16 dirs use the Hub layout so that the engine is tested on both."""
    cfg_path = path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    rp = dict(cfg.pop("rope_parameters"))
    out = {}
    for k, v in cfg.items():
        if k == "dtype":
            out["torch_dtype"] = v
        elif k == "num_local_experts" and cfg["model_type"] == "qwen3_moe":
            out["num_experts"] = v
        elif k in ("head_dim", "qk_head_dim") and cfg["model_type"].startswith("deepseek"):
            pass  # the Hub's DeepSeek configs have neither (transformers derives them)
        elif k == "transformers_version":
            out["rope_theta"] = rp.pop("rope_theta")
            if "partial_rotary_factor" in rp:  # GLM's Hub configs have it at the top level
                out["partial_rotary_factor"] = rp.pop("partial_rotary_factor")
            out["rope_scaling"] = rp if rp["rope_type"] != "default" else None
            out[k] = v
        else:
            out[k] = v
    if cfg["model_type"] == "deepseek_v3":  # as on the Hub; transformers neither reads nor writes them
        out.update(scoring_func="sigmoid", topk_method="noaux_tc")
    elif cfg["model_type"] == "deepseek_v2":
        out["scoring_func"] = "softmax"
    cfg_path.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")


def check_hub_layout(path, fused=False):
    """transformers 5 holds experts fused (experts.gate_up_proj [E, 2I, H]) and splits them
    back on save; make sure the files hold one tensor per expert, as on the Hub (gpt-oss's Hub
    checkpoints are fused: `fused` skips the check)."""
    if fused:
        return
    for f in path.glob("model*.safetensors"):
        with safe_open(f, "pt") as st:
            for k in st.keys():
                shape = st.get_slice(k).get_shape()
                assert "gate_up_proj" not in k and len(shape) <= 2, f"{f}: {k} {shape}"


def build(name, spec, seed, workdir):
    """Returns {"f32"|"bf16": (reference tensors, stats)}, or None when this seed gives
    a fragile argmax or router choice."""
    torch.manual_seed(seed)
    config = spec["cfg"](**{**COMMON, **spec["kw"]})
    model = spec["cls"]._from_config(config, dtype=torch.float32, **IMPL).eval()
    randomize(model)
    prompt = torch.randint(3, config.vocab_size, (PROMPT_LEN,), dtype=torch.int64)
    results = {}
    if "mxfp4" in spec.get("dtypes", ()):
        results["mxfp4"] = build_mxfp4(name, model, prompt, workdir)
        if results["mxfp4"] is None:
            return None
    for tag, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        if tag not in spec.get("dtypes", ("f32", "bf16")):
            continue
        d = workdir / name / tag
        mem = model if tag == "f32" else bf16_copy(model)
        shard = spec.get("shard") if tag == "f32" else None
        mem.save_pretrained(d, **({"max_shard_size": shard} if shard else {}))
        if "after_save" in spec:
            globals()[spec["after_save"]](d, config)
        assert not shard or (d / "model.safetensors.index.json").exists()
        if tag == "bf16":
            to_hub_v4_config(d)
        check_hub_layout(d, spec.get("fused_experts", False))
        # The references come from the files as saved, reloaded as the engine reads them;
        # for bf16, loading with dtype=float32 upcasts the weights exactly.
        ref = load(d, torch.float32)
        native_model = load(d, dtype)
        native = logits_of(native_model, prompt)
        mem_diff = (native - logits_of(mem, prompt)).abs().max().item()
        assert mem_diff < 1e-6, f"{d}: reloaded checkpoint differs from the model by {mem_diff}"
        logits = logits_of(ref, prompt)
        # The same as loading in bf16 and upcasting with .float() (rotary inv_freq stays f32).
        assert torch.equal(logits, logits_of(load(d, dtype).float(), prompt))
        ids, margins = greedy(ref, prompt)
        gap = min_router_gap(ref, torch.cat([prompt, ids[:-1]]))
        margin = margins.min().item()
        if margin < MIN_MARGIN or gap < MIN_ROUTER_GAP:
            print(f"  {name}/{tag} seed {seed}: margin {margin:.1e}, router gap {gap:.1e}; retry")
            return None
        tensors = {"prompt_ids": prompt, "logits": logits.contiguous(), "greedy_ids": ids}
        if tag == "bf16":
            ids16, margins16 = greedy(native_model, prompt)
            gap16 = min_router_gap(native_model, torch.cat([prompt, ids16[:-1]]))
            min_gap16 = spec["min_router_gap_bf16"] if "min_router_gap_bf16" in spec else (
                MIN_ROUTER_GAP_BF16_F32_ROUTER
                if name.startswith(("deepseek", "glm"))
                else MIN_ROUTER_GAP_BF16
            )
            if gap16 < min_gap16:
                print(f"  {name}/{tag} seed {seed}: native bf16 router gap {gap16:.1e}; retry")
                return None
            tensors["logits_bf16"] = native.contiguous()
            tensors["greedy_ids_bf16"] = ids16
            # bf16 logits near 8 are 1/16 apart, so exact ties happen: a test needs these
            # to know how far the native-bf16 continuation is meaningful.
            tensors["greedy_margins_bf16"] = margins16
        stats = (
            f"max|logit| {logits.abs().max():.3f}, std {logits.std():.3f}, min margin "
            f"{margin:.4f}, min router gap {gap:.1e}, reload vs memory {mem_diff:.1e}"
        )
        if tag == "bf16":
            diff16 = (native - logits).abs().max()
            stats += f"; native bf16: margin {margins16.min():.4f}, router gap {gap16:.2f}, "
            stats += f"max|logits_bf16 - logits| {diff16:.3f}"
        results[tag] = (tensors, stats)
    return results


E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def mxfp4_quantize(w):
    """w [..., rows, k] -> (blocks [..., rows, k / 32, 16] u8, scales [..., rows, k / 32] u8)
    in Hugging Face's layout (element 2i in the low nibble of byte i). The scale is the
    smallest power of two that keeps the block's largest magnitude within 6; each value rounds
    to the nearest e2m1 magnitude (ties to the even code), as Tandem's quantizer does."""
    *prefix, rows, k = w.shape
    x = w.double().reshape(*prefix, rows, k // 32, 32)
    amax = x.abs().amax(-1)
    e = torch.where(amax > 0, torch.ceil(torch.log2(amax / 6.0)), torch.zeros_like(amax))
    e = e + (torch.ldexp(torch.full_like(e, 6.0), e.int()) < amax)  # log2 rounding at the edge
    e = (e + 127).clamp(0, 254)
    scaled = x / torch.ldexp(torch.ones_like(e), (e - 127).int())[..., None]
    dist = (scaled.abs()[..., None] - E2M1.double()).abs()
    # Nearest magnitude; on a tie the even code (argmin takes the first, so favour even ones).
    dist = dist - 1e-12 * (torch.arange(8) % 2 == 0).double()
    code = dist.argmin(-1)
    code = code | ((scaled < 0) & (code != 0)).long() << 3
    blocks = (code[..., 0::2] | (code[..., 1::2] << 4)).to(torch.uint8)
    return blocks.contiguous(), e.to(torch.uint8).contiguous()


def build_mxfp4(name, model, prompt, workdir):
    """The f32 model with every expert matrix quantized to MXFP4 and saved as the Hub's
    gpt-oss checkpoints are (*_blocks / *_scales u8, quantization_config mxfp4); the reference
    is transformers loading that file with Mxfp4Config(dequantize=True)."""
    d = workdir / name / "mxfp4"
    model.save_pretrained(d)
    from safetensors.torch import load_file

    f = d / "model.safetensors"
    tensors = load_file(f)
    for key in [k for k in tensors if k.endswith(("experts.gate_up_proj", "experts.down_proj"))]:
        w = tensors.pop(key)  # [E, in, out] -> rows of out, blocks along in
        blocks, scales = mxfp4_quantize(w.transpose(1, 2))
        tensors[key + "_blocks"], tensors[key + "_scales"] = blocks, scales
    save_file(tensors, f, {"format": "pt"})
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization_config"] = {
        "quant_method": "mxfp4",
        "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                   "model.embed_tokens", "lm_head"],
    }
    (d / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        d, dtype=torch.float32, quantization_config=transformers.Mxfp4Config(dequantize=True),
        **IMPL).eval()
    # Dequantized in bf16 by default: check that every expert weight is what the blocks say
    # (e2m1 x 2^k is exact in bf16 for these scales), against our own dequantization.
    for key, w in tensors.items():
        if key.endswith("_blocks"):
            base = key[: -len("_blocks")]
            lut = torch.cat([E2M1, -E2M1])
            codes = torch.stack([w & 0xF, w >> 4], -1).reshape(*w.shape[:-2], -1).long()
            scales = tensors[base + "_scales"].int() - 127
            deq = torch.ldexp(lut[codes].reshape(*w.shape[:-2], -1, 32),
                              scales[..., None]).reshape(*w.shape[:-2], -1)
            mine = deq.transpose(1, 2)
            theirs = ref.get_parameter(base).float()
            assert torch.equal(mine, theirs), f"{key}: transformers dequantizes differently"
    ref = ref.float()
    logits = logits_of(ref, prompt)
    ids, margins = greedy(ref, prompt)
    gap = min_router_gap(ref, torch.cat([prompt, ids[:-1]]))
    margin = margins.min().item()
    if margin < MIN_MARGIN or gap < MIN_ROUTER_GAP:
        print(f"  {name}/mxfp4: margin {margin:.1e}, router gap {gap:.1e}; retry")
        return None
    layer0 = "model.layers.0.mlp.experts."
    tensors = {
        "prompt_ids": prompt, "logits": logits.contiguous(), "greedy_ids": ids,
        # transformers' dequantized experts of layer 0, which the engine's must equal exactly
        "experts0_gate_up": ref.get_parameter(layer0 + "gate_up_proj").float().contiguous(),
        "experts0_down": ref.get_parameter(layer0 + "down_proj").float().contiguous(),
    }
    f32_logits = logits_of(model, prompt)
    stats = (f"max|logit| {logits.abs().max():.3f}, min margin {margin:.4f}, min router gap "
             f"{gap:.1e}, max|mxfp4 - f32 logits| {(logits - f32_logits).abs().max():.3f}")
    return tensors, stats


def save_reference(tensors, path, meta):
    """save_file writes the metadata in hash-map order; sort the header so that a rerun
    reproduces the fixtures byte for byte."""
    save_file(tensors, path, meta)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8 : 8 + n]), sort_keys=True, separators=(",", ":"))
    assert len(header) <= n
    path.write_bytes(raw[:8] + header.encode().ljust(n) + raw[8 + n :])


DEMO_MODEL = OUT.parent.parent.parent / "models" / "demo" / "tandem-demo-moe"
# Candidate prompts for the demo model, tried in order: the first whose greedy continuation
# and routing have no near ties is used. 13 to 31 tokens (the batch test slices 13 of them and
# decodes one more into a 32-token cache).
DEMO_PROMPTS = [
    "In the beginning God created the heaven and the earth. And the earth was without form,",
    "<|im_start|>user\nWhat does \"lantern\" mean?<|im_end|>\n<|im_start|>assistant\n",
    "A dictionary is a book containing the words of a language, arranged in order,",
    "Hacker, n. A person who enjoys exploring the details of programmable systems and",
    "And the LORD spake unto Moses, saying, Speak unto the children of Israel, and",
]


def build_demo():
    """The demo model's reference: the tensors of a bf16 case above, for a real prompt."""
    from tokenizers import Tokenizer  # only the demo needs it

    tok = Tokenizer.from_file(str(DEMO_MODEL / "tokenizer.json"))
    ref = load(DEMO_MODEL, torch.float32)
    native_model = load(DEMO_MODEL, torch.bfloat16)
    for text in DEMO_PROMPTS:
        prompt = torch.tensor(tok.encode(text).ids, dtype=torch.int64)
        assert 13 <= len(prompt) <= 31, (text, len(prompt))
        logits = logits_of(ref, prompt)
        ids, margins = greedy(ref, prompt)
        gap = min_router_gap(ref, torch.cat([prompt, ids[:-1]]))
        if margins.min().item() < MIN_MARGIN or gap < MIN_ROUTER_GAP:
            print(f"  demo: {text!r}: margin {margins.min():.1e}, router gap {gap:.1e}; next")
            continue
        native = logits_of(native_model, prompt)
        ids16, margins16 = greedy(native_model, prompt)
        tensors = {"prompt_ids": prompt, "logits": logits.contiguous(), "greedy_ids": ids,
                   "logits_bf16": native.contiguous(), "greedy_ids_bf16": ids16,
                   "greedy_margins_bf16": margins16}
        dst = OUT / "demo"
        dst.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256((DEMO_MODEL / "model.safetensors").read_bytes()).hexdigest()
        meta = {"transformers": transformers.__version__, "torch": torch.__version__,
                "prompt": text, "model_sha256": digest}
        save_reference(tensors, dst / "reference.safetensors", meta)
        print(f"demo: {text!r} ({len(prompt)} tokens) -> {tok.decode(ids.tolist())!r}; min "
              f"margin {margins.min():.4f}, min router gap {gap:.1e}, max|logits_bf16 - logits| "
              f"{(native - logits).abs().max():.3f}")
        return
    raise SystemExit("demo: every prompt has a near tie")


# The option walk (tests/data/golden/options.json, read by tests/golden/test_option_walk.cpp):
# every rope type transformers knows and every attention option of each supported architecture's
# config class, with what Tandem does with it: a golden fixture that has it (and that the engine
# must reproduce), REFUSED (loading fails naming the option), or IGNORED (transformers reads it
# nowhere at inference, so neither does Tandem: the engine must give the base fixture's logits).
# write_options() fails when transformers' classes hold an option that this table lacks.
REFUSED, IGNORED = "refused", "ignored"
# The rope code (models/rope.cpp, the attention blocks) is shared by every q/k/v architecture,
# and the latent attention's by DeepSeek-V2 and V3: one golden per rope type and kind.
ROPE_GOLDEN = {
    "qkv": {"default": "qwen2", "linear": "qwen2_window", "llama3": "llama", "yarn": "llama_yarn"},
    "mla": {"default": "deepseek_v2", "yarn": "deepseek_v3"},
}
# What each rope type needs beside its name, so that a refusal is of the type itself.
ROPE_PARAMETERS = {
    "linear": dict(factor=2.0), "dynamic": dict(factor=2.0), "proportional": dict(factor=2.0),
    "yarn": dict(factor=2.0, original_max_position_embeddings=64),
    "llama3": dict(factor=2.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=64),
    "longrope": dict(short_factor=[1.0] * 4, long_factor=[2.0] * 4,
                     original_max_position_embeddings=64),
}
# Keys that every fixture of the architecture exercises (shapes), or that only training reads.
BASIC = {"num_attention_heads", "rope_parameters", "kv_lora_rank", "q_lora_rank",
         "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"}
# fmt: off
OPTIONS = {
    # arch: (config class, base fixture, attention kind, {option: (value, expectation)})
    "llama": (transformers.LlamaConfig, "llama", "qkv", {
        "attention_bias": (True, "llama_yarn"), "head_dim": (16, "llama_yarn"),
        "mlp_bias": (True, REFUSED), "partial_rotary_factor": (0.5, REFUSED),
        "pretraining_tp": (2, IGNORED), "attention_dropout": (0.1, IGNORED)}),
    "qwen2": (transformers.Qwen2Config, "qwen2", "qkv", {
        "use_sliding_window": (True, "qwen2_window"), "sliding_window": (5, "qwen2_window"),
        "max_window_layers": (1, "qwen2_window"),
        "layer_types": (["full_attention", "sliding_attention", "sliding_attention"],
                        "qwen2_window"),
        "partial_rotary_factor": (0.5, REFUSED), "attention_dropout": (0.1, IGNORED)}),
    "mixtral": (transformers.MixtralConfig, "mixtral", "qkv", {
        "sliding_window": (5, "mixtral_window"), "head_dim": (16, "mixtral_window"),
        "partial_rotary_factor": (0.5, REFUSED), "attention_dropout": (0.1, IGNORED)}),
    "qwen2_moe": (transformers.Qwen2MoeConfig, "qwen2_moe", "qkv", {
        "use_sliding_window": (True, "qwen2_moe_window"),
        "sliding_window": (5, "qwen2_moe_window"), "max_window_layers": (2, "qwen2_moe_window"),
        "layer_types": (["sliding_attention", "full_attention", "full_attention"],
                        "qwen2_moe_window"),
        "qkv_bias": (False, "qwen2_moe_window"), "partial_rotary_factor": (0.5, REFUSED),
        "attention_dropout": (0.1, IGNORED)}),
    "qwen3_moe": (transformers.Qwen3MoeConfig, "qwen3_moe", "qkv", {
        "attention_bias": (True, "qwen3_moe_yarn"), "use_sliding_window": (True, "qwen3_moe_yarn"),
        "sliding_window": (6, "qwen3_moe_yarn"), "head_dim": (16, "qwen3_moe_yarn"),
        "partial_rotary_factor": (0.5, REFUSED), "attention_dropout": (0.1, IGNORED)}),
    "olmoe": (transformers.OlmoeConfig, "olmoe", "qkv", {
        "attention_bias": (True, "olmoe_clip"), "clip_qkv": (2.0, "olmoe_clip"),
        "partial_rotary_factor": (0.5, REFUSED), "attention_dropout": (0.1, IGNORED)}),
    "deepseek_v2": (transformers.DeepseekV2Config, "deepseek_v2", "mla", {
        "attention_bias": (True, "deepseek_v2_norm"), "norm_topk_prob": (True, "deepseek_v2_norm"),
        "mlp_bias": (True, REFUSED), "head_dim": (99, IGNORED),  # always qk_rope_head_dim
        "pretraining_tp": (2, IGNORED), "attention_dropout": (0.1, IGNORED)}),
    "deepseek_v3": (transformers.DeepseekV3Config, "deepseek_v3", "mla", {
        "attention_bias": (True, "deepseek_v3_options"),
        "rope_interleave": (False, "deepseek_v3_options"),
        "pretraining_tp": (2, IGNORED), "attention_dropout": (0.1, IGNORED)}),
    "glm4_moe": (transformers.Glm4MoeConfig, "glm4_moe", "qkv", {
        "attention_bias": (True, "glm4_moe"), "use_qk_norm": (True, "glm4_moe"),
        "partial_rotary_factor": (0.25, "glm4_moe"), "attention_dropout": (0.1, IGNORED)}),
}
# fmt: on


def attention_fields(cls):
    pattern = re.compile(r"rope|rotary|sliding|window|attention|attn|qk|head_dim|bias|clip|"
                         r"layer_types|interleave|lora|pretraining_tp")
    fields = set()
    for k in cls.__mro__:
        fields |= set(getattr(k, "__annotations__", {}))
    return {f for f in fields if pattern.search(f) and f != "rms_norm_eps"}


def write_options():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    entries = []
    for arch, (cls, base, kind, options) in OPTIONS.items():
        missing = attention_fields(cls) - set(options) - BASIC
        if missing:
            raise SystemExit(f"{arch}: {cls.__name__} has options the walk lacks: {missing}")
        for name, (value, expect) in options.items():
            entries.append(dict(arch=arch, base=base, option=name, patch={name: value},
                                expect=expect))
        for rope_type in ["default", *ROPE_INIT_FUNCTIONS]:
            golden = ROPE_GOLDEN[kind].get(rope_type)
            patch = {"rope_parameters": rope(10000.0, rope_type=rope_type,
                                             **ROPE_PARAMETERS.get(rope_type, {}))}
            entries.append(dict(arch=arch, base=base, option="rope_type", value=rope_type,
                                patch=patch, expect=golden or REFUSED))
    meta = dict(transformers=transformers.__version__, entries=entries)
    (OUT / "options.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    print(f"options.json: {len(entries)} options")


def main():
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    meta = {"transformers": transformers.__version__, "torch": torch.__version__}
    names = sys.argv[1:] or [*ARCHS, "options"]
    if "options" in names:
        write_options()
        names.remove("options")
        if not names:
            return
    if "demo" in names:
        build_demo()
        names.remove("demo")
        if not names:
            return
    unknown = [n for n in names if n not in ARCHS]
    if unknown:
        raise SystemExit(f"unknown architectures {unknown}; known: {list(ARCHS)}")
    for name in names:
        spec = ARCHS[name]
        for seed in range(spec["seed"], spec["seed"] + MAX_TRIES):
            patch = globals()[spec["patch"]]() if "patch" in spec else contextlib.nullcontext()
            with tempfile.TemporaryDirectory() as tmp, patch:
                results = build(name, spec, seed, Path(tmp))
                if results is None:
                    continue
                for tag, (tensors, stats) in results.items():
                    dst = OUT / name / tag
                    shutil.rmtree(dst, ignore_errors=True)
                    shutil.copytree(Path(tmp) / name / tag, dst)
                    save_reference(
                        tensors, dst / "reference.safetensors", {**meta, "seed": str(seed)}
                    )
                    size = sum(f.stat().st_size for f in dst.iterdir()) // 1024
                    print(f"{name}/{tag}: seed {seed}, {size} KiB, {stats}")
                break
        else:
            raise SystemExit(f"{name}: no robust seed in {MAX_TRIES} tries")


if __name__ == "__main__":
    main()
