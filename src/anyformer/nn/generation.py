"""Autoregressive generation from a causal language model, with each mixer's decode cache.

Incremental decoding ("Transformers are RNNs", Katharopoulos et al. 2020, section 3.4; the
key/value cache of softmax attention): the prompt runs once, filling every mixer's cache,
then each step feeds only the newest token. A model with a mixer that declares no
incremental form (`supports_decoding` False) recomputes the whole sequence every step, the
same tokens at a higher cost, and says so once."""
from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from anyformer.errors import ConfigError, ShapeError
from anyformer.nn.decoding import cannot_decode, decoding


class RecomputeWarning(UserWarning):
    """Generation runs without caches: some mixer cannot decode incrementally."""


def check_generator(model: nn.Module, prompt_ids: torch.Tensor, max_new_tokens: int) -> None:
    """One-line errors for a model that cannot generate, or a prompt it cannot continue."""
    config = model.config
    if not config.causal:
        raise ConfigError("generation needs a causal model (model.causal: true, as in the gpt preset): "
                          "a bidirectional model reads tokens that do not exist yet")
    if getattr(model.head, "problem", None) != "lm":
        raise ConfigError(f"generation needs a language-model head (head 'lm'), not head {config.head.name!r}")
    if getattr(model.encoder, "modality", None) != "tokens" or getattr(model.encoder, "cls", None) is not None:
        raise ConfigError("generation needs token ids in (encoder 'tokens' without cls_token)")
    if prompt_ids.dim() != 2 or prompt_ids.is_floating_point() or prompt_ids.shape[1] < 1:
        raise ShapeError(f"prompt ids must be integer [batch, length >= 1], got {prompt_ids.dtype} {list(prompt_ids.shape)}")
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be >= 0, got {max_new_tokens}")


def sample(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
           generator: torch.Generator | None) -> torch.Tensor:
    """Next ids [B] from last-position logits [B, V]: greedy at temperature 0, else a draw
    from softmax(logits / temperature) restricted to the top_k ids and to the smallest set
    whose probability reaches top_p (nucleus sampling, Holtzman et al. 2020)."""
    if temperature < 0 or (top_k is not None and top_k < 1) or (top_p is not None and not 0.0 < top_p <= 1.0):
        raise ConfigError(f"sampling needs temperature >= 0, top_k >= 1 and 0 < top_p <= 1 (got {temperature}, {top_k}, {top_p})")
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        before = ordered.softmax(-1).cumsum(-1) - ordered.softmax(-1)
        drop = before >= top_p  # mass before an id already reaches top_p: the id is outside the nucleus
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def generate(model: nn.Module, prompt_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
             cache: bool = True) -> torch.Tensor:
    """prompt_ids [B, L] -> [B, L + max_new_tokens]. The model reads at most max_len tokens:
    when the context would pass that, it slides, and the model reads the last max_len // 2
    tokens afresh (a longer prompt is read from its last max_len // 2 tokens). `cache` False
    recomputes every step over the same contexts (the reference the cached path is tested
    against)."""
    check_generator(model, prompt_ids, max_new_tokens)
    device = next(model.parameters()).device
    ids = prompt_ids.to(device)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    blocking = cannot_decode(model)
    if cache and blocking:
        warnings.warn(f"{', '.join(blocking)} cannot decode incrementally: generating by recomputing the whole "
                      "sequence at every token", RecomputeWarning, stacklevel=3)
    limit, start = model.config.max_len, 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), contextlib.ExitStack() as stack:
            state = None
            for _ in range(max_new_tokens):
                slide = ids.shape[1] - start > limit
                if slide:
                    start = ids.shape[1] - max(limit // 2, 1)
                if not cache or blocking:
                    logits = model(ids[:, start:])[:, -1]
                else:
                    if state is None or slide:  # (re)fill the caches from the context
                        stack.close()
                        state = stack.enter_context(decoding(model, last_only=True))
                        step = ids[:, start:]
                    logits = model(step)[:, -1]
                    state.advance(step.shape[1])
                step = sample(logits, temperature, top_k, top_p, generator)[:, None]
                ids = torch.cat([ids, step], 1)
            return ids
    finally:
        model.train(was_training)
