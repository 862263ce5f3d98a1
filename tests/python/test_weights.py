"""Engine.load_weights: from a mapping of arrays (buffer protocol and DLPack) without a file,
outputs that change with the weights and come back with them, and the references the engine
keeps; from a path, the checkpoint's own weights again."""

import sys

import numpy as np
import pytest

import tandem
from conftest import DEMO, engine_args

GREEDY = dict(temperature=0, max_tokens=12, ignore_eos=True, logprobs=0)


def greedy(engine, prompt):
    c = engine.generate(prompt, tandem.SamplingParams(**GREEDY)).completions[0]
    return c.token_ids, np.array(c.logprobs)


class DLPackOnly:
    """An array that offers nothing but DLPack (as a torch tensor does): no buffer protocol."""

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


@pytest.fixture
def fresh_engine():
    return tandem.Engine(str(DEMO), **engine_args())


def test_round_trip_from_a_mapping_changes_and_restores_outputs(fresh_engine, demo_weights, rng):
    engine = fresh_engine
    prompt = rng.integers(0, engine.vocab_size - 3, size=10).tolist()
    ids, logprobs = greedy(engine, prompt)

    # The checkpoint's bf16 values as f32 arrays: the same model, computed from f32 weights.
    engine.load_weights(demo_weights)
    same_ids, same_logprobs = greedy(engine, prompt)
    assert same_ids == ids
    np.testing.assert_allclose(same_logprobs, logprobs, atol=2e-3)

    # Noise on every matrix: another model.
    noisy = {k: (v + rng.normal(0, 0.05, v.shape)).astype(np.float32) if v.ndim == 2 else v
             for k, v in demo_weights.items()}
    engine.load_weights(noisy)
    noisy_ids, noisy_logprobs = greedy(engine, prompt)
    assert noisy_ids != ids or np.abs(noisy_logprobs - logprobs).max() > 0.05

    engine.load_weights(demo_weights)
    back_ids, back_logprobs = greedy(engine, prompt)
    assert back_ids == same_ids
    np.testing.assert_array_equal(back_logprobs, same_logprobs)

    engine.load_weights(DEMO)  # a path: the bf16 checkpoint itself, bit for bit
    path_ids, path_logprobs = greedy(engine, prompt)
    assert path_ids == ids
    np.testing.assert_array_equal(path_logprobs, logprobs)


def test_arrays_are_used_in_place_and_released_by_the_next_load(fresh_engine, demo_weights):
    name = "model.norm.weight"
    weights = dict(demo_weights)
    weights[name] = demo_weights[name].copy()
    before = sys.getrefcount(weights[name])
    fresh_engine.load_weights(weights)
    held = sys.getrefcount(weights[name])  # (not inside the assert: pytest keeps its operands)
    fresh_engine.load_weights(str(DEMO))
    after = sys.getrefcount(weights[name])
    assert held > before  # referenced by the engine's model: read in place, not copied
    assert after == before


def test_dlpack_and_half_precision_arrays(fresh_engine, demo_weights, rng):
    prompt = rng.integers(0, fresh_engine.vocab_size - 3, size=6).tolist()
    ids, logprobs = greedy(fresh_engine, prompt)
    # f16 holds the small weights of this model to ~3 digits: close to the bf16 model
    fresh_engine.load_weights({k: DLPackOnly(v.astype(np.float16))
                               for k, v in demo_weights.items()})
    _, half_logprobs = greedy(fresh_engine, prompt)
    np.testing.assert_allclose(half_logprobs, logprobs, atol=0.05)


def test_bad_mappings_name_the_tensor_and_leave_the_engine_usable(fresh_engine, demo_weights):
    engine = fresh_engine
    prompt = [5, 6, 7]
    ids, _ = greedy(engine, prompt)
    missing = dict(demo_weights)
    del missing["model.layers.3.mlp.gate.weight"]
    with pytest.raises(tandem.RequestError, match="model.layers.3.mlp.gate.weight"):
        engine.load_weights(missing)
    wrong_shape = dict(demo_weights)
    wrong_shape["model.norm.weight"] = np.ones(255, np.float32)
    with pytest.raises(tandem.RequestError, match=r"model.norm.weight.*\[256\]"):
        engine.load_weights(wrong_shape)
    wrong_dtype = dict(demo_weights)
    wrong_dtype["model.norm.weight"] = np.ones(256, np.int32)
    with pytest.raises(TypeError, match="model.norm.weight.*float32, float16 or bfloat16"):
        engine.load_weights(wrong_dtype)
    strided = dict(demo_weights)
    strided["model.embed_tokens.weight"] = np.asfortranarray(demo_weights["model.embed_tokens.weight"])
    with pytest.raises(TypeError, match="C-contiguous"):
        engine.load_weights(strided)
    with pytest.raises(TypeError, match="path or a mapping"):
        engine.load_weights(42)
    with pytest.raises(tandem.Error, match="nope"):
        engine.load_weights("nope")
    assert greedy(engine, prompt)[0] == ids
