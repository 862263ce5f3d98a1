"""Errors from Python: the engine's own message in tandem.Error / tandem.RequestError (a
ValueError) / TypeError for what Python itself gets wrong, and an engine that still works."""

import pytest

import tandem
from conftest import DEMO, engine_args


def test_a_missing_model_names_the_path(tmp_path):
    with pytest.raises(tandem.Error, match=f"model_dir: '{tmp_path / 'absent'}' does not exist"):
        tandem.Engine(str(tmp_path / "absent"), **engine_args())


def test_a_broken_model_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{ not json")
    with pytest.raises(tandem.Error, match="config.json"):
        tandem.Engine(str(tmp_path), **engine_args())


def test_every_bad_config_value_is_named():
    with pytest.raises(tandem.Error) as error:
        tandem.Engine(str(DEMO), **engine_args(kv_cache_type="f8", max_sequences=0))
    assert "2 bad fields" in str(error.value)
    assert "kv_cache_type: 'f8' is not one of" in str(error.value)
    assert "max_sequences: 0 is not positive" in str(error.value)


def test_unknown_or_mistyped_fields_are_type_errors():
    with pytest.raises(TypeError, match="EngineConfig has no field 'n_thread'"):
        tandem.Engine(str(DEMO), n_thread=2)
    with pytest.raises(TypeError):
        tandem.Engine(str(DEMO), n_threads="two")
    with pytest.raises(TypeError, match="SamplingParams has no field 'temp'"):
        tandem.SamplingParams(temp=0.5)


@pytest.mark.parametrize("prompt, message", [
    ([8192], "prompt token id 8192 is outside the vocabulary of 8192"),
    ([1, -1], "prompt token id -1 is outside the vocabulary"),
    ([], "the prompt is empty"),
    (list(range(1, 1025)), "does not fit the context length of 1024"),
])
def test_bad_prompts_are_request_errors(engine, prompt, message):
    with pytest.raises(tandem.RequestError, match=message):
        engine.generate(prompt, tandem.SamplingParams(max_tokens=2))
    assert isinstance(tandem.RequestError("x"), ValueError)


def test_bad_sampling_params_are_request_errors(engine):
    with pytest.raises(tandem.RequestError, match="temperature"):
        engine.generate([1, 2], tandem.SamplingParams(temperature=-1))
    with pytest.raises(tandem.RequestError, match="stop_token_ids"):
        engine.generate([1, 2], tandem.SamplingParams(stop_token_ids=[10**6]))


def test_a_bad_prompt_in_a_batch_fails_the_call(engine):
    with pytest.raises(tandem.RequestError, match="9999"):
        engine.generate([[1, 2], [99999]], tandem.SamplingParams(max_tokens=4))


def test_not_token_ids_is_a_type_error(engine):
    with pytest.raises(TypeError, match="token ids"):
        engine.generate("text", tandem.SamplingParams())
    with pytest.raises(TypeError, match="token ids"):
        engine.score([1, "a", 3])


def test_bad_score_calls(engine):
    with pytest.raises(tandem.RequestError, match="at least two tokens"):
        engine.score([1])
    with pytest.raises(tandem.RequestError, match=r"start 3 must be in \[1, 3\)"):
        engine.score([1, 2, 3], 3)
    with pytest.raises(tandem.RequestError, match="outside the vocabulary"):
        engine.score([1, 10**5])


def test_the_engine_works_after_errors(engine):
    out = engine.generate([5, 6, 7], tandem.SamplingParams(temperature=0, max_tokens=3,
                                                           ignore_eos=True))
    assert len(out.completions[0].token_ids) == 3
