#!/usr/bin/env python3
"""Writes the tokenizer and chat-template fixtures of tests/data/tokenizer/ from Hugging Face.

Run by hand (CI never runs it); needs PyPI `tokenizers` and `transformers`:
    python3 tools/make_tokenizer_fixtures.py [--shared ../shared/tokenizers] [NAME ...]

For each of qwen3, deepseek_v3, llama3_1, llama2 (from ../shared/tokenizers) and demo (the
committed tokenizer of models/demo/tandem-demo-moe; its strings add held-out documents of
build/demo-corpus, made by tools/make_demo_corpus.sh) it writes <name>/encode.json: a list of
{"text", "ids" (no special tokens), "ids_special", "decode" (of ids_special), "decode_skip"
(the same with skip_special_tokens)}, computed by `tokenizers` from the folder's tokenizer.json.
Special tokens follow Tandem's rule (models/tokenizer/tokenizer.h): when tokenizer_config.json
has add_bos_token/add_eos_token, they decide; otherwise the tokenizer.json post-processor does.
For the folders with a chat template it writes <name>/chat.json: a list of {"name", "messages",
"tools", "add_generation_prompt", "kwargs", "text"} rendered by
transformers.apply_chat_template(tokenize=False). Only ids and texts are written, never the
tokenizer files themselves.
"""
import argparse
import json
import os
import random

from tokenizers import Tokenizer
from transformers import AutoTokenizer

NAMES = ["qwen3", "deepseek_v3", "llama3_1", "llama2", "demo"]
CHAT_NAMES = ["qwen3", "deepseek_v3", "llama3_1", "demo"]
HERE = os.path.dirname(os.path.abspath(__file__))
# Tokenizers committed in the repository rather than in ../shared/tokenizers.
REPO_FOLDERS = {"demo": os.path.join(HERE, "..", "models", "demo", "tandem-demo-moe")}
DEMO_CORPUS = os.path.join(HERE, "..", "build", "demo-corpus")

ASCII = [
    "Hello world", " Hello world", "Hello world ", "hello", "HELLO", "Hello, World!",
    "The quick brown fox jumps over the lazy dog.", "a", "A", "I", "x y z",
    "It's a test. Isn't it? They're here; we've gone; I'd say you'll see.",
    "DON'T SHOUT, I'M HERE", "e.g. i.e. etc. vs. Mr. Mrs. Dr.", "CamelCaseIdentifier",
    "snake_case_identifier", "kebab-case-identifier", "UPPER_CASE", "mixedCASEwords",
    "The year 1999 was followed by 2000.", "Tokenizers split text into pieces.",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
    "She said: \"yes\".", "'quoted'", "''", '""', "`backticks`", "a/b\\c", "~tilde^caret",
    "semi;colon:colon", "hash#tag @mention $dollar %percent &amp *star",
    "question? exclamation! interrobang?!", "ellipsis... and more....",
]
WHITESPACE = (
    [" " * n for n in range(1, 9)] + ["\t" * n for n in range(1, 5)] +
    ["\n" * n for n in range(1, 6)] + ["\r\n", "\r\n\r\n", "\r", " \n", "\n ", " \n \n ",
    "\t\n\t", "a  b", "a   b", "a\tb", "a\t\tb", "a\nb", "a\n\nb", "a\n\n\nb", "a \n b",
    "  leading", "trailing  ", "  both  ", "word \t\n word", "line1\nline2\r\nline3",
    "    indented code", "\tindented tab", "a" + " " * 20 + "b", "x\n" * 5,
    "\u00a0nbsp\u00a0", "thin\u2009space", "ideographic\u3000space", "zero\u200bwidth",
    "\ufeffbom", "line\u2028separator", "para\u2029separator", "nel\u0085char"]
)
DIGITS = (
    ["1" * n for n in range(1, 8)] + [str(10 ** n) for n in range(1, 12)] +
    ["1234567890123456789012", "3.14159", "2.5e-10", "1,000,000", "2024-11-28", "12:30:45",
     "0x1F", "0b1010", "+1 (555) 123-4567", "v1.2.3", "100%", "$4.99", "42nd", "1st 2nd 3rd",
     "π≈3.14", "٣٤٥", "१२३", "１２３", "½ ¾", "Ⅻ", "a1b2c3", "x = 12345 + 678"]
)
PUNCT = ["!!!", "???", "...", "---", "***", "!?", "(a) [b] {c}", "<tag>", "</tag>", "<>",
         "a--b", "em—dash", "en–dash", "…", "«guillemets»", "„quotes“", "‘single’ “double”",
         "§1", "©®™", "°C", "→ ← ↑ ↓", "∀x∈ℝ", "• bullet", "¿Qué? ¡Sí!", "::", "=>", "->", "!=",
         "<=", ">=", "&&", "||", "//", "/*", "*/", "#!/bin/sh", "@@", "%%", "^^"]
