"""The memory one step of a built model takes beyond what it already holds: activations
(what backward keeps, or a forward's peak without grad), gradients and AdamW's moments,
and parameters still to move to the device; and the guard that refuses a batch or length
that cannot fit, with a one-line ConfigError, before the step allocates anything.

Activations: per layer `TOKEN_ACTIVATIONS` [batch, tokens, dim] tensors, plus what the
layer's mixer declares it keeps besides (`activation_elements`, e.g. explicit attention
weights), plus the encoder's and the head's outputs. Within 0.3x-2.3x of the measured
training-step peak of every preset; the guard refuses only past the memory free.

    check_run(model, batch=64, device=dev, optimizer=True, subject="train.batch_size=64",
              fix="lower train.batch_size or raise train.grad_accum")
"""
from __future__ import annotations

import torch
from torch import nn

from anyformer import runtime
from anyformer.config import ModelConfig
from anyformer.errors import ConfigError
from anyformer.nn.footprint import ADAMW_MOMENTS, human_bytes, measure, tensor_bytes, where

# [B, L, D] tensors a pre-norm attention + MLP(ratio 4) layer keeps for backward: two norm
# outputs, q, k, v, the attention output, two residual sums, the MLP's hidden before and
# after its activation (2 x 4). The presets' measured peaks are 10-85 B*L*D per layer.
TOKEN_ACTIVATIONS = 16
# fp32 activations (bf16 autocast halves some: within the estimate's factor).
ACTIVATION_BYTES = 4


def _layer_mixer(block: nn.Module) -> nn.Module | None:
    part = getattr(block, "part", None)
    try:
        return part("mixer") if callable(part) else None
    except (ConfigError, KeyError, AttributeError):
        return None


def activation_bytes(model: nn.Module, batch: int, tokens: int | None = None, training: bool = True) -> int:
    """Activation memory of one step on `batch` samples of `tokens` tokens (default: the
    most the encoder emits): what backward keeps when `training`, else the peak of a
    forward without grad (every layer's output is kept, one layer's intermediates at a
    time). 0 for a model without the encoder -> stack -> head parts this reads."""
    encoder, stack, config = (getattr(model, k, None) for k in ("encoder", "stack", "config"))
    if encoder is None or stack is None or not isinstance(config, ModelConfig):
        return 0
    full = max(1, int(getattr(encoder, "num_tokens", 1)))
    seen = min(full, tokens) if tokens else full
    # A channel-independent encoder (PatchTST) runs every channel as a sample of its own.
    seqs = batch * (int(getattr(encoder, "channels", 1)) if getattr(encoder, "channel_independent", False) else 1)
    token_elems = seqs * seen * config.dim
    layers = [i for i in range(stack.depth) if i not in stack.dropped]
    mixer_elems = []
    for i in layers:
        # Archs that cut tokens into groups (FIT, NesT) run seen / length sequences per sample.
        length = max(1, min(seen, round(stack.lengths[i] * seen / full)))
        mixer = _layer_mixer(stack.block_at(i))
        declared = getattr(mixer, "activation_elements", None)
        mixer_elems.append(int(declared(seqs * max(1, seen // length), length)) if callable(declared) else 0)
    head = getattr(model, "head", None)
    head_width = sum(p.numel() for p in head.parameters()) // config.dim if isinstance(head, nn.Module) else 0
    if training:
        # + the encoder's output and the head's output and its gradient
        elems = token_elems * (len(layers) * TOKEN_ACTIVATIONS + 2) + sum(mixer_elems) + 2 * seqs * seen * head_width
    else:
        elems = token_elems * (len(layers) + TOKEN_ACTIVATIONS) + max(mixer_elems, default=0) + seqs * seen * head_width
    return elems * ACTIVATION_BYTES


def run_needs(model: nn.Module, batch: int, device: str | torch.device, *, tokens: int | None = None,
              training: bool = True, optimizer: bool = False) -> dict[str, int]:
    """Bytes a run still has to allocate on `device`: 'model' (parameters and buffers not
    yet there), 'state' (gradients when `training`, plus AdamW's moments with `optimizer`)
    and 'activations' (see `activation_bytes`)."""
    dev = torch.device(device)
    fp = measure(model)
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    elsewhere = sum(tensor_bytes(t) for t in tensors.values() if t.device.type != dev.type)
    state = fp.trainable_bytes * ((1 + ADAMW_MOMENTS) if optimizer else 1) if training else 0
    return {"model": elsewhere, "state": state, "activations": activation_bytes(model, batch, tokens, training)}


def check_run(model: nn.Module, batch: int, device: str | torch.device, *, subject: str, fix: str,
              tokens: int | None = None, training: bool = True, optimizer: bool = False) -> None:
    """Refuse (ConfigError) a run whose estimate (`run_needs`) exceeds the memory free on
    `device`. `subject` names the batch setting ('train.batch_size=64') and `fix` how to
    lower it; when parameters and optimizer state dominate, the model's size is named."""
    dev = torch.device(device)
    needs = run_needs(model, batch, dev, tokens=tokens, training=training, optimizer=optimizer)
    total, free = sum(needs.values()), runtime.available_memory(dev)
    if total <= free:
        return
    config = getattr(model, "config", None)
    shown = tokens or getattr(getattr(model, "encoder", None), "num_tokens", None)
    stack = getattr(model, "stack", None)
    through = f" through {stack.depth} layers" if stack is not None else ""
    labels = {"activations": (f"activations of {batch} x {shown} tokens" if shown else f"activations of {batch} samples") + through,
              "state": "gradients and AdamW moments" if optimizer else "gradients",
              "model": f"parameters and buffers to move to {dev.type}"}
    parts = ", ".join(f"{labels[k]} ~{human_bytes(v)}" for k, v in needs.items() if v)
    if isinstance(config, ModelConfig):
        if needs["activations"] < needs["model"] + needs["state"]:
            subject, fix = f"model (dim={config.dim}, depth={config.depth})", "lower model.dim or model.depth"
        else:  # activations grow with the model's width and depth as much as with the batch
            fix = f"{fix}, or shrink the model (model.dim={config.dim}, model.depth={config.depth})"
    what = "training" if training else "a forward pass"
    raise ConfigError(f"{subject}: {what} needs ~{human_bytes(total)} ({parts}), {where(dev)} {human_bytes(free)} free; {fix}")
