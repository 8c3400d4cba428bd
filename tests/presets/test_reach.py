"""Every preset reads its whole input: each input token reaches the first and the last token
of the last layer (the [CLS] token or any pooled token; the last position of a causal
model), each on its own: a pooled head would otherwise see every token through itself.
A model of token-wise mixers reads its input only through its pooled head, so there the
model's output is checked. A mixer whose
groups or windows never exchange information fails this (SReT's sliced attention without
its permuted passes: 12 of 16 patches never reached the [CLS] logits)."""
import pytest
import torch

import anyformer as af
from anyformer import registry

SIZE = dict(dim=32, heads=4)


def input_reach(model: torch.nn.Module, inputs: torch.Tensor, position: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(reached, real): Bool [L] per input token (the encoder's output, batch row 0): True
    where the last layer's token at `position` (None: the model's output) depends on it;
    `real` marks unpadded ones."""
    seen = {}

    def keep(_module, _args, out):
        tokens, mask = out
        tokens.retain_grad()
        seen["tokens"], seen["mask"] = tokens, mask
        return tokens, mask

    handle = model.encoder.register_forward_hook(keep)
    try:
        out, hidden = model(inputs, return_hidden=True)
    finally:
        handle.remove()
    read = out if position is None else hidden[-1][:, position]
    torch.manual_seed(0)
    (read * torch.randn_like(read)).sum().backward()
    grad = seen["tokens"].grad[0].norm(dim=-1)
    mask = seen["mask"]
    real = torch.ones_like(grad, dtype=torch.bool) if mask is None else mask[0]
    return grad > 1e-9 * grad.max(), real


@pytest.mark.parametrize("preset", af.list_presets())
def test_every_input_token_reaches_the_output(preset):
    torch.manual_seed(0)
    model = af.create(preset, **SIZE).double().eval()
    inputs = model.encoder.example_input(batch=2)
    if isinstance(inputs, dict):
        inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    elif inputs.is_floating_point():
        inputs = inputs.double()
    # Token-wise mixers (Activator) leave each token alone: only the pooled head reads them all;
    # so for an arch declaring its tokens do not each see the whole input (reaches_every_token).
    mixing = registry.get("mixer", model.config.mixer.name).mixes_tokens and getattr(model, "reaches_every_token", True)
    for position in [None] if not mixing else [-1] if model.config.causal else [0, -1]:
        reached, real = input_reach(model, inputs, position)
        missing = (~reached & real).nonzero().flatten().tolist()
        assert not missing, f"preset {preset!r}: input tokens {missing} of {int(real.sum())} never reach output token {position}"