CODE = [
    "def f(x):\n    return x * 2\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "#include <vector>\nint main() { return 0; }",
    "{\"key\": \"value\", \"list\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "<html><body><p class=\"x\">Hi</p></body></html>",
    "SELECT * FROM users WHERE id = 42 AND name LIKE '%bob%';",
    "ls -la | grep foo && echo \"done\" > /dev/null 2>&1",
    "const f = async (a, b) => { await g(a ?? b); };",
    "fn main() {\n    println!(\"{}\", 1 + 2);\n}",
    "import numpy as np\nx = np.zeros((3, 4), dtype=np.float32)",
    "if x == None:\n        pass\n    elif y:\n        raise ValueError('bad')",
    "    \n    \n        x = 1\n", "a_b.c->d::e<f>[g](h){i}", "x+=1;y-=2;z*=3;w/=4;",
    "// comment\n/* block */\n# hash", "\"\"\"docstring\"\"\"", "@decorator\nclass A(B, C): ...",
    "$ git commit -m \"fix: bug #123\"", "matrix[i][j] = matrix[j][i]", "\\begin{equation} E=mc^2 \\end{equation}",
]
URLS = ["https://www.example.com/path?query=1&b=2#frag", "http://localhost:8080/",
        "ftp://files.example.org/pub/file.tar.gz", "user@example.com", "mailto:a.b+c@d.co.uk",
        "www.google.com", "https://github.com/huggingface/tokenizers/blob/main/README.md",
        "file:///home/user/notes.txt", "192.168.0.1:443", "[link](https://x.y/z)"]
SCRIPTS = [
    "你好，世界！", "我爱自然语言处理。", "中文和English混合text", "日本語のテキストです。",
    "ひらがな カタカナ 漢字", "東京タワー", "ｶﾀｶﾅ半角", "안녕하세요 세계", "한국어 토크나이저 테스트입니다.",
    "Привет, мир!", "Съешь же ещё этих мягких французских булок.", "ЁЖИК ёжик",
    "مرحبا بالعالم", "اللغة العربية جميلة.", "שלום עולם", "עברית: בדיקה 123",
    "नमस्ते दुनिया", "हिन्दी में परीक्षण।", "สวัสดีชาวโลก", "Γειά σου Κόσμε", "Ελληνικά κείμενα",
    "Tiếng Việt có dấu", "Ärger über Öl und Übermaß, ß", "façade naïve coöperate", "Ça va? Où?",
    "Zażółć gęślą jaźń", "Čeština: příliš žluťoučký kůň", "ქართული", "Հայերեն", "አማርኛ",
    "தமிழ்", "বাংলা", "ગુજરાતી", "ಕನ್ನಡ", "ᚠᛇᚻ runes", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math", "𝟘𝟙𝟚",
]
EMOJI = ["😀", "😀😃😄", "I ❤️ you", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷🇯🇵", "1️⃣", "🧑‍💻 coding",
         "👩🏾‍🚀", "emoji😀inside", "🙂 🙃", "✨✨✨", "🤖: beep", "⚡️", "☃", "🫠", "👁️‍🗨️"]
COMBINING = ["e\u0301", "cafe\u0301", "caf\u00e9", "A\u030a", "\u00c5", "a\u0308o\u0308u\u0308",
             "\u1100\u1161\u11a8", "n\u0303", "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334",
             "\ufb01 ligature", "\u212b angstrom", "\u2126 ohm", "x\u0338", "\u0915\u094d\u0937"]
FULLWIDTH = ["ＡＢＣ", "ｈｅｌｌｏ　ｗｏｒｌｄ", "１２３４５", "！？（）", "＜｜＞", "ＨＴＭＬ５", "～＠＃"]
ODD = ["", "\x00", "\x01\x02", "\x7f", "\u0080", "\U0010fffd", "\ue000 private", "\u2581", "\u2581\u2581x",
       "\u0120", "Ġhello", "<0x41>", "<unk>", "▁▁", "Ċ", "a" * 300, "ab" * 100, "hello" * 60,
       " " * 64, "\n" * 40, "0" * 100, "é" * 80, "😀" * 30]


def special_strings(raw):
    added = [t.content for t in raw.get_added_tokens_decoder().values()][:6]
    out = []
    for tok in added:
        out += [tok, "Hello" + tok + "world", " " + tok + " ", "a " + tok + "b", tok + tok,
                tok + "\n" + tok]
    out += ["<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
            "<s>[INST] hi [/INST]", "</s>", "<|begin_of_text|><|start_header_id|>user",
            "<｜User｜>hi<｜Assistant｜>", "<think>\nreasoning\n</think>\n\nanswer",
            "<tool_call>\n{\"name\": \"f\"}\n</tool_call>", "<|endoftext|>", "<|eot_id|>"]
    return out


