#!/usr/bin/env python3
"""Build tests/data/tokenizer/glm45/: a chat template in GLM-4.5 / 4.6's chat format and what
transformers.apply_chat_template renders from it (run by hand; CI never runs this).

GLM-4.5's own template (shipped in zai-org/GLM-4.5) cannot be downloaded here, so this one is
written for the test in the same format: the [gMASK]<sop> prefix, a <|system|> block listing the
tools as JSON lines inside <tools></tools>, <|user|> and <|assistant|> turns, the assistant's
<think>...</think> reasoning (kept only after the last user turn, as GLM's template does), tool
calls as <tool_call>NAME / <arg_key>K</arg_key> / <arg_value>V</arg_value> lines (strings raw,
other values as JSON), tool results as <|observation|> with one <tool_response> per result, and
enable_thinking=False's "/nothink". It uses the Jinja features GLM's template leans on: a macro,
namespace(), loop.index0 / loop.first, look-behind through messages[i - 1], `is string` /
`is mapping`, .items(), strip() and tojson(ensure_ascii=False). The tokenizer of
tests/data/chat_tiny only carries it.

    python3 tools/make_glm_fixture.py   # needs transformers and jinja2, not torch
"""

from chat_fixture import a, render_fixture, u

GLM45 = """\
[gMASK]<sop>
{%- macro text_of(content) -%}
{%- if content is string -%}
{{ content }}
{%- elif content is iterable and content is not mapping -%}
{%- for part in content -%}
{%- if part is mapping and part.type == "text" -%}{{ part.text }}{%- endif -%}
{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- set no_think = enable_thinking is defined and not enable_thinking -%}
{%- if tools -%}
<|system|>
# Tools

You may call functions to answer the user. Their signatures, one JSON object a line, are \
inside <tools></tools>:
<tools>
{% for tool in tools -%}
{{ tool | tojson(ensure_ascii=False) }}
{% endfor -%}
</tools>

Write each call in this form:
<tool_call>{function name}
<arg_key>{argument name}</arg_key>
<arg_value>{argument value}</arg_value>
...
</tool_call>
{%- endif -%}
{%- set ns = namespace(last_user=-1) -%}
{%- for m in messages -%}
{%- if m.role == "user" -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}
{%- endfor -%}
{%- for m in messages -%}
{%- if m.role == "system" -%}
<|system|>
{{ text_of(m.content) }}
{%- elif m.role == "user" -%}
<|user|>
{{ text_of(m.content) }}{{ "/nothink" if no_think else "" }}
{%- elif m.role == "assistant" -%}
<|assistant|>
{%- if loop.index0 > ns.last_user and m.reasoning_content is string \
and m.reasoning_content.strip() -%}
{{ "\\n<think>" + m.reasoning_content.strip() + "</think>" }}
{%- else -%}
{{ "\\n<think></think>" }}
{%- endif -%}
{%- if m.content is string and m.content.strip() -%}
{{ "\\n" + m.content.strip() }}
{%- endif -%}
{%- for call in m.tool_calls or [] -%}
{%- set f = call.function if call.function is defined else call -%}
{{ "\\n<tool_call>" + f.name }}
{%- set args = f.arguments -%}
{%- for k, v in args.items() -%}
{{ "\\n<arg_key>" + k + "</arg_key>\\n<arg_value>" }}\
{{ v if v is string else v | tojson(ensure_ascii=False) }}</arg_value>
{%- endfor -%}
{{ "\\n</tool_call>" }}
{%- endfor -%}
{%- elif m.role == "tool" -%}
{%- if loop.first or messages[loop.index0 - 1].role != "tool" -%}<|observation|>{%- endif -%}
{{ "\\n<tool_response>\\n" + text_of(m.content) + "\\n</tool_response>" }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|assistant|>{{ "\\n<think></think>" if no_think else "" }}
{%- endif -%}"""

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "description": "Web search",
    "parameters": {"type": "object", "properties": {
        "query": {"type": "string"}, "top_k": {"type": "integer"},
        "filters": {"type": "object"}, "safe": {"type": "boolean"}},
        "required": ["query"]}}}


def call(name, arguments):
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def tool(content, name):
    return {"role": "tool", "name": name, "content": content}


PARIS = call("get_weather", {"city": "Paris", "unit": "celsius"})
TOKYO = call("get_weather", {"city": "東京"})

CASES = [
    ("single_user", [u("Hello!")], True, {}),
    ("single_user_no_prompt", [u("Hello!")], False, {}),
    ("system_prompt", [{"role": "system", "content": "Answer in French."}, u("Hi")], True, {}),
    ("multi_turn", [u("1+1?"), a("2"), u("2+2?")], True, {}),
    ("reasoning_last_turn", [u("1+1?"), a("2", reasoning_content="\nEasy: 2.\n")], False, {}),
    ("earlier_reasoning_dropped",
     [u("1+1?"), a("2", reasoning_content="Easy."), u("3+3?")], True, {}),
    ("no_thinking", [u("Quick: 2+2?")], True, {"enable_thinking": False}),
    ("content_parts", [{"role": "user", "content": [{"type": "text", "text": "Part one. "},
                                                     {"type": "text", "text": "Part two."}]}],
     True, {}),
    ("tools", [u("Weather in Paris?")], True, {"tools": [WEATHER, SEARCH]}),
    ("tools_and_system", [{"role": "system", "content": "Be brief."}, u("Weather?")], True,
     {"tools": [WEATHER]}),
    ("tool_call_and_result", [
        u("Weather in Paris?"),
        a("", tool_calls=[PARIS]),
        tool("{\"temp\": 21, \"sky\": \"clear\"}", "get_weather"),
    ], True, {"tools": [WEATHER]}),
    ("parallel_calls_and_results", [
        u("Weather in Paris and Tokyo?"),
        a("Checking both.", reasoning_content="Two cities, two calls.",
          tool_calls=[PARIS, TOKYO]),
        tool("21 C, clear", "get_weather"),
        tool("15 C, rain", "get_weather"),
        a("Paris: 21 C and clear; Tokyo: 15 C with rain."),
        u("Thanks"),
    ], True, {"tools": [WEATHER]}),
    ("non_string_arguments", [
        u("Search for tandem engines"),
        a("", tool_calls=[call("search", {"query": "tandem \"MoE\" engine", "top_k": 5,
                                          "filters": {"lang": ["en", "fr"], "year": 2025},
                                          "safe": True})]),
        tool("[]", "search"),
    ], False, {"tools": [SEARCH]}),
    ("unicode_and_braces", [u("Café {{ x }} {% raw %} 東京 \"q\" <tool_call>")], True, {}),
]


def main():
    render_fixture("glm45", GLM45, CASES)


if __name__ == "__main__":
    main()
