"""What the chat-template fixture scripts (make_glm_fixture.py, make_harmony_fixture.py) share:
message builders and the rendering of their cases by transformers.apply_chat_template into
tests/data/tokenizer/<format>/ (chat_template.jinja and chat.json, which the C++ chat-template
tests render and compare)."""

import json
from pathlib import Path

import transformers

ROOT = Path(__file__).resolve().parent.parent


def u(text):
    return {"role": "user", "content": text}


def a(text, **extra):
    return {"role": "assistant", "content": text, **extra}


def render_fixture(name, template, cases):
    """cases: (case name, messages, add_generation_prompt, extra) with `tools` and template
    keyword arguments in extra. Writes tests/data/tokenizer/<name>/ with chat_tiny's tokenizer
    carrying `template`."""
    out = ROOT / "tests" / "data" / "tokenizer" / name
    tok = transformers.AutoTokenizer.from_pretrained(ROOT / "tests" / "data" / "chat_tiny")
    out.mkdir(parents=True, exist_ok=True)
    (out / "chat_template.jinja").write_text(template + "\n", encoding="utf-8")
    rendered = []
    for case, messages, gen, extra in cases:
        kwargs = {k: v for k, v in extra.items() if k != "tools"}
        tools = extra.get("tools")
        text = tok.apply_chat_template(messages, tools=tools, tokenize=False,
                                       add_generation_prompt=gen, chat_template=template, **kwargs)
        rendered.append({"name": case, "messages": messages, "tools": tools,
                         "add_generation_prompt": gen, "kwargs": kwargs, "text": text})
    with open(out / "chat.json", "w", encoding="utf-8") as f:
        json.dump(rendered, f, ensure_ascii=False, indent=1)
    print(f"{name}: {len(rendered)} cases")
