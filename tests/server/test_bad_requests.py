"""Bad input gets the right status and the OpenAI error envelope, and the server keeps serving;
a client that disconnects mid-stream leaves no active sequence behind; keys are enforced."""

import json
import socket
import time

import requests
import openai
import pytest

from conftest import RunningServer

MODEL = "chat_tiny"


def post(server, path, body=None, content=None, headers=None):
    return requests.post(server.url + path, json=body, data=content, headers=headers,
                      timeout=30)


def assert_error(response, status, param=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status
    assert error["message"]
    if param is not None:
        assert error["param"] == param, error


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

BAD_CHAT = [
    ({**CHAT, "max_tokens": -1}, "max_tokens"),
    ({**CHAT, "max_tokens": 10**12}, "max_tokens"),
    ({**CHAT, "max_tokens": 100000}, "max_tokens"),  # beyond the context of 512
    ({**CHAT, "max_tokens": "4"}, "max_tokens"),
    ({**CHAT, "temperature": "hot"}, "temperature"),
    ({**CHAT, "temperature": -1}, "temperature"),
    ({**CHAT, "top_p": 1.5}, "top_p"),
    ({**CHAT, "n": 0}, "n"),
    ({**CHAT, "n": 1.5}, "n"),
    ({**CHAT, "stop": 7}, "stop"),
    ({**CHAT, "stream": "yes"}, "stream"),
    ({**CHAT, "top_logprobs": 3}, "top_logprobs"),  # without logprobs
    ({**CHAT, "logprobs": True, "top_logprobs": 99}, "top_logprobs"),
    ({**CHAT, "presence_penalty": 5}, "presence_penalty"),
    ({**CHAT, "seed": "x"}, "seed"),
    ({**CHAT, "messages": []}, "messages"),
    ({**CHAT, "messages": "hello"}, "messages"),
    ({**CHAT, "messages": [{"content": "no role"}]}, "messages[0]"),
    ({**CHAT, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({**CHAT, "messages": [{"role": "user", "content": "x " * 600}]}, "messages"),  # > context
]


@pytest.mark.parametrize("body,param", BAD_CHAT)
def test_bad_chat_parameters_are_400(server, body, param):
    assert_error(post(server, "/v1/chat/completions", body), 400, param)
    assert server.alive()


def test_malformed_and_oversized_bodies(server):
    assert_error(post(server, "/v1/chat/completions", content=b"{not json"), 400)
    assert_error(post(server, "/v1/chat/completions", content=b"[1, 2]"), 400)
    assert_error(post(server, "/v1/completions", {"model": MODEL}), 400, "prompt")
    assert_error(post(server, "/v1/completions", {"model": MODEL, "prompt": [[]]}), 400)
    assert_error(post(server, "/v1/completions", {"model": MODEL, "prompt": [1, -5]}), 400)
    assert_error(post(server, "/v1/completions", {"model": MODEL, "prompt": [100000]}), 400)
    # Invalid UTF-8 inside a JSON string.
    assert_error(post(server, "/v1/completions",
                      content=b'{"model": "chat_tiny", "prompt": "bad \xff\xfe bytes"}'), 400)
    assert_error(post(server, "/v1/completions", content=b'{"prompt": "' + b"a" * 70000 + b'"}'),
                 413)
    assert server.alive()


def test_unknown_model_and_route_are_404(server):
    assert_error(post(server, "/v1/chat/completions", {**CHAT, "model": "gpt-17"}), 404, "model")
    assert_error(requests.get(server.url + "/v1/nothing"), 404)
    c = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="gpt-17", messages=CHAT["messages"])
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=MODEL, messages=CHAT["messages"], max_tokens=-5)
    assert e.value.status_code == 400
    assert server.alive()


def test_unknown_fields_are_ignored(server):
    r = post(server, "/v1/chat/completions", {**CHAT, "frobnicate": {"a": 1}, "user": "u1"})
    assert r.status_code == 200, r.text


def test_disconnect_mid_stream_frees_the_sequence(server):
    body = json.dumps({**CHAT, "max_tokens": 400, "ignore_eos": True, "stream": True}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/json\r\nContent-Length: " + str(len(body)).encode() +
                 b"\r\n\r\n" + body)
    received = b""
    while received.count(b"data: ") < 3:
        received += sock.recv(4096)
    sock.close()
    deadline = time.time() + 20
    while time.time() < deadline and server.metric("tandem_active_sequences") > 0:
        time.sleep(0.05)
    assert server.metric("tandem_active_sequences") == 0
    assert server.metric("tandem_kv_cache_blocks_used") == 0
    assert server.alive()


def test_tokenize_detokenize_and_metrics(server):
    r = post(server, "/tokenize", {"prompt": "Hello, world!"}).json()
    assert r["count"] == len(r["tokens"]) > 0
    assert r["max_model_len"] == 512
    assert post(server, "/detokenize", {"tokens": r["tokens"]}).json()["prompt"] == "Hello, world!"
    assert_error(post(server, "/detokenize", {"tokens": "abc"}), 400, "tokens")
    chat = post(server, "/tokenize", {"messages": CHAT["messages"]}).json()
    assert chat["count"] > r["count"] - 5
    text = requests.get(server.url + "/metrics").text
    for name in ["tandem_requests_total", "tandem_prompt_tokens_total",
                 "tandem_generation_tokens_total", "tandem_time_to_first_token_seconds_bucket",
                 "tandem_time_per_output_token_seconds_bucket", "tandem_requests_waiting",
                 "tandem_active_sequences", "tandem_kv_cache_usage_ratio",
                 "tandem_expert_cache_hit_ratio", "tandem_experts_on_device_total",
                 "tandem_expert_prefetches_used_total"]:
        assert name in text, name
    assert 'status="400"' in text


def test_load_weights_needs_the_admin_key_and_the_directory(server):
    good = {"path": "chat_tiny"}
    assert_error(post(server, "/v1/load_weights", good), 401)
    assert_error(post(server, "/v1/load_weights", good, headers={"Authorization": "Bearer no"}),
                 401)
    admin = {"Authorization": "Bearer admin-secret"}
    assert_error(post(server, "/v1/load_weights", {"path": "/etc"}, headers=admin), 403, "path")
    assert_error(post(server, "/v1/load_weights", {"path": "../../.."}, headers=admin), 403)
    assert_error(post(server, "/v1/load_weights", {"path": "golden/llama/f32"}, headers=admin),
                 400)  # another architecture
    before = post(server, "/v1/completions", {"prompt": "Hi", "max_tokens": 5, "temperature": 0})
    r = post(server, "/v1/load_weights", good, headers=admin)
    assert r.status_code == 200, r.text
    after = post(server, "/v1/completions", {"prompt": "Hi", "max_tokens": 5, "temperature": 0})
    assert before.json()["choices"][0]["text"] == after.json()["choices"][0]["text"]


def test_api_key_and_full_queue():
    s = RunningServer("--api-key", "sesame", "--max-waiting", "0")
    try:
        assert requests.get(s.url + "/health").status_code == 200  # public
        assert_error(post(s, "/v1/chat/completions", CHAT), 401)
        assert_error(post(s, "/v1/chat/completions", CHAT,
                          headers={"Authorization": "Bearer wrong"}), 401)
        full = post(s, "/v1/chat/completions", CHAT, headers={"Authorization": "Bearer sesame"})
        assert_error(full, 503)
        assert full.headers["Retry-After"] == "1"
        c = openai.OpenAI(base_url=s.base_url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            c.models.list()
        assert openai.OpenAI(base_url=s.base_url, api_key="sesame").models.list().data
    finally:
        s.stop()
