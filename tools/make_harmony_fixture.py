#!/usr/bin/env python3
"""Build tests/data/tokenizer/harmony/: a chat template in gpt-oss's harmony format and what
transformers.apply_chat_template renders from it (run by hand; CI never runs this).

gpt-oss's own template (tokenizer `o200k_harmony`, shipped in the model's repository) cannot be
downloaded here, so this one is written for the test: the harmony message layout
(<|start|>role<|channel|>...<|message|>...<|end|> / <|return|>, a system header with the
reasoning effort, a developer message with the instructions and the tool namespace, assistant
analysis and final channels, tool results from functions.*) with the Jinja features gpt-oss's
template leans on: a macro, namespace(), slicing, `in` on a list, default(), tojson, loop.last
and kwargs such as reasoning_effort. The tokenizer of tests/data/chat_tiny only carries it.

    python3 tools/make_harmony_fixture.py
"""

from chat_fixture import a, render_fixture, u

HARMONY = """\
{%- macro render_tool(tool) -%}
// {{ tool.function.description }}
type {{ tool.function.name }} = (_: {{ tool.function.parameters | tojson }}) => any;
{%- endmacro -%}
<|start|>system<|message|>{{ model_identity | default("You are ChatGPT, a large language model \
trained by OpenAI.") }}
Knowledge cutoff: 2024-06
Current date: {{ current_date | default("2025-06-28") }}

Reasoning: {{ reasoning_effort | default("medium") }}

# Valid channels: analysis, commentary, final. Channel must be included for every message.
{%- if tools %}
Calls to these tools must go to the commentary channel: 'functions'.
{%- endif %}<|end|>
{%- set ns = namespace(developer="", rest=messages) -%}
{%- if messages and messages[0].role in ["system", "developer"] -%}
{%- set ns.developer = messages[0].content -%}
{%- set ns.rest = messages[1:] -%}
{%- endif -%}
{%- if ns.developer or tools -%}
<|start|>developer<|message|>
{%- if ns.developer %}# Instructions

{{ ns.developer }}
{%- endif -%}
{%- if tools %}

# Tools

## functions

namespace functions {
{% for tool in tools %}
{{ render_tool(tool) }}
{% endfor %}
} // namespace functions
{%- endif -%}
<|end|>
{%- endif -%}
{%- for m in ns.rest -%}
{%- if m.role == "assistant" -%}
{%- if m.thinking and loop.last and not add_generation_prompt -%}
<|start|>assistant<|channel|>analysis<|message|>{{ m.thinking }}<|end|>
{%- endif -%}
{%- if m.tool_calls -%}
{%- for call in m.tool_calls -%}
<|start|>assistant to=functions.{{ call.function.name }}<|channel|>commentary json\
<|message|>{{ call.function.arguments | tojson }}<|call|>
{%- endfor -%}
{%- else -%}
<|start|>assistant<|channel|>final<|message|>{{ m.content }}\
{{ "<|return|>" if loop.last and not add_generation_prompt else "<|end|>" }}
{%- endif -%}
{%- elif m.role == "tool" -%}
<|start|>functions.{{ m.name }} to=assistant<|channel|>commentary<|message|>\
{{ m.content | tojson }}<|end|>
{%- else -%}
<|start|>{{ m.role }}<|message|>{{ m.content }}<|end|>
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}<|start|>assistant{%- endif -%}"""

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}


CASES = [
    ("single_user", [u("Hello!")], True, {}),
    ("single_user_no_prompt", [u("Hello!")], False, {}),
    ("system_as_developer", [{"role": "system", "content": "Answer in French."}, u("Hi")], True, {}),
    ("developer", [{"role": "developer", "content": "Be brief."}, u("Why?")], True, {}),
    ("multi_turn", [u("1+1?"), a("2"), u("2+2?")], True, {}),
    ("final_turn_thinking", [u("1+1?"), a("2", thinking="Easy: 2.")], False, {}),
    ("earlier_thinking_dropped", [u("1+1?"), a("2", thinking="Easy."), u("3+3?")], True, {}),
    ("reasoning_high", [u("Prove it.")], True, {"reasoning_effort": "high"}),
    ("identity_and_date", [u("Who?")], True,
     {"model_identity": "You are Tandem.", "current_date": "2026-12-05"}),
    ("tools", [u("Weather in Paris?")], True, {"tools": [WEATHER]}),
    ("tool_call_and_result", [
        u("Weather in Paris?"),
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
            "name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]},
        {"role": "tool", "name": "get_weather", "content": "{\"temp\": 21, \"sky\": \"clear\"}"},
    ], True, {"tools": [WEATHER]}),
    ("unicode_and_braces", [u("Café {{ x }} {% raw %} 東京 \"q\"")], True, {}),
]


def main():
    render_fixture("harmony", HARMONY, CASES)


if __name__ == "__main__":
    main()
