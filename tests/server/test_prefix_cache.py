"""Automatic prefix caching through the official `openai` client: a repeated conversation reuses
its prompt's KV blocks (usage.prompt_tokens_details.cached_tokens, /metrics' hit ratio rises) and
answers as it did cold; load_weights empties the cache; --no-prefix-caching turns it off."""

import random

import openai
import requests

from conftest import RunningServer

MODEL = "chat_tiny"


def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)


def conversation(rng):
    """A system prompt long enough for several KV blocks of 16 positions, fresh each run."""
    words = ["fox", "river", "stone", "lantern", "meadow", "copper", "whistle", "orchard"]
    system = "You are a storyteller. " + " ".join(rng.choice(words) for _ in range(60))
    return [{"role": "system", "content": system},
            {"role": "user", "content": "Tell me about the " + rng.choice(words) + "."}]


def ask(server, messages):
    return client(server).chat.completions.create(model=MODEL, messages=messages, max_tokens=8,
                                                  temperature=0)


def test_a_repeated_prompt_hits_the_cache_and_answers_the_same(server):
    messages = conversation(random.Random())
    queries = server.metric("tandem_prefix_cache_queries_total")
    hits = server.metric("tandem_prefix_cache_hits_total")
    cold = ask(server, messages)
    assert cold.usage.prompt_tokens > 48
    cold_cached = cold.usage.prompt_tokens_details.cached_tokens
    ratio = server.metric("tandem_prefix_cache_hit_ratio")
    warm = ask(server, messages)
    cached = warm.usage.prompt_tokens_details.cached_tokens
    # Every full block but the one holding the last prompt token.
    assert cached == (warm.usage.prompt_tokens - 1) // 16 * 16 > cold_cached
    assert warm.choices[0].message.content == cold.choices[0].message.content
    assert server.metric("tandem_prefix_cache_queries_total") == queries + 2 * cold.usage.prompt_tokens
    assert server.metric("tandem_prefix_cache_hits_total") == hits + cold_cached + cached
    assert server.metric("tandem_prefix_cache_hit_ratio") > ratio
    assert server.metric("tandem_kv_cache_blocks_cached") > 0
    assert server.metric("tandem_kv_cache_blocks_used") == 0
    assert server.metric("tandem_preemptions_total") == 0


def test_load_weights_empties_the_cache(server):
    messages = conversation(random.Random())
    ask(server, messages)
    r = requests.post(server.base_url + "/load_weights", json={"path": "chat_tiny"},
                      headers={"Authorization": "Bearer admin-secret"})
    assert r.status_code == 200, r.text
    assert server.metric("tandem_kv_cache_blocks_cached") == 0
    assert ask(server, messages).usage.prompt_tokens_details.cached_tokens == 0
    assert ask(server, messages).usage.prompt_tokens_details.cached_tokens > 0


def test_no_prefix_caching_computes_every_prompt():
    s = RunningServer("--no-prefix-caching")
    try:
        messages = conversation(random.Random())
        ask(s, messages)
        assert ask(s, messages).usage.prompt_tokens_details.cached_tokens == 0
        assert s.metric("tandem_prefix_cache_queries_total") == 0
        assert s.metric("tandem_prefix_cache_hit_ratio") == 0
    finally:
        s.stop()


def test_a_streamed_answer_reports_its_cached_tokens(server):
    """stream_options.include_usage: the final chunk's usage counts the cached prompt tokens once
    per prompt, however many samples (n) share it."""
    messages = conversation(random.Random())
    warm_up = ask(server, messages)
    want = (warm_up.usage.prompt_tokens - 1) // 16 * 16
    stream = client(server).chat.completions.create(
        model=MODEL, messages=messages, max_tokens=4, temperature=0.8, n=3, stream=True,
        stream_options={"include_usage": True})
    usage = [c.usage for c in stream if c.usage is not None]
    assert len(usage) == 1
    assert usage[0].prompt_tokens == warm_up.usage.prompt_tokens
    assert usage[0].prompt_tokens_details.cached_tokens == want > 0
