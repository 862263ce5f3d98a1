#!/usr/bin/env python3
"""Train the demo model's tokenizer: a byte-level BPE of 8,192 tokens shaped like Qwen2/Qwen3's
(NFC, the same split regex, byte-level pieces, no BOS), on the plain (non-chat) training
documents of tools/make_demo_corpus.sh. The last three ids are the ChatML special tokens.

    python3 tools/train_demo_tokenizer.py [--corpus build/demo-corpus] [--out DIR]

Writes tokenizer.json and tokenizer_config.json (with the ChatML chat template) into --out.
Deterministic for a given corpus (the BPE trainer breaks ties by pair, not by hash order).
"""
import argparse
import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import processors, trainers

VOCAB_SIZE = 8192
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2/Qwen3's pre-tokenizer regex, so that Tandem's existing Qwen path covers it.
SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen3's template without tools and thinking: ChatML, generation prompt on request.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def plain_texts(corpus):
    with open(corpus / "train.jsonl", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            if doc["source"] != "chat":  # chat documents repeat entries and hold special tokens
                yield doc["text"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="build/demo-corpus", type=Path)
    parser.add_argument("--out", default="models/demo/tandem-demo-moe", type=Path)
    args = parser.parse_args()

    byte_level = dict(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(**byte_level),
    ])
    tok.post_processor = processors.ByteLevel(**byte_level)
    tok.decoder = decoders.ByteLevel(**byte_level)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte has a token
        show_progress=False,
    )
    tok.train_from_iterator(plain_texts(args.corpus), trainer=trainer)
    tok.add_special_tokens(SPECIAL)  # ids VOCAB_SIZE-3 .. VOCAB_SIZE-1
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()

    args.out.mkdir(parents=True, exist_ok=True)
    tok.save(str(args.out / "tokenizer.json"))
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "add_bos_token": False,
        "add_prefix_space": False,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": 1024,
        "split_special_tokens": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (args.out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    print({t: tok.token_to_id(t) for t in SPECIAL})


if __name__ == "__main__":
    main()
