"""The trainer's side of the loop, in PyTorch: the policy as transformers' model class of the
same checkpoint, the token logprobs of a padded batch, the loss of algorithms.py's token
weights, and the policy's weights handed to Tandem under the checkpoint's names.

transformers 5 may hold a MoE layer's experts fused ([n_experts, ...] parameters) where the
checkpoint, and so Tandem, names each expert's matrices: engine_weights() slices them per expert
(contiguous views, no copy) after one clone of the parameters, so that the optimizer's next
in-place update cannot change what Tandem is reading.
"""

import re

import torch


def load_policy(model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.output_router_logits = False
    return model


def token_logprobs(model, input_ids):
    """[B, T] ids -> [B, T] logprob of token t given tokens < t (column 0 is 0). Padding is on
    the right, so causal attention needs no mask for the tokens that count."""
    logits = model(input_ids=input_ids).logits.float()
    logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
    picked = logprobs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return torch.nn.functional.pad(picked, (1, 0))


def surrogate_loss(logprobs, weights):
    """algorithms.surrogate_loss on-policy: -sum w_t * exp(logp_t - stop_grad(logp_t)), whose
    value is -sum w_t and whose gradient is -sum w_t * grad logp_t."""
    return -(weights * torch.exp(logprobs - logprobs.detach())).sum()


# transformers 5's fused experts -> the checkpoint's per-expert matrices.
FUSED = re.compile(r"(model\.layers\.\d+\.mlp\.experts)\.(gate_up_proj|down_proj)$")


def engine_weights(model):
    """{checkpoint name: CPU tensor} of the policy's current weights, for Engine.load_weights:
    one copy of every parameter, then views of it (per expert where transformers fuses them)."""
    state = {name: t.detach().clone().contiguous() for name, t in model.state_dict().items()}
    out = {}
    for name, t in state.items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue  # the checkpoint has only the embeddings
        m = FUSED.match(name)
        if not m:
            out[name] = t
            continue
        prefix, kind = m.groups()
        for e in range(t.shape[0]):
            if kind == "down_proj":
                out[f"{prefix}.{e}.down_proj.weight"] = t[e]
            else:
                gate, up = t[e].chunk(2, dim=0)
                out[f"{prefix}.{e}.gate_proj.weight"] = gate
                out[f"{prefix}.{e}.up_proj.weight"] = up
    return out


def sequence_logprobs(model, ids, replay=None):
    """logprob of ids[t] given ids[:t] for t >= 1, one sequence ([T] list of ints) -> [T - 1].
    replay: Tandem's routed experts ([positions >= T - 1, n_moe_layers, top_k], its
    RoutedExperts.experts) that every MoE layer then uses instead of choosing its own; their
    weights still come from the trainer's router (renormalised over the replayed experts), so
    that the router keeps its gradient, as routing replay in RL trainers does."""
    x = torch.tensor([ids[:-1]])
    with torch.no_grad(), _replayed_routing(model, replay, len(ids) - 1):
        logits = model(input_ids=x).logits.float()[0]
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]


class _replayed_routing:
    def __init__(self, model, experts, positions):
        self.model, self.experts, self.positions, self.saved = model, experts, positions, []

    def __enter__(self):
        if self.experts is None:
            return self
        routers = [layer.mlp.gate for layer in self.model.model.layers]
        for i, router in enumerate(routers):
            chosen = torch.from_numpy(self.experts[:self.positions, i, :]).long()
            self.saved.append(router)
            router.forward = self._replay(router, router.forward, chosen)
        return self

    @staticmethod
    def _replay(router, forward, chosen):
        def replayed(hidden_states):
            logits, _, own = forward(hidden_states)
            # positions where the trainer's own top-k differs from the replayed experts
            flips = (own.sort(-1).values != chosen.sort(-1).values).any(-1)
            router.replay_flips = getattr(router, "replay_flips", 0) + int(flips.sum())
            weights = torch.softmax(logits.float(), -1).gather(-1, chosen)
            if router.norm_topk_prob:
                weights = weights / weights.sum(-1, keepdim=True)
            return logits, weights.to(logits.dtype), chosen
        return replayed

    def __exit__(self, *exc):
        for router in self.saved:
            del router.forward  # the class's forward again