def random_strings(seed, count):
    pools = ["abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789",
             " " * 8 + "\n\t", ".,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`", "你好世界中文字", "안녕하세요",
             "привет", "مرحبا", "שלום", "नमस्ते", "😀🎉👍🏽❤️", "éèêàçñü", "\u0301\u0308", "ＡＢ１"]
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.randint(1, 60)
        out.append("".join(rng.choice(rng.choice(pools)) for _ in range(n)))
    return out


def heldout_texts(corpus, count=80, max_chars=1500):
    """Every k-th document of the demo corpus's validation split, cut to max_chars: the text
    the demo tokenizer was trained for but never saw."""
    path = os.path.join(corpus, "valid.jsonl")
    if not os.path.exists(path):
        raise SystemExit(f"{path} missing: run tools/make_demo_corpus.sh first")
    docs = [json.loads(line)["text"] for line in open(path, encoding="utf-8")]
    step = max(1, len(docs) // count)
    return [doc[:max_chars] for doc in docs[::step][:count]]


def token_content(v):
    if isinstance(v, dict):
        return v.get("content")
    return v


def encode_cases(folder, extra_texts=()):
    raw = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    cfg = json.load(open(os.path.join(folder, "tokenizer_config.json")))
    override = "add_bos_token" in cfg or "add_eos_token" in cfg
    bos, eos = token_content(cfg.get("bos_token")), token_content(cfg.get("eos_token"))
    texts = (ASCII + WHITESPACE + DIGITS + PUNCT + CODE + URLS + SCRIPTS + EMOJI + COMBINING +
             FULLWIDTH + ODD + special_strings(raw) + random_strings(1234, 80) +
             list(extra_texts))
    paragraph = " ".join(ASCII + SCRIPTS[:10] + CODE[:3])
    texts.append(paragraph)
    cases = []
    seen = set()
    for text in texts:
        if text in seen:
            continue
        seen.add(text)
        ids = raw.encode(text, add_special_tokens=False).ids
        if override:
            special = ([raw.token_to_id(bos)] if cfg.get("add_bos_token") and bos else []) + ids + \
                      ([raw.token_to_id(eos)] if cfg.get("add_eos_token") and eos else [])
        else:
            special = raw.encode(text, add_special_tokens=True).ids
        cases.append({"text": text, "ids": ids, "ids_special": special,
                      "decode": raw.decode(special, skip_special_tokens=False),
                      "decode_skip": raw.decode(special, skip_special_tokens=True)})
    return cases


TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "search", "description": "Search the web — résumé, 東京",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"},
                                                         "n": {"type": "integer", "default": 3}},
                       "required": ["q"]}}},
]


def common_conversations():
    u = lambda c: {"role": "user", "content": c}
    a = lambda c: {"role": "assistant", "content": c}
    s = lambda c: {"role": "system", "content": c}
    return [
        ("single_user", [u("Hello!")], True, {}),
        ("single_user_no_prompt", [u("Hello!")], False, {}),
        ("system_user", [s("You are a helpful assistant."), u("What is 2+2?")], True, {}),
        ("multi_turn", [s("Be brief."), u("Hi"), a("Hello! How can I help?"), u("Tell me a joke.")],
         True, {}),
        ("multi_turn_ends_assistant", [u("Hi"), a("Hello."), u("Bye"), a("Goodbye!")], False, {}),
        ("empty_content", [u("")], True, {}),
        ("whitespace_content", [s("  "), u("  \n\t "), a(" \n"), u("\n\nok\n\n")], True, {}),
        ("non_ascii", [u("你好，世界！ 😀 Привет مرحبا"), a("こんにちは 👋"), u("Ça va? ü ß")], True, {}),
        ("special_text_in_content", [u("<|im_end|> and <s> and <｜User｜> as text")], True, {}),
        ("code_block", [u("Fix this:\n```python\ndef f(x):\n    return x*2\n```"),
                        a("```python\ndef f(x: int) -> int:\n    return 2 * x\n```")], False, {}),
        ("three_rounds", [u("1"), a("one"), u("2"), a("two"), u("3"), a("three"), u("4")], True, {}),
        ("consecutive_users", [u("first"), u("second")], True, {}),
        ("quotes_and_braces", [u("{{ not a template }} {% raw %} 'x' \"y\"")], True, {}),
        ("long_system", [s("Rules:\n1. Be nice.\n2. Be short.\n\n" * 3), u("ok")], True, {}),
    ]


