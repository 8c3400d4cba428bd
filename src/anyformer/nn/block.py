"""One layer: a token mixer and a channel mixer, wired by norm placement and layout.

placement: `pre` x + f(norm(x)); `post` norm(x + f(x)); `peri` x + norm_out(f(norm_in(x)))
(Peri-LN, Kim et al. 2025). layout: `sequential` mixer then ffn; `parallel` both read the
same input and their outputs add (GPT-J); `macaron` half-step ffn, mixer, half-step ffn
(Lu et al. 2019).

Per-path options: `path_scale` adds EnsembleScale, a learned scalar on each residual branch
("Revisiting Vision Transformer from the View of Path Ensemble", Chang et al. 2023);
`forward(..., drop_path=p)` drops each branch per sample with rate p in training
(stochastic depth, Huang et al. 2016, as in DeiT); `skip` prunes branches by name."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from anyformer.errors import unknown

PLACEMENTS = ("pre", "post", "peri")
LAYOUTS = ("sequential", "parallel", "macaron")


class Sublayer(nn.Module):
    """A residual branch f with its norms; `scale` weights its output (0.5 in Macaron).
    placement 'bare' has no norms (the block normalises around it)."""

    def __init__(self, fn: nn.Module, make_norm: Callable[[], nn.Module], placement: str,
                 dropout: float = 0.0, scale: float = 1.0, path_scale: bool = False) -> None:
        super().__init__()
        self.fn, self.placement, self.scale = fn, placement, scale
        # An absent branch (ffn 'none') is skipped outright: no norms, the input passes through.
        self.absent = bool(getattr(fn, "absent", False))
        self.path_scale = nn.Parameter(torch.ones(())) if path_scale and not self.absent else None
        self.norm_in = make_norm() if placement in ("pre", "peri") and not self.absent else None
        self.norm_out = make_norm() if placement in ("post", "peri") and not self.absent else None
        self.drop = nn.Dropout(dropout)
        self.takes_mask = getattr(fn, "registry_kind", None) == "mixer"

    def branch(self, x: torch.Tensor, mask: torch.Tensor | None, drop_path: float = 0.0) -> torch.Tensor:
        """The residual increment f(...) before a post-norm (pre and peri are complete)."""
        if self.absent:
            return torch.zeros_like(x)
        h = self.norm_in(x, mask) if self.norm_in is not None else x
        h = self.fn(h, mask) if self.takes_mask else self.fn(h)
        if self.placement == "peri":
            h = self.norm_out(h, mask)
        h = self.drop(h)
        if self.scale != 1.0:  # skip a full-size multiply on every ordinary branch
            h = self.scale * h
        if self.path_scale is not None:
            h = self.path_scale.to(h.dtype) * h
        if drop_path > 0.0 and self.training:
            keep = torch.rand(h.shape[0], *([1] * (h.dim() - 1)), device=h.device) >= drop_path
            h = h * keep.to(h.dtype) / (1.0 - drop_path)
        return h

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, drop_path: float = 0.0,
                skip: bool = False) -> torch.Tensor:
        if self.absent:
            return x
        out = x if skip else x + self.branch(x, mask, drop_path)
        if self.placement == "post":
            out = self.norm_out(out, mask)
        return out


class Block(nn.Module):
    """mixer + ffn (+ a second ffn for macaron). x: [B, L, D], mask Bool[B, L] -> [B, L, D]."""

    def __init__(self, mixer: nn.Module, ffn: nn.Module, make_norm: Callable[[], nn.Module],
                 placement: str = "pre", layout: str = "sequential", dropout: float = 0.0,
                 ffn2: nn.Module | None = None, path_scale: bool = False) -> None:
        super().__init__()
        if placement not in PLACEMENTS:
            raise unknown("norm placement", placement, PLACEMENTS)
        if layout not in LAYOUTS:
            raise unknown("layout", layout, LAYOUTS)
        self.placement, self.layout = placement, layout
        half = 0.5 if layout == "macaron" else 1.0
        # Parallel post-norm normalises the summed residual once, so its branches are bare.
        sub_place = "bare" if layout == "parallel" and placement == "post" else placement
        subs = [Sublayer(mixer, make_norm, sub_place, dropout, path_scale=path_scale),
                Sublayer(ffn, make_norm, sub_place, dropout, half, path_scale)]
        if layout == "macaron":
            if ffn2 is None:
                raise ValueError("macaron layout needs a second ffn")
            subs.insert(0, Sublayer(ffn2, make_norm, placement, dropout, half, path_scale))
        self.sublayers = nn.ModuleList(subs)
        self.parallel_norm = make_norm() if layout == "parallel" and placement == "post" else None

    @property
    def mixer(self) -> nn.Module:
        return self.sublayers[1 if self.layout == "macaron" else 0].fn

    @property
    def ffn(self) -> nn.Module:
        return self.sublayers[-1].fn

    @property
    def path_names(self) -> tuple[str, ...]:
        """Names of the residual branches, in order ('ffn2' is macaron's first half-step ffn)."""
        return ("ffn2", "mixer", "ffn") if self.layout == "macaron" else ("mixer", "ffn")

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, drop_path: float = 0.0,
                skip: frozenset[str] = frozenset()) -> torch.Tensor:
        """`drop_path`: stochastic-depth rate of every branch (training only); `skip`: names
        of branches pruned (see `path_names`)."""
        flags = [name in skip for name in self.path_names]
        if self.layout != "parallel":
            for sub, skipped in zip(self.sublayers, flags):
                x = sub(x, mask, drop_path, skipped)
            return x
        out = x + sum(sub.branch(x, mask, drop_path) for sub, skipped in zip(self.sublayers, flags) if not skipped)
        return self.parallel_norm(out, mask) if self.parallel_norm is not None else out
