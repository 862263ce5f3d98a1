"""Structured output over HTTP on the demo model: response_format (json_object, json_schema) and
vLLM's guided_* / structured_outputs fields. Every output is checked independently of the engine:
with `jsonschema` (PyPI) against the simple cases of the JSON Schema test suite
(data/json_schema_cases.json, written by tools/make_schema_cases.py), 200 samples per schema;
the official `openai` client parses a pydantic model; bad specs are 400s that leave the server up.
"""

import json
import os
import random
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import jsonschema
import openai
import pydantic
import pytest
import requests

from conftest import ROOT, RunningServer
from test_bad_requests import post

DEMO = ROOT / "models" / "demo" / "tandem-demo-moe"
MODEL = "tandem-demo-moe"
CASES = json.loads((Path(__file__).parent / "data" / "json_schema_cases.json").read_text())["cases"]
# 200 per schema; fewer where TANDEM_SCHEMA_SAMPLES says so (the sanitizer builds' run).
SAMPLES = int(os.environ.get("TANDEM_SCHEMA_SAMPLES", "200"))
MESSAGES = [{"role": "user", "content": "Answer in JSON."}]


@pytest.fixture(scope="module")
def demo():
    s = RunningServer("--max-sequences", "64", model=DEMO)
    yield s
    s.stop()
    assert s.proc.returncode == 0, "tandem-server did not exit cleanly"


def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def samples(server, extra, total, seed, max_tokens=64):
    """`total` chat samples under `extra` (the request's structured-output fields), sent as
    concurrent requests of n <= 16 so that the engine batches them. Sample j of request i has
    seed seed + 16 i + j: every sample its own stream."""
    sizes = [16] * (total // 16) + ([total % 16] if total % 16 else [])

    def one(i):
        r = requests.post(server.base_url + "/chat/completions", json={
            "model": MODEL, "messages": MESSAGES, "n": sizes[i], "max_tokens": max_tokens,
            "temperature": 1.0, "seed": seed + 16 * i, **extra})
        assert r.status_code == 200, r.text
        return [(c["message"]["content"], c["finish_reason"]) for c in r.json()["choices"]]

    with ThreadPoolExecutor(len(sizes)) as pool:
        return [c for batch in pool.map(one, range(len(sizes))) for c in batch]


@pytest.mark.parametrize("case", CASES, ids=[c["description"] for c in CASES])
def test_every_sample_validates_against_the_schema(demo, case):
    validator = jsonschema.Draft202012Validator(case["schema"])
    seed = random.randrange(1 << 30)
    outputs = samples(demo, {"response_format": {
        "type": "json_schema", "json_schema": {"name": "case", "schema": case["schema"]}}},
        SAMPLES, seed)
    assert len(outputs) == SAMPLES
    complete = 0
    for text, finish in outputs:
        # The demo model never saw JSON: on open schemas ("any object") many samples ramble
        # until max_tokens ends them, as prefixes with finish_reason "length". Every sample
        # that finished is a whole answer and must validate.
        if finish == "length":
            continue
        assert finish == "stop", f"seed {seed}"
        value = json.loads(text)
        errors = list(validator.iter_errors(value))
        assert not errors, f"seed {seed}: {text!r}: {errors[0].message}"
        complete += 1
    # Open schemas finish rarely in 64 tokens (3-30 %): enough to check a few every run.
    assert complete >= max(SAMPLES // 50, 1), f"seed {seed}: {complete} of {SAMPLES} finished"


def test_json_object_and_the_openai_client(demo):
    r = client(demo).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=200, seed=3, n=4,
        response_format={"type": "json_object"})
    for choice in r.choices:
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content), dict)


class City(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=12)
    population: int = pydantic.Field(ge=0, le=10**8)
    coastal: bool
    districts: list[Annotated[str, pydantic.Field(max_length=12)]] = pydantic.Field(max_length=3)


def test_pydantic_model_through_parse(demo):
    c = client(demo)
    parse = c.chat.completions.parse if hasattr(c.chat.completions, "parse") \
        else c.beta.chat.completions.parse
    parsed = 0
    first = random.randrange(1 << 30)
    for seed in range(first, first + 8):
        try:
            r = parse(model=MODEL, messages=[{"role": "user", "content": "Describe a city."}],
                      response_format=City, max_tokens=150, seed=seed)
        except openai.LengthFinishReasonError:  # cut short by max_tokens: nothing to parse
            continue
        city = r.choices[0].message.parsed
        assert isinstance(city, City), f"seed {seed}"
        assert len(city.districts) <= 3 and 0 <= city.population <= 10**8
        parsed += 1
    assert parsed >= 3, f"seeds {first}..: {parsed} of 8 parsed"


def test_regex_choice_and_grammar_extension_fields(demo):
    regex = r"(yes|no), [0-9]{1,3} (apples|pears)"
    for extra in ({"guided_regex": regex}, {"structured_outputs": {"regex": regex}}):
        for text, finish in samples(demo, extra, 16, seed=5, max_tokens=40):
            assert finish == "stop" and re.fullmatch(regex, text), text
    choices = ["red", "green (dark)", "a.b*c"]
    for text, finish in samples(demo, {"guided_choice": choices}, 16, seed=6):
        assert text in choices
    grammar = 'root ::= "The " animal " is " ("big" | "small") "."\nanimal ::= "cat" | "dog"'
    for text, finish in samples(demo, {"guided_grammar": grammar}, 16, seed=7):
        assert re.fullmatch(r"The (cat|dog) is (big|small)\.", text), text


def test_streamed_structured_output(demo):
    schema = {"type": "object", "properties": {"a": {"type": "integer"},
                                               "b": {"enum": ["x", "y"]}},
              "required": ["a", "b"], "additionalProperties": False}
    stream = client(demo).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=100, seed=11, stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}})
    text, finish = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert finish == "stop"
    jsonschema.validate(json.loads(text), schema)


BAD = [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema",
                          "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
     "json_schema"),
    ({"guided_regex": "(unclosed"}, "regex"),
    ({"guided_grammar": "root ::= missing_rule"}, "grammar"),
    ({"guided_choice": []}, "guided_choice"),
    ({"guided_regex": "a", "response_format": {"type": "json_object"}}, "both constrain"),
    ({"structured_outputs": {"xml": "a"}}, "structured_outputs.xml"),
]


@pytest.mark.parametrize("extra,named", BAD, ids=[b[1] for b in BAD])
def test_bad_specs_are_400s_and_the_server_goes_on(demo, extra, named):
    r = post(demo, "/v1/chat/completions", {"model": MODEL, "messages": MESSAGES, **extra})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == named or named in error["message"], error
    assert demo.alive()
