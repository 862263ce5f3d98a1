"""tandem-server through the official `openai` client: chat and completions, streaming with
usage, n, seeds, stops, logprobs, and 32 concurrent streams that each get what they get alone."""

import asyncio

import requests
import openai
import pytest

MODEL = "chat_tiny"
MESSAGES = [{"role": "user", "content": "Tell me a story about a fox."}]


def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def test_models_lists_the_served_model(server):
    models = client(server).models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_chat_completion(server):
    r = client(server).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=12,
                                               temperature=0)
    assert r.object == "chat.completion"
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completions_take_strings_lists_and_token_ids(server):
    c = client(server)
    one = c.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6,
                               temperature=0)
    assert one.object == "text_completion" and len(one.choices) == 1
    batch = c.completions.create(model=MODEL, prompt=["Once upon a time", "Hello"], max_tokens=6,
                                 temperature=0)
    assert [ch.index for ch in batch.choices] == [0, 1]
    assert batch.choices[0].text == one.choices[0].text
    tokens = requests.post(server.url + "/tokenize", json={"prompt": "Once upon a time"}).json()["tokens"]
    by_ids = c.completions.create(model=MODEL, prompt=tokens, max_tokens=6, temperature=0)
    assert by_ids.choices[0].text == one.choices[0].text


def test_echo_and_logprobs(server):
    r = client(server).completions.create(model=MODEL, prompt="Hello world", max_tokens=4,
                                          temperature=0, echo=True, logprobs=2)
    ch = r.choices[0]
    assert ch.text.startswith("Hello world")
    lp = ch.logprobs
    assert lp.token_logprobs[0] is None  # the first prompt token has no context
    n_prompt = r.usage.prompt_tokens
    assert len(lp.tokens) == n_prompt + r.usage.completion_tokens
    assert all(x <= 0 for x in lp.token_logprobs[1:])
    # Keyed by text: two ids that decode alike (partial UTF-8) share one entry.
    assert all(1 <= len(alts) <= 2 for alts in lp.top_logprobs[1:])
    assert lp.text_offset == sorted(lp.text_offset)


def test_streaming_with_usage(server):
    c = client(server)
    whole = c.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16,
                                      temperature=0)
    stream = c.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=16,
                                       temperature=0, stream=True,
                                       stream_options={"include_usage": True})
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    assert text == whole.choices[0].message.content
    assert finish == whole.choices[0].finish_reason
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def test_n_and_seeds(server):
    c = client(server)
    kw = dict(model=MODEL, messages=MESSAGES, max_tokens=12, temperature=1.2, seed=1234, n=3)
    a = c.chat.completions.create(**kw)
    b = c.chat.completions.create(**kw)
    assert [ch.index for ch in a.choices] == [0, 1, 2]
    assert [ch.message.content for ch in a.choices] == [ch.message.content for ch in b.choices]
    assert len({ch.message.content for ch in a.choices}) > 1
    other = c.chat.completions.create(**{**kw, "seed": 99})
    assert [ch.message.content for ch in other.choices] != [ch.message.content for ch in a.choices]


def test_stop_sequences(server):
    c = client(server)
    free = c.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=24,
                                temperature=0).choices[0].text
    assert len(free) >= 6, free
    stop = free[len(free) // 2:len(free) // 2 + 2]
    cut = c.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=24,
                               temperature=0, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop"
    assert cut.text == free[:free.index(stop)]


def test_chat_logprobs(server):
    r = client(server).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5,
                                               temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        # Greedy: the chosen token is the most probable one.
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-6)
        assert entry.bytes, entry
        # The text is the bytes, with partial UTF-8 characters replaced.
        if "\ufffd" not in entry.token:
            assert bytes(entry.bytes).decode("utf-8") == entry.token


def test_32_concurrent_streams_match_each_alone(server):
    prompts = [f"Story number {i}: the fox" + " and the dog" * (i % 7) for i in range(32)]

    async def stream_one(c, prompt):
        text = ""
        stream = await c.completions.create(model=MODEL, prompt=prompt, max_tokens=10,
                                            temperature=0, stream=True)
        async for chunk in stream:
            text += chunk.choices[0].text if chunk.choices else ""
        return text

    async def run_all():
        c = openai.AsyncOpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        return await asyncio.gather(*(stream_one(c, p) for p in prompts))

    together = asyncio.run(run_all())
    c = client(server)
    for prompt, text in zip(prompts, together):
        alone = c.completions.create(model=MODEL, prompt=prompt, max_tokens=10, temperature=0)
        assert text == alone.choices[0].text, prompt


def test_a_gguf_model_is_served():
    from conftest import ROOT, RunningServer
    s = RunningServer(model=ROOT / "tests" / "data" / "gguf" / "qwen3_moe" / "model-q4_k.gguf")
    try:
        c = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0)
        assert [m.id for m in c.models.list().data] == ["model-q4_k"]
        r = c.chat.completions.create(model="model-q4_k", messages=MESSAGES, max_tokens=8,
                                      temperature=0)
        assert r.usage.completion_tokens > 0
        assert isinstance(r.choices[0].message.content, str)
    finally:
        s.stop()


def test_hybrid_runtime_on_the_sim_device_serves_the_same_tokens(server):
    """--expert-device sim: half of the routed experts in device slots, planned per layer; the
    greedy answers are the CPU server's, and /metrics counts the device's expert jobs."""
    from conftest import ROOT, RunningServer
    s = RunningServer("--expert-device", "sim", "--gpu-expert-ratio", "0.5",
                      "--hardware-profile", str(ROOT / "tools" / "profiles" /
                                                "rtx4090-ddr5-pcie4.json"))
    try:
        hybrid = openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0)
        for prompt in ["Once upon a time", "The fox said", "1, 2, 3,"]:
            want = client(server).completions.create(model=MODEL, prompt=prompt, max_tokens=12,
                                                     temperature=0)
            got = hybrid.completions.create(model=MODEL, prompt=prompt, max_tokens=12,
                                            temperature=0)
            assert got.choices[0].text == want.choices[0].text, prompt
        assert s.metric("tandem_experts_on_device_total") > 0
        assert s.metric("tandem_expert_cache_hits_total") > 0
    finally:
        s.stop()
    assert s.proc.returncode == 0
