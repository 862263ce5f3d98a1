"""Tool calling over HTTP with the official openai client on the demo model: tool_choice
"required" and a named function (held to the schema by the grammar engine) in whole and streamed
responses, parallel_tool_calls, a full round trip with the tool's result sent back, "auto" and
"none", and the requests that must be refused. Each runs twice: on the demo model, whose template
has no place for tools (they reach it in a system message, and its calls are parsed in the Hermes
syntax), and on the demo model given the GLM-4.5-format template of tests/data/tokenizer/glm45,
from which the server detects the glm45 syntax (<arg_key>/<arg_value> pairs, an EBNF grammar)."""

import json
import random

import jsonschema
import openai
import pytest

from conftest import ROOT, RunningServer
from test_bad_requests import post

DEMO = ROOT / "models" / "demo" / "tandem-demo-moe"
MODEL = "tandem-demo-moe"
WEATHER = {"type": "object",
           "properties": {"city": {"type": "string", "maxLength": 12},
                          "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city"], "additionalProperties": False}
ADD = {"type": "object",
       "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 999},
                      "b": {"type": "integer", "minimum": 0, "maximum": 999}},
       "required": ["a", "b"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "add", "description": "Adds two numbers",
                                           "parameters": ADD}}]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


def glm45_model(tmp_path_factory):
    """The demo model with the GLM-4.5-format template (its files linked, its tokenizer_config
    rewritten), so that the server takes the glm45 tool-call syntax from the template."""
    model = tmp_path_factory.mktemp("glm45") / MODEL
    model.mkdir()
    for f in DEMO.iterdir():
        if f.name != "tokenizer_config.json":
            (model / f.name).symlink_to(f)
    config = json.loads((DEMO / "tokenizer_config.json").read_text())
    template = ROOT / "tests" / "data" / "tokenizer" / "glm45" / "chat_template.jinja"
    config["chat_template"] = template.read_text(encoding="utf-8").removesuffix("\n")
    (model / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return model


@pytest.fixture(scope="module", params=["hermes", "glm45"])
def demo(request, tmp_path_factory):
    s = RunningServer(model=DEMO if request.param == "hermes" else glm45_model(tmp_path_factory))
    s.tool_format = request.param
    # GLM's tags are single tokens in its own vocabulary; the demo model's spells them a few
    # characters at a time, and a call takes about 110 tokens where Hermes' takes 40.
    s.call_tokens = 120 if request.param == "hermes" else 240
    yield s
    s.stop()
    assert s.proc.returncode == 0, "tandem-server did not exit cleanly"


def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def check_calls(calls, only=None):
    assert calls
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        if only:
            assert call.function.name == only
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_required_and_named_calls_keep_the_schema(demo):
    seed = random.randrange(1 << 30)
    for choice, only in (("required", None),
                         ({"type": "function", "function": {"name": "add"}}, "add")):
        r = client(demo).chat.completions.create(
            model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice=choice, n=8, seed=seed,
            max_tokens=demo.call_tokens)
        finished = [c for c in r.choices if c.finish_reason != "length"]
        assert len(finished) >= 6, f"seed {seed}"
        for c in finished:
            assert c.finish_reason == "tool_calls", f"seed {seed}: {c}"
            assert c.message.content is None
            check_calls(c.message.tool_calls, only)
            if only:
                assert len(c.message.tool_calls) == 1


def test_calls_are_written_in_the_syntax_of_the_template(demo):
    """The tokens generated (seen through logprobs) are the format's own syntax: the glm45
    server took its format from the template, not the Hermes default."""
    r = client(demo).chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="required", seed=3,
        max_tokens=demo.call_tokens, logprobs=True)
    c = r.choices[0]
    raw = "".join(t.token for t in c.logprobs.content)
    if demo.tool_format == "glm45":
        assert raw.startswith("<tool_call>") and "<arg_key>" in raw, raw
    else:
        assert raw.startswith("<tool_call>\n{") and "<arg_key>" not in raw, raw
    if c.finish_reason == "tool_calls":
        check_calls(c.message.tool_calls)


def test_parallel_tool_calls_false_gives_one_call(demo):
    r = client(demo).chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="required",
        parallel_tool_calls=False, n=8, seed=random.randrange(1 << 30),
        max_tokens=demo.call_tokens)
    for c in r.choices:
        if c.finish_reason == "tool_calls":
            assert len(c.message.tool_calls) == 1


def test_streamed_tool_calls(demo):
    seed = random.randrange(1 << 30)
    stream = client(demo).chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="required", seed=seed,
        max_tokens=demo.call_tokens, stream=True)
    content, calls, finish = "", {}, None
    for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": call.id, "name": "", "arguments": ""})
            entry["name"] += call.function.name or ""
            entry["arguments"] += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    if finish == "length":
        pytest.skip(f"seed {seed}: the call did not finish in {demo.call_tokens} tokens")
    assert finish == "tool_calls" and content == "", f"seed {seed}"
    for entry in calls.values():
        assert entry["id"].startswith("call_")
        jsonschema.validate(json.loads(entry["arguments"]), SCHEMAS[entry["name"]])


def test_round_trip_with_the_tool_result(demo):
    c = client(demo)
    first = c.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS,
                                      tool_choice={"type": "function",
                                                   "function": {"name": "get_weather"}},
                                      seed=1, max_tokens=demo.call_tokens)
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    messages = MESSAGES + [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees, sunny"}]
    second = c.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS,
                                       tool_choice="none", seed=2, max_tokens=24)
    assert second.choices[0].finish_reason in ("stop", "length")
    assert second.choices[0].message.tool_calls is None
    assert isinstance(second.choices[0].message.content, str)


def test_auto_answers_in_text_or_calls(demo):
    r = client(demo).chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS,
                                             n=4, seed=random.randrange(1 << 30), max_tokens=48)
    for c in r.choices:
        if c.finish_reason == "tool_calls":
            check_calls(c.message.tool_calls)
        else:
            assert c.message.tool_calls is None and isinstance(c.message.content, str)


BAD = [
    ({"tool_choice": "required"}, "/v1/chat/completions", "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "x"}}},
     "/v1/chat/completions", "tool_choice"),
    ({"tools": [{"type": "function", "function": {"parameters": {}}}]},
     "/v1/chat/completions", "tools[0].function.name"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
     "/v1/chat/completions", "tool_choice"),
    ({"tools": TOOLS, "prompt": "x"}, "/v1/completions", "tools"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f",
                                                                      "arguments": "{oops"}}]}]},
     "/v1/chat/completions", "messages[0].tool_calls[0].function.arguments"),
]


@pytest.mark.parametrize("extra,path,param", BAD, ids=[b[2] for b in BAD])
def test_bad_tool_requests_are_400s(demo, extra, path, param):
    body = {"model": MODEL, "max_tokens": 4, **extra}
    if path.endswith("chat/completions"):
        body.setdefault("messages", MESSAGES)
    r = post(demo, path, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.text
    assert demo.alive()
