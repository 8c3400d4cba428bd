"""Position-wise feed-forward networks."""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.errors import ConfigError, unknown
from anyformer.nn.ranges import MAX_WIDTH, Count, Dropout, PositiveFloat
from anyformer.registry import register

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    # GELU's tanh approximation (Hendrycks & Gimpel 2016): GPT-2's "gelu_new".
    "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
    "relu": F.relu,
    "relu2": lambda t: F.relu(t).square(),  # Primer (So et al. 2021)
    "silu": F.silu,
}
# The choices as a type: the option schema checks them and `anyformer show` lists them.
Activation = Literal[tuple(ACTIVATIONS)]


def get_activation(name: str, owner: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise unknown(f"activation of ffn {owner!r}", name, ACTIVATIONS)
    return ACTIVATIONS[name]


def scaled_width(dim: int, scale: float, owner: str, option: str) -> int:
    """round(dim * scale) as a layer width, >= 1 and addressable, else a ConfigError naming
    `option` of `owner` (e.g. "ffn 'mlp'", 'ratio')."""
    size = int(round(dim * scale))
    if size < 1:
        raise ConfigError(f"{owner}: {option} x dim must be >= 1 (got {scale} x {dim}); raise {option}")
    if size > MAX_WIDTH:
        raise ConfigError(f"{owner}: {option} x dim = {size:.3g} is wider than any tensor can be; lower {option}")
    return size


def hidden_size(dim: int, ratio: float, hidden: int | None, owner: str) -> int:
    if hidden is not None:
        return hidden
    return scaled_width(dim, ratio, f"ffn {owner!r}", "ratio")


def keep_index(keep: list[int], size: int, owner: str, device: torch.device) -> torch.Tensor:
    """Sorted unique hidden units `keep` as an index tensor, or a ConfigError when they are
    not 1..size of units 0..size-1 (a pruned layer keeps at least one)."""
    chosen = sorted(set(int(i) for i in keep))
    if not chosen or not all(0 <= i < size for i in chosen):
        raise ConfigError(f"ffn {owner!r}: keep must name 1..{size} of hidden units 0..{size - 1}, "
                          f"got {len(chosen)} in {min(chosen, default=0)}..{max(chosen, default=0)}")
    return torch.tensor(chosen, device=device)


def select_linear(linear: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    """A new nn.Linear of `linear`'s weight rows `rows` (outputs) and columns `cols` (inputs),
    its bias at `rows`: the smaller layer a pruned one becomes."""
    weight = linear.weight.detach()
    weight = weight[rows] if rows is not None else weight
    weight = weight[:, cols] if cols is not None else weight
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None:
            new.bias.copy_(linear.bias.detach()[rows] if rows is not None else linear.bias.detach())
    return new.train(linear.training)


@register("ffn", "mlp")
class MLP(nn.Module):
    """Two-layer MLP dim -> ratio*dim -> dim (Vaswani et al. 2017). x: [..., D] -> [..., D]."""

    paper = "Attention Is All You Need (Vaswani et al. 2017)"

    def __init__(self, dim: int, ratio: PositiveFloat = 4.0, hidden: Count | None = None,
                 activation: Activation = "gelu", bias: bool = True, dropout: Dropout = 0.0) -> None:
        super().__init__()
        self.act = get_activation(activation, "mlp")
        h = hidden_size(dim, ratio, hidden, "mlp")
        self.fc1 = nn.Linear(dim, h, bias=bias)
        self.fc2 = nn.Linear(h, dim, bias=bias)
        self.drop = nn.Dropout(dropout)

    def input_linears(self) -> list[nn.Linear]:
        """fc1 alone reads the input x, so an input affine map (a folded BatchNorm) moves into it."""
        return [self.fc1]

    def hidden_linears(self) -> tuple[list[nn.Linear], nn.Linear]:
        """(the linears whose output rows are the hidden units, the one whose input columns
        read them): a unit's weights, and where masking its activation removes it."""
        return [self.fc1], self.fc2

    def prune_hidden(self, keep: list[int]) -> None:
        """Keep hidden units `keep` only (fc1 rows, fc2 columns): exact, since each unit
        reaches the output through its fc2 column alone."""
        idx = keep_index(keep, self.fc1.out_features, "mlp", self.fc1.weight.device)
        self.fc1, self.fc2 = select_linear(self.fc1, rows=idx), select_linear(self.fc2, cols=idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))
