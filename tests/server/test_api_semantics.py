"""Every accepted field is honoured or refused: logit_bias, prompt_logprobs, the refused
fields (beam search, ...), 400 for what can never fit, id validation, chat max_tokens = 0,
stream_options without stream, GET /v1/models/{id}, /metrics under --api-key, clean error
messages, random request ids, JSON bodies sent as a form (curl -d)."""

import re

import requests
import openai
import pytest

from conftest import RunningServer
from test_bad_requests import assert_error, post

MODEL = "chat_tiny"
MESSAGES = [{"role": "user", "content": "Tell me a story about a fox."}]


def client(server, key="unused"):
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)


def test_logit_bias_bans_and_forces_tokens(server):
    c = client(server)
    kw = dict(model=MODEL, prompt="Once upon a time", max_tokens=6, temperature=0, logprobs=0)
    free = c.completions.create(**kw).choices[0]
    first = requests.post(server.url + "/tokenize",
                          json={"prompt": free.logprobs.tokens[0],
                                "add_special_tokens": False}).json()["tokens"]
    assert len(first) == 1
    banned = c.completions.create(**kw, logit_bias={str(first[0]): -100}).choices[0]
    assert banned.logprobs.tokens[0] != free.logprobs.tokens[0]
    fox = requests.post(server.url + "/tokenize",
                        json={"prompt": "fox", "add_special_tokens": False}).json()["tokens"]
    forced = c.completions.create(**{**kw, "max_tokens": 4}, logit_bias={str(fox[0]): 100})
    token = requests.post(server.url + "/detokenize", json={"tokens": fox[:1]}).json()["prompt"]
    assert forced.choices[0].text == token * 4
    chat = c.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3, temperature=0,
                                     logit_bias={str(fox[0]): 100})
    assert chat.choices[0].message.content == token * 3


@pytest.mark.parametrize("bias", [{"abc": 1}, {"-1": 1}, {"100000": 1}, {"5": 101},
                                  {"5": "high"}, [1, 2]])
def test_bad_logit_bias_is_400(server, bias):
    assert_error(post(server, "/v1/chat/completions",
                      {"model": MODEL, "messages": MESSAGES, "logit_bias": bias}), 400,
                 "logit_bias")


def test_prompt_logprobs_are_returned(server):
    c = client(server)
    r = c.completions.create(model=MODEL, prompt="Hello world, said the fox", max_tokens=1,
                             temperature=0, extra_body={"prompt_logprobs": 2})
    plp = r.choices[0].model_extra["prompt_logprobs"]
    assert len(plp) == r.usage.prompt_tokens
    assert plp[0] is None
    ids = requests.post(server.url + "/tokenize",
                        json={"prompt": "Hello world, said the fox"}).json()["tokens"]
    # The same numbers as echo + logprobs (the legacy listing of the prompt).
    echo = c.completions.create(model=MODEL, prompt="Hello world, said the fox", max_tokens=1,
                                temperature=0, echo=True, logprobs=2)
    for i, position in enumerate(plp[1:], start=1):
        assert str(ids[i]) in position
        own = position[str(ids[i])]
        assert own["logprob"] <= 0
        assert own["logprob"] == pytest.approx(echo.choices[0].logprobs.token_logprobs[i],
                                               abs=1e-5)
        assert 1 <= len(position) <= 3
        ranks = sorted(e["rank"] for e in position.values() if e["rank"] is not None)
        assert ranks[:2] == [1, 2]
        assert all("decoded_token" in e for e in position.values())
    chat = c.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1,
                                     extra_body={"prompt_logprobs": 0})
    listing = chat.model_extra["prompt_logprobs"]
    assert len(listing) == chat.usage.prompt_tokens and listing[0] is None
    assert all(len(p) == 1 for p in listing[1:])


def test_prompt_logprobs_refused_where_they_cannot_be_given(server):
    stream = {"model": MODEL, "messages": MESSAGES, "stream": True, "prompt_logprobs": 1}
    assert_error(post(server, "/v1/chat/completions", stream), 400, "prompt_logprobs")
    whole_vocab = {"model": MODEL, "prompt": "Hi", "prompt_logprobs": -1}
    assert_error(post(server, "/v1/completions", whole_vocab), 400, "prompt_logprobs")


REFUSED = [
    ("functions", [{"name": "f"}]),
    ("use_beam_search", True),
]


@pytest.mark.parametrize("field,value", REFUSED)
def test_unimplemented_fields_are_refused(server, field, value):
    assert_error(post(server, "/v1/chat/completions",
                      {"model": MODEL, "messages": MESSAGES, field: value}), 400, field)


def test_no_op_values_of_unimplemented_fields_are_accepted(server):
    r = client(server).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=2, response_format={"type": "text"},
        tool_choice="none", tools=[])
    assert r.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.BadRequestError) as e:
        client(server).chat.completions.create(model=MODEL, messages=MESSAGES,
                                               extra_body={"use_beam_search": True})
    assert "use_beam_search" in str(e.value)


