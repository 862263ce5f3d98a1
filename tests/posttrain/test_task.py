"""The addition task: the held-out split, the verifier, the solver's demonstrations."""

from pathlib import Path

import pytest

import task

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo" / "tandem-demo-moe"


def test_the_split_is_disjoint_complete_and_fixed():
    train, held_out = task.split(2)
    assert len(train) + len(held_out) == 100 * 100
    assert not set(train) & set(held_out)
    assert 0.15 < len(held_out) / 10_000 < 0.25
    assert task.split(2) == (train, held_out)
    # a problem keeps its side when the range grows
    assert {p for p in task.split(1)[1]} == {p for p in held_out if p.a < 10 and p.b < 10}


def test_the_solver_is_right_and_the_verifier_accepts_it(rng):
    for _ in range(200):
        a, b = (int(x) for x in rng.integers(0, 10**4, size=2))
        p = task.Problem(a, b)
        assert p.prompt == f"{a}+{b}=" and int(p.answer) == a + b
        assert task.reward(p, p.answer) == 1.0
        assert task.reward(p, f" {p.answer} ") == 1.0


def test_the_verifier_rejects_everything_else(rng):
    for _ in range(200):
        a, b = (int(x) for x in rng.integers(0, 10**4, size=2))
        p = task.Problem(a, b)
        wrong = a + b + int(rng.choice([-1, 1]) * rng.integers(1, 1000))
        for text in [str(wrong), "", p.answer + "0", p.answer + " and more", "0" + p.answer,
                     p.answer[:-1], f"{p.answer}.", f"-{p.answer}", f"{p.prompt}{p.answer}"]:
            assert task.reward(p, text) == 0.0, text


def test_demonstrations_end_with_eos():
    encode = lambda text: [ord(c) for c in text]
    p = task.Problem(57, 68)
    assert task.prompt_ids(p, encode) == [ord(c) for c in "57+68="]
    assert task.demonstration_ids(p, encode, eos_id=-7) == [ord("1"), ord("2"), ord("5"), -7]


def test_with_the_demo_tokenizer_every_digit_is_a_token(rng):
    tandem = pytest.importorskip("tandem", reason="the tandem module is not built")
    engine = tandem.Engine(str(DEMO), n_threads=1, pin_threads=False)
    for _ in range(20):
        p = task.Problem(*(int(x) for x in rng.integers(0, 1000, size=2)))
        ids = task.prompt_ids(p, engine.tokenize)
        assert len(ids) == len(p.prompt)
        demo = task.demonstration_ids(p, engine.tokenize, engine.eos_token_ids[0])
        assert len(demo) == len(p.answer) + 1
        assert engine.detokenize(demo) == p.answer


def test_reversals_split_and_verify(rng):
    train, held_out = task.split(3, "reverse")
    assert len(train) + len(held_out) == 1000 and not set(train) & set(held_out)
    assert 0.12 < len(held_out) / 1000 < 0.28
    for _ in range(100):
        digits = "".join(str(d) for d in rng.integers(0, 10, size=int(rng.integers(1, 8))))
        p = task.Reversal(digits)
        assert p.prompt == f"reverse {digits} =" and p.answer == digits[::-1]
        assert task.reward(p, p.answer) == 1.0
        # leading zeros are part of the answer
        assert task.reward(p, p.answer.lstrip("0") or "x") == (1.0 if p.answer[0] != "0" else 0)
        if digits != digits[::-1]:
            assert task.reward(p, digits) == 0.0
