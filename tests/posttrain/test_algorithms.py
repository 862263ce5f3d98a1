"""SFT, GRPO and HPT's switch as token weights: advantages, the switch, batches and masks."""

import numpy as np
import pytest

import algorithms as alg


def test_group_advantages_subtract_the_group_mean(rng):
    rewards = rng.integers(0, 2, size=(16, 8)).astype(float)
    a = alg.group_advantages(rewards)
    np.testing.assert_allclose(a, rewards - rewards.mean(axis=1, keepdims=True))
    np.testing.assert_allclose(a.sum(axis=1), 0, atol=1e-12)
    # an all-equal group teaches nothing
    assert (alg.group_advantages(np.ones((3, 8))) == 0).all()


def test_group_advantages_with_std_and_groups_of_one(rng):
    rewards = rng.normal(size=(5, 8))
    want = (rewards - rewards.mean(1, keepdims=True)) / (rewards.std(1, ddof=1, keepdims=True)
                                                          + 1e-6)
    np.testing.assert_allclose(alg.group_advantages(rewards, use_std=True), want)
    single = rng.normal(size=(4, 1))
    np.testing.assert_array_equal(alg.group_advantages(single), single)
    with pytest.raises(ValueError, match="n_prompts, n"):
        alg.group_advantages([1.0, 0.0])


@pytest.mark.parametrize("gamma, demo_up_to", [(0, 0), (2, 2), (-1, -1)])
def test_the_switch(gamma, demo_up_to):
    for n_correct in range(9):
        assert alg.hpt_uses_demonstration(n_correct, gamma) == (n_correct <= demo_up_to)


def random_round(rng, n_prompts=12, n=8, max_response=10):
    prompts = [rng.integers(0, 100, size=int(rng.integers(2, 6))).tolist()
               for _ in range(n_prompts)]
    demos = [rng.integers(0, 100, size=int(rng.integers(1, 5))).tolist() for _ in prompts]
    rollouts = [[rng.integers(0, 100, size=int(rng.integers(1, max_response + 1))).tolist()
                 for _ in range(n)] for _ in prompts]
    # correct counts spread over 0..n so that both sides of the switch occur
    rewards = np.array([rng.permutation([1.0] * k + [0.0] * (n - k))
                        for k in rng.integers(0, n + 1, size=n_prompts)])
    return prompts, demos, rollouts, rewards


@pytest.mark.parametrize("gamma", [0, 2])
def test_hpt_batches_follow_the_switch_per_prompt(rng, gamma):
    prompts, demos, rollouts, rewards = random_round(rng)
    batch = alg.build_batch("hpt", prompts, demos, rollouts, rewards, max_response_tokens=10,
                            gamma=gamma, sft_coef=0.7)
    correct = rewards.sum(axis=1)
    assert batch.n_sft_prompts == int((correct <= gamma).sum())
    assert batch.n_rl_prompts == len(prompts) - batch.n_sft_prompts
    demo_seqs = [s for s in batch.sequences if s.kind == "demonstration"]
    assert [s.response for s in demo_seqs] == [d for d, c in zip(demos, correct) if c <= gamma]
    # the demonstrations' weights make the mean token NLL, times sft_coef
    if demo_seqs:
        total = sum(s.weight * len(s.response) for s in demo_seqs)
        assert total == pytest.approx(0.7)
    advantages = alg.group_advantages(rewards)
    n_rollouts = 8 * batch.n_rl_prompts  # the RL term is a mean over these
    want = [(prompts[i], r, advantages[i][j] / (10 * n_rollouts))
            for i in range(len(prompts)) if correct[i] > gamma
            for j, r in enumerate(rollouts[i]) if advantages[i][j] != 0]
    got = [(s.prompt, s.response, s.weight) for s in batch.sequences if s.kind == "rollout"]
    assert len(got) == len(want)
    for (gp, gr, gw), (wp, wr, ww) in zip(got, want):
        assert gp == wp and gr == wr and gw == pytest.approx(ww)


def test_sft_and_grpo_are_the_two_ends(rng):
    prompts, demos, rollouts, rewards = random_round(rng)
    sft = alg.build_batch("sft", prompts, demos, rollouts, rewards, max_response_tokens=10)
    assert [s.kind for s in sft.sequences] == ["demonstration"] * len(prompts)
    grpo = alg.build_batch("grpo", prompts, demos, rollouts, rewards, max_response_tokens=10)
    assert {s.kind for s in grpo.sequences} <= {"rollout"}
    assert grpo.n_rl_prompts == len(prompts)
    # HPT with gamma = -1 never switches to demonstrations: it is GRPO
    hpt = alg.build_batch("hpt", prompts, demos, rollouts, rewards, max_response_tokens=10,
                          gamma=-1)
    assert [(s.response, s.weight) for s in hpt.sequences] == \
        [(s.response, s.weight) for s in grpo.sequences]
    with pytest.raises(ValueError, match="method"):
        alg.build_batch("ppo", prompts, demos, rollouts, rewards, max_response_tokens=10)
    with pytest.raises(ValueError, match="max_response_tokens=3"):
        alg.build_batch("grpo", prompts, demos, rollouts, rewards, max_response_tokens=3)


def test_padding_and_loss_masks(rng):
    prompts, demos, rollouts, rewards = random_round(rng)
    batch = alg.build_batch("hpt", prompts, demos, rollouts, rewards, max_response_tokens=10,
                            gamma=2)
    ids, weights, mask = alg.pad(batch, pad_id=-1)
    assert ids.shape == weights.shape == mask.shape
    assert ids.shape[1] == max(len(s.prompt) + len(s.response) for s in batch.sequences)
    for b, s in enumerate(batch.sequences):
        p, r = len(s.prompt), len(s.response)
        assert ids[b, :p].tolist() == s.prompt and ids[b, p:p + r].tolist() == s.response
        assert (ids[b, p + r:] == -1).all()
        assert mask[b].tolist() == [0] * p + [1] * r + [0] * (ids.shape[1] - p - r)
        np.testing.assert_allclose(weights[b], mask[b] * s.weight, rtol=1e-6)


def test_the_surrogate_gradient_is_the_weighted_score(rng):
    logprobs = -rng.exponential(size=(4, 7))
    old = logprobs + rng.normal(0, 0.1, size=logprobs.shape)
    weights = rng.normal(size=logprobs.shape)
    loss, grad = alg.surrogate_loss(logprobs, old, weights)
    # finite differences of the loss
    h = 1e-6
    for b, t in [(0, 0), (3, 6), (1, 4)]:
        bumped = logprobs.copy()
        bumped[b, t] += h
        numeric = (alg.surrogate_loss(bumped, old, weights)[0] - loss) / h
        assert numeric == pytest.approx(grad[b, t], rel=1e-4, abs=1e-6)
    # on-policy (old = logprobs): the gradient is -w, the unified estimator's weights
    _, on_policy = alg.surrogate_loss(logprobs, logprobs, weights)
    np.testing.assert_allclose(on_policy, -weights)