def test_chat_needs_a_token_and_stream_options_need_stream(server):
    chat = {"model": MODEL, "messages": MESSAGES}
    assert_error(post(server, "/v1/chat/completions", {**chat, "max_tokens": 0}), 400,
                 "max_tokens")
    assert_error(post(server, "/v1/chat/completions", {**chat, "max_completion_tokens": 0}),
                 400, "max_completion_tokens")
    assert_error(post(server, "/v1/chat/completions",
                      {**chat, "stream_options": {"include_usage": True}}), 400,
                 "stream_options")
    # Completions take max_tokens 0 to score a prompt (echo), as vLLM does.
    r = post(server, "/v1/completions", {"prompt": "Hi there", "max_tokens": 0, "echo": True,
                                         "logprobs": 0})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == "Hi there"


def test_detokenize_validates_ids(server):
    vocab = post(server, "/tokenize", {"prompt": "x"}).json()
    for bad in [2**32 + 5, 2**31, -1, 10**20, 1.5]:
        assert_error(post(server, "/detokenize", {"tokens": [bad]}), 400, "tokens")
    r = requests.get(server.url + "/v1/models/" + MODEL).json()
    assert r["id"] == MODEL and r["max_model_len"] == vocab["max_model_len"]
    ok = post(server, "/detokenize", {"tokens": vocab["tokens"]})
    assert ok.status_code == 200


def test_retrieve_a_model(server):
    c = client(server)
    m = c.models.retrieve(MODEL)
    assert m.id == MODEL and m.object == "model"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("gpt-17")


def test_error_messages_carry_no_parser_text(server):
    for body in [b"{not json", b'{"prompt": "bad \xff\xfe bytes"}', b"", b'{"a": [1, 2}']:
        r = post(server, "/v1/completions", content=body)
        assert_error(r, 400)
        message = r.json()["error"]["message"]
        assert "json.exception" not in message and "parse_error" not in message, message
        assert re.fullmatch(r"the request body is not valid JSON \((syntax error|invalid UTF-8)"
                            r" at byte \d+\)", message), message
    r = post(server, "/tokenize", {"prompt": "Hi", "return_token_strs": "yes"})
    assert_error(r, 400, "return_token_strs")
    assert "type_error" not in r.json()["error"]["message"]


def test_a_json_body_sent_as_a_form_is_read_as_json(server):
    """curl -d sends application/x-www-form-urlencoded; a body over 8 KiB used to get a false
    413 from httplib's form parser."""
    body = ('{"prompt": "Hi", "max_tokens": 2, "pad": "' + "x" * 20000 + '"}').encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    r = post(server, "/v1/completions", content=body, headers=form)
    assert r.status_code == 200, r.text
    # The limit that does hold: --max-body-bytes (65536 for this server).
    big = ('{"prompt": "' + "x" * 70000 + '"}').encode()
    assert_error(post(server, "/v1/completions", content=big, headers=form), 413)
    assert server.alive()


def test_request_ids_are_random_and_unique(server):
    c = client(server)
    ids = [c.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1).id
           for _ in range(3)]
    ids.append(c.completions.create(model=MODEL, prompt="Hi", max_tokens=1).id)
    assert len(set(ids)) == 4
    for i in ids:
        assert re.fullmatch(r"(chatcmpl|cmpl)-[0-9a-f]{32}", i), i
    # A restarted server does not repeat them (they used to count from 1 at every start).
    other = RunningServer()
    try:
        again = client(other).chat.completions.create(model=MODEL, messages=MESSAGES,
                                                      max_tokens=1).id
        assert again not in ids
    finally:
        other.stop()


def test_api_key_guards_metrics_and_a_request_that_can_never_fit_is_400():
    s = RunningServer("--api-key", "sesame", "--kv-cache-mb", "1")
    key = {"Authorization": "Bearer sesame"}
    try:
        assert_error(requests.get(s.url + "/metrics"), 401)
        assert requests.get(s.url + "/metrics", headers=key).status_code == 200
        assert requests.get(s.url + "/health").status_code == 200
        # 8 samples of a chat without max_tokens reserve 8 x 512 positions; 1 MiB of the f16
        # cache (the default) holds ~2720.
        r = post(s, "/v1/chat/completions", {"messages": MESSAGES, "n": 8}, headers=key)
        assert_error(r, 400)
        assert "KV" in r.json()["error"]["message"]
        assert post(s, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 4},
                    headers=key).status_code == 200
    finally:
        s.stop()
    public = RunningServer("--api-key", "sesame", "--public-metrics")
    try:
        assert requests.get(public.url + "/metrics").status_code == 200
        assert_error(requests.get(public.url + "/v1/models"), 401)
    finally:
        public.stop()
