"""Engine.generate and Engine.score from Python against the C++ engine's own results: the golden
greedy ids, tandem-run's seeded samples, n samples, logprobs equal to score()."""

import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import tandem
from conftest import DEMO, ROOT, engine_args


def test_greedy_ids_are_the_golden_ones(engine, golden):
    prompt = golden["prompt_ids"].tolist()
    want = golden["greedy_ids_bf16"].tolist()
    out = engine.generate(prompt, tandem.SamplingParams(temperature=0, max_tokens=len(want),
                                                        ignore_eos=True))
    assert out.prompt_token_ids == prompt
    assert out.completions[0].token_ids == want
    assert out.completions[0].finish_reason == "length"


def test_seeded_samples_equal_tandem_run(rng):
    # Both batch-invariant: the mode is process-wide and only ever switched on, so this holds
    # whichever tests ran before in this process.
    engine = tandem.Engine(str(DEMO), **engine_args(batch_invariant=True))
    prompt = rng.integers(0, engine.vocab_size - 3, size=int(rng.integers(1, 20))).tolist()
    seed = int(rng.integers(0, 2**31))
    params = tandem.SamplingParams(temperature=0.9, top_p=0.95, seed=seed, max_tokens=12,
                                   ignore_eos=True)
    ids = engine.generate(prompt, params).completions[0].token_ids
    run = os.environ.get("TANDEM_RUN", str(ROOT / "build" / "tools" / "tandem-run"))
    result = subprocess.run(
        [run, "--model", str(DEMO), "--prompt-ids", ",".join(map(str, prompt)), "--seed",
         str(seed), "--temperature", "0.9", "--top-p", "0.95", "--max-tokens", "12",
         "--ignore-eos", "--threads", "2", "--no-pin", "--batch-invariant"],
        capture_output=True, text=True, check=True)
    assert [int(t) for t in result.stdout.splitlines()[0].split()] == ids


def test_n_samples_are_the_seeds_in_turn(engine, rng):
    prompt = rng.integers(0, engine.vocab_size - 3, size=8).tolist()
    seed = int(rng.integers(0, 2**31))
    base = dict(temperature=1.0, max_tokens=10, ignore_eos=True, logprobs=0)
    out = engine.generate(prompt, tandem.SamplingParams(n=4, seed=seed, **base))
    assert [c.index for c in out.completions] == [0, 1, 2, 3]
    for i, c in enumerate(out.completions):
        alone = engine.generate(prompt, tandem.SamplingParams(n=1, seed=seed + i, **base))
        assert c.token_ids == alone.completions[0].token_ids
        assert len(c.logprobs) == len(c.token_ids) == 10
    assert len({tuple(c.token_ids) for c in out.completions}) > 1


def test_a_list_of_prompts_gives_one_output_each(engine, rng):
    prompts = [rng.integers(0, engine.vocab_size - 3, size=int(k)).tolist()
               for k in rng.integers(1, 30, size=5)]
    params = tandem.SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    outs = engine.generate(prompts, params)
    assert [o.prompt_token_ids for o in outs] == prompts
    for p, o in zip(prompts, outs):
        assert o.completions[0].token_ids == engine.generate(p, params).completions[0].token_ids


def test_logprobs_equal_score_bit_for_bit_when_batch_invariant(rng):
    engine = tandem.Engine(str(DEMO), **engine_args(batch_invariant=True))
    prompt = rng.integers(0, engine.vocab_size - 3, size=int(rng.integers(2, 40))).tolist()
    params = tandem.SamplingParams(n=3, temperature=1.0, seed=int(rng.integers(0, 2**31)),
                                   max_tokens=16, logprobs=0)
    for c in engine.generate(prompt, params).completions:
        scored = engine.score(prompt + c.token_ids, len(prompt))
        assert scored == c.logprobs
        assert all(lp <= 0 for lp in scored)


def test_score_start_selects_the_tail(engine, rng):
    ids = rng.integers(0, engine.vocab_size, size=12).tolist()
    full = engine.score(ids)
    assert len(full) == 11
    np.testing.assert_allclose(engine.score(ids, 5), full[4:], atol=1e-5)
    np.testing.assert_allclose(engine.score(np.array(ids, dtype=np.int32), 5), full[4:],
                               atol=1e-5)


def test_routed_experts_cover_every_fed_position(engine, rng):
    prompt = rng.integers(0, engine.vocab_size - 3, size=7).tolist()
    out = engine.generate(prompt, tandem.SamplingParams(temperature=0, max_tokens=5,
                                                        ignore_eos=True,
                                                        return_routed_experts=True))
    r = out.completions[0].routed_experts
    assert r.experts.shape == (7 + 5 - 1, 8, 4)
    assert r.experts.dtype == np.int32 and r.weights.dtype == np.float32
    assert ((r.experts >= 0) & (r.experts < 32)).all()
    # norm_topk_prob: each position's top-4 weights sum to one
    np.testing.assert_allclose(r.weights.sum(axis=-1), 1.0, atol=1e-5)
    plain = engine.generate(prompt, tandem.SamplingParams(temperature=0, max_tokens=5))
    assert plain.completions[0].routed_experts is None


def test_generate_releases_the_gil(engine):
    prompts = [[5 + i, 6, 7] for i in range(16)]
    params = tandem.SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)
    window = {}

    def rollout():
        window["start"] = time.perf_counter()
        engine.generate(prompts, params)
        window["end"] = time.perf_counter()

    worker = threading.Thread(target=rollout)
    stamps = []
    worker.start()
    while worker.is_alive():
        stamps.append(time.perf_counter())
    worker.join()
    start, end = window["start"], window["end"]
    assert end - start > 0.05
    # The main thread ran all along: it has times in every tenth of the call's middle. Had
    # generate() held the GIL, it would have none between the call's first and last moments.
    tenths = {int((t - start) / (end - start) * 10) for t in stamps if start < t < end}
    assert set(range(1, 9)) <= tenths