def qwen3_conversations():
    u = lambda c: {"role": "user", "content": c}
    a = lambda c: {"role": "assistant", "content": c}
    call = {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather",
                                          "arguments": {"city": "Paris", "unit": "celsius"}}}]}
    call_str = {"role": "assistant", "content": "Let me check.", "tool_calls": [
        {"type": "function", "function": {"name": "search", "arguments": "{\"q\": \"tokenizers\"}"}},
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "東京"}}}]}
    tool = lambda c: {"role": "tool", "content": c}
    return [
        ("tools_no_system", [u("Weather in Paris?")], True, {"tools": TOOLS}),
        ("tools_with_system", [{"role": "system", "content": "You are a bot."}, u("Weather?")], True,
         {"tools": TOOLS}),
        ("tool_call_and_response", [u("Weather in Paris?"), call, tool("{\"temp\": 21}")], True,
         {"tools": TOOLS}),
        ("two_tool_calls_two_responses", [u("Search and weather"), call_str, tool("result 1"),
                                          tool("sunny"), a("Done."), u("thanks")], True,
         {"tools": TOOLS}),
        ("think_in_history", [u("2+2?"), a("<think>\nadd them\n</think>\n\n4"), u("3+3?")], True, {}),
        ("think_last_assistant", [u("2+2?"), a("<think>\nadd them\n</think>\n\n4")], False, {}),
        ("reasoning_content_field", [u("hi"), {"role": "assistant", "content": "hello",
                                               "reasoning_content": "greet back"}], False, {}),
        ("enable_thinking_false", [u("hi")], True, {"enable_thinking": False}),
        ("enable_thinking_true", [u("hi")], True, {"enable_thinking": True}),
        ("tool_response_as_user", [u("<tool_response>x</tool_response>"), a("ok")], False, {}),
        ("system_not_first", [u("a"), {"role": "system", "content": "late system"}, u("b")], True, {}),
    ]


def deepseek_conversations():
    u = lambda c: {"role": "user", "content": c}
    # transformers 5 drops a None content before rendering, so the template's tool-call branch
    # (content is none) cannot be reached through apply_chat_template; tool outputs still are.
    call = {"role": "assistant", "content": "Calling tools.", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
        {"type": "function", "function": {"name": "search", "arguments": "{\"q\": \"x\"}"}}]}
    return [
        ("two_systems", [{"role": "system", "content": "A"}, {"role": "system", "content": "B"},
                         u("hi")], True, {}),
        ("tool_calls", [u("Weather?"), call, {"role": "tool", "content": "sunny"},
                        {"role": "tool", "content": "found"},
                        {"role": "assistant", "content": "It is sunny."}], False, {}),
        ("tool_output_then_prompt", [u("Weather?"), call, {"role": "tool", "content": "sunny"}],
         True, {}),
    ]


def chat_cases(name, folder):
    tok = AutoTokenizer.from_pretrained(folder)
    convs = common_conversations()
    if name == "qwen3":
        convs += qwen3_conversations()
    if name == "deepseek_v3":
        convs += deepseek_conversations()
    cases = []
    for conv_name, messages, gen, extra in convs:
        kwargs = {k: v for k, v in extra.items() if k != "tools"}
        tools = extra.get("tools")
        text = tok.apply_chat_template(messages, tools=tools, tokenize=False,
                                       add_generation_prompt=gen, **kwargs)
        cases.append({"name": conv_name, "messages": messages, "tools": tools,
                      "add_generation_prompt": gen, "kwargs": kwargs, "text": text})
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=os.path.join(HERE, "..", "..", "shared", "tokenizers"))
    parser.add_argument("--out", default=os.path.join(HERE, "..", "tests", "data", "tokenizer"))
    parser.add_argument("--demo-corpus", default=DEMO_CORPUS)
    parser.add_argument("names", nargs="*", help=f"some of {NAMES} (default: all)")
    args = parser.parse_args()
    unknown = set(args.names) - set(NAMES)
    if unknown:
        parser.error(f"unknown tokenizers {sorted(unknown)}")
    for name in args.names or NAMES:
        folder = REPO_FOLDERS.get(name, os.path.join(args.shared, name))
        out = os.path.join(args.out, name)
        os.makedirs(out, exist_ok=True)
        extra = heldout_texts(args.demo_corpus) if name == "demo" else ()
        cases = encode_cases(folder, extra)
        with open(os.path.join(out, "encode.json"), "w", encoding="utf-8") as f:
            json.dump(cases, f, ensure_ascii=False, indent=0)
        print(f"{name}: {len(cases)} strings")
        if name in CHAT_NAMES:
            chats = chat_cases(name, folder)
            with open(os.path.join(out, "chat.json"), "w", encoding="utf-8") as f:
                json.dump(chats, f, ensure_ascii=False, indent=1)
            print(f"{name}: {len(chats)} conversations")


if __name__ == "__main__":
    main()
