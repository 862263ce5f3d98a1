#!/usr/bin/env python3
"""Build tests/data/chat_tiny/: a tiny random-weight Qwen3-MoE with a real byte-level BPE
tokenizer and a ChatML chat template, for the API and server tests (run by hand; CI never runs
this). Its outputs are not compared with transformers (the golden tests do that); what the
server tests need is text in, text out, a chat template and an EOS token.

    pip install torch transformers tokenizers
    python3 tools/make_chat_fixture.py
"""

import json
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "chat_tiny"
VOCAB = 320
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# A few sentences to learn merges from; any English text would do.
TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How are you today? I am fine, thank you.",
    "Tandem runs mixture-of-experts models on a CPU and a GPU together.",
    "Once upon a time there was a small model that learned to talk.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Café, naïve, déjà vu, 東京.",
] * 20


def build_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXT, trainer)
    return tok


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    tok.save(str(OUT / "tokenizer.json"))
    eos = tok.token_to_id("<|im_end|>")
    (OUT / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "chat_template": CHATML,
                "model_max_length": 512,
            },
            indent=2,
        )
        + "\n"
    )
    torch.manual_seed(7)
    config = transformers.Qwen3MoeConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        moe_intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        num_experts=8,
        num_experts_per_tok=2,
        max_position_embeddings=512,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=tok.token_to_id("<|endoftext|>"),
        tie_word_embeddings=False,
    )
    model = transformers.Qwen3MoeForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # larger weights: sharper, more varied distributions
            p.mul_(3.0)
    model.save_pretrained(OUT, safe_serialization=True)
    print("wrote", OUT, "vocab", tok.get_vocab_size(), "eos", eos)


if __name__ == "__main__":
    main()
