"""The post-training objectives as token weights, in numpy: SFT, GRPO and HPT's switch.

HPT ("Towards a Unified View of LLM Post-Training", arXiv 2509.04419) writes SFT and the policy
gradients as one estimator, sum over tokens of  w_t * grad pi_theta(y_t) / pi_ref(y_t).  Here
every method is reduced to the weight w_t of each token of each training sequence; the trainer
(train.py) then minimises  -sum_t w_t * exp(logp_t - stop_grad(logp_t))  in one optimizer step
per batch (on-policy: pi_ref = pi_theta), whose gradient is  -sum_t w_t * grad logp_t.
  - SFT on demonstrations: w_t = sft_coef / (demonstration tokens in the batch), the mean token
    NLL (HPT's mix_actor with offline_loss_type="sft").
  - GRPO on rollouts: w_t = A_i / (max_response_tokens * rollouts) with A_i = r_i - mean of
    its group, no std (algorithm.grpo_use_std=False), the token sum over the padded response
    length (loss_remove_token_mean=True) and no clip (loss_remove_clip=True), averaged over the
    rollouts of the batch's RL prompts as Dr. GRPO does. (HPT's code sums over each
    micro-batch instead, which makes the scale depend on the micro-batch size; averaging keeps
    the RL term on the SFT term's scale whatever the batch.)
  - HPT: per prompt, n rollouts; at most gamma correct -> the prompt contributes its
    demonstration (SFT) and none of its rollouts, else its rollouts (GRPO) and no demonstration
    (mix_trainer.select_on_off_ada_balance, unify_strategy="switch").
"""

from dataclasses import dataclass, field

import numpy as np

METHODS = ("sft", "grpo", "hpt")


def group_advantages(rewards, use_std=False, eps=1e-6):
    """rewards [n_prompts, n] -> advantages [n_prompts, n]: each minus its group's mean, and
    divided by the group's std (unbiased, as torch.std) + eps when use_std. A group of one has
    mean 0 and std 1, as in veRL's GRPO."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"rewards: expected [n_prompts, n], found shape {r.shape}")
    if r.shape[1] == 1:
        return r.copy()
    a = r - r.mean(axis=1, keepdims=True)
    if use_std:
        a = a / (r.std(axis=1, ddof=1, keepdims=True) + eps)
    return a


def hpt_uses_demonstration(n_correct, gamma):
    """HPT's switch for one prompt: True (train on the demonstration) when at most gamma of its
    rollouts are correct, False (train on the rollouts)."""
    return n_correct <= gamma


@dataclass
class Sequence:
    """One training sequence: prompt then response token ids, and each response token's
    weight in the loss (the prompt's tokens have none)."""
    prompt: list
    response: list
    weight: float  # the same for every response token
    kind: str  # "demonstration" or "rollout"


@dataclass
class Batch:
    sequences: list = field(default_factory=list)
    n_sft_prompts: int = 0  # prompts that contributed their demonstration
    n_rl_prompts: int = 0  # prompts that contributed their rollouts


def build_batch(method, prompts, demonstrations, rollouts, rewards, max_response_tokens,
                gamma=0, sft_coef=1.0):
    """The sequences of one optimizer step.

    prompts [P] and demonstrations [P]: token id lists; rollouts [P][n]: response token id
    lists (Tandem's samples); rewards [P, n]: the verifier's. method: "sft" (demonstrations
    only), "grpo" (rollouts only) or "hpt" (the switch with gamma). Rollouts whose advantage
    is zero carry no gradient and are left out."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, found {method!r}")
    rewards = np.asarray(rewards, dtype=np.float64)
    if method == "sft":
        use_demo = [True] * len(prompts)
    elif method == "grpo":
        use_demo = [False] * len(prompts)
    else:
        use_demo = [hpt_uses_demonstration(int((r > 0).sum()), gamma) for r in rewards]
    advantages = group_advantages(rewards) if len(prompts) else rewards
    demo_tokens = sum(len(demonstrations[i]) for i, d in enumerate(use_demo) if d)
    n_rollouts = sum(len(rollouts[i]) for i, d in enumerate(use_demo) if not d)
    batch = Batch()
    for i, prompt in enumerate(prompts):
        if use_demo[i]:
            batch.n_sft_prompts += 1
            batch.sequences.append(Sequence(list(prompt), list(demonstrations[i]),
                                            sft_coef / demo_tokens, "demonstration"))
            continue
        batch.n_rl_prompts += 1
        for response, a in zip(rollouts[i], advantages[i]):
            if len(response) > max_response_tokens:
                raise ValueError(f"a rollout of {len(response)} tokens is longer than "
                                 f"max_response_tokens={max_response_tokens}")
            if a != 0:
                weight = float(a) / (max_response_tokens * n_rollouts)
                batch.sequences.append(Sequence(list(prompt), list(response), weight, "rollout"))
    return batch


def pad(batch, pad_id):
    """(input_ids [B, T], weights [B, T], loss_mask [B, T]), right-padded with pad_id.
    loss_mask[b, t] is 1 where token t is a response token (predicted from the logits at t-1);
    weights[b, t] is its weight w_t (0 elsewhere)."""
    width = max((len(s.prompt) + len(s.response) for s in batch.sequences), default=0)
    n = len(batch.sequences)
    ids = np.full((n, width), pad_id, dtype=np.int64)
    weights = np.zeros((n, width), dtype=np.float32)
    mask = np.zeros((n, width), dtype=np.float32)
    for b, s in enumerate(batch.sequences):
        p, r = len(s.prompt), len(s.response)
        ids[b, :p + r] = s.prompt + s.response
        mask[b, p:p + r] = 1
        weights[b, p:p + r] = s.weight
    return ids, weights, mask


def surrogate_loss(logprobs, old_logprobs, weights):
    """-sum w_t * exp(logp_t - old_t) and its gradient with respect to logprobs (numpy; the
    trainer computes the same with torch and old = logp detached, where it is -sum w_t)."""
    ratio = np.exp(np.asarray(logprobs) - np.asarray(old_logprobs))
    return float(-(weights * ratio).sum()), -weights * ratio
