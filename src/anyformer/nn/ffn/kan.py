"""Group-rational Kolmogorov-Arnold feed-forward layers (GR-KAN of KAT, Yang & Wang 2024;
not the B-spline KAN of Liu et al. 2024 / KindXiaoming/pykan)."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from anyformer.errors import ConfigError, unknown
from anyformer.nn.ffn.mlp import hidden_size
from anyformer.nn.ranges import Count, Dropout, PositiveFloat
from anyformer.registry import register

# Safe Pade coefficients (numerator degree 5, denominator degree 4) least-squares fitted to
# each activation on 1000 points of [-3, 3], in the form evaluated here, P / (1 + |Q|), as
# KAT fits its rationals (rational_kat_cu kat_rational/fit.py). Max abs error on [-3, 3]:
# gelu 9.2e-4, silu 1.2e-6, relu 3.3e-2, identity 0 (exact). silu was refitted from the KAT
# swish coefficients as start: the earlier fit sat in a poorer basin (2.2e-3, MSE 300x larger).
RATIONAL_INIT: dict[str, tuple[list[float], list[float]]] = {
    "identity": ([0.0, 1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]),
    "gelu": ([-0.0004239838143, 0.5000000194, 0.4026936869, 0.07376092031, -0.01288368992, -0.003727960246],
             [-3.874616431e-07, -0.147521577, -4.225432592e-08, 0.007455918564]),
    "silu": ([3.267884764e-07, 0.500000007, 0.2499972573, 0.05326479799, 0.005802392771, 0.0002751125915],
             [-1.949026596e-07, 0.1065297114, -4.19424532e-08, 0.0005502318051]),
    "relu": ([0.03393653986, 0.4999998883, 1.668375294, 1.985963647, 0.9384013323, 0.150296219],
             [-1.097462739e-06, 3.971929228, -1.261389702e-06, 0.3005926893]),
}
RATIONAL_INIT["swish"] = RATIONAL_INIT["silu"]
RationalInit = Literal[tuple(RATIONAL_INIT)]


def group_rational_naive(x: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """Reference: F(x) = P(x) / (1 + |b1 x + ... + bn x^n|) with P(x) = a0 + a1 x + ... + am x^m,
    channel c of x [..., C] using the coefficients of group c // (C / G). numerator [G, m+1],
    denominator [G, n]. Written term by term for clarity; `group_rational` is the fast path."""
    G, C = numerator.shape[0], x.shape[-1]
    a = numerator.repeat_interleave(C // G, 0)  # [C, m+1]
    b = denominator.repeat_interleave(C // G, 0)  # [C, n]
    P = sum(a[:, i] * x ** i for i in range(a.shape[1]))
    Q = 1 + sum(b[:, j] * x ** (j + 1) for j in range(b.shape[1])).abs()
    return P / Q


def _polynomial(c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """sum_i c[..., i] z^i by Horner's rule; c [G, 1, k] broadcasts against z [..., G, C/G]."""
    out = c[..., -1].expand_as(z)
    for i in range(c.shape[-1] - 2, -1, -1):
        out = out * z + c[..., i]
    return out


def group_rational(x: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """The same function as `group_rational_naive`, by Horner's rule on a [..., G, C/G] view
    (no per-channel copies of the coefficients, no powers).

    For |x| > 1 numerator and denominator are divided by |x|^n first and evaluated in
    t = 1 / x: F(x) = x^(m-n) sign(x)^n P~(t) / (|t|^n + |S~(t)|), P~(t) = sum_i a_i t^(m-i),
    S~(t) = sum_j b_j t^(n-j). The same value, but no power of x is formed: x^5 leaves
    float32 past |x| = 2e7, and inf / inf was NaN where F is nearly linear."""
    G = numerator.shape[0]
    xg = x.unflatten(-1, (G, x.shape[-1] // G))
    a, b = numerator[:, None], denominator[:, None]  # [G, 1, m+1], [G, 1, n]
    m, n = a.shape[-1] - 1, b.shape[-1]
    big = xg.abs() > 1
    # Each branch reads x only where it is taken, so the other's gradient is exactly 0, not NaN.
    xs = torch.where(big, torch.zeros_like(xg), xg)
    near = _polynomial(a, xs) / (1 + (_polynomial(b, xs) * xs).abs())
    xb = torch.where(big, xg, torch.ones_like(xg))
    t = 1 / xb
    far = xb ** (m - n) * xb.sign() ** n * _polynomial(a.flip(-1), t) / (t.abs() ** n + _polynomial(b.flip(-1), t).abs())
    return torch.where(big, far, near).flatten(-2)


class GroupRational(nn.Module):
    """Group-wise rational activation: channels split into `groups` contiguous groups, each
    with its own safe-Pade coefficients, shared by every channel of the group. [..., C] -> [..., C]."""

    def __init__(self, channels: int, groups: int, init: str) -> None:
        super().__init__()
        if init not in RATIONAL_INIT:
            raise unknown("rational init of ffn 'kan'", init, RATIONAL_INIT)
        if groups < 1 or channels % groups:
            raise ConfigError(f"ffn 'kan': groups {groups} must divide the channel count {channels}")
        a, b = RATIONAL_INIT[init]
        self.groups = groups
        self.numerator = nn.Parameter(torch.tensor(a).repeat(groups, 1))
        self.denominator = nn.Parameter(torch.tensor(b).repeat(groups, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_rational(x, self.numerator.to(x.dtype), self.denominator.to(x.dtype))

    def second_moment(self) -> float:
        """E[F(z)^2] for z ~ N(0, 1) (averaged over groups), by quadrature on [-6, 6]."""
        z = torch.linspace(-6, 6, 2001, dtype=torch.float64)
        w = torch.exp(-z ** 2 / 2)
        w = w / w.sum()
        with torch.no_grad():
            f = group_rational(z[:, None].expand(-1, self.groups).contiguous(), self.numerator.double(), self.denominator.double())
        return float((f.square() * w[:, None]).sum(0).mean())


@register("ffn", "kan")
class GroupRationalKAN(nn.Module):
    """GR-KAN channel mixer (Yang & Wang 2024, Kolmogorov-Arnold Transformer). x: [..., D] -> [..., D].

    x -> W2 F2(W1 F1(x)), F a group-wise rational P(x) / (1 + |b1 x + ... + b4 x^4|) of
    degree (5, 4), channels split into `groups` contiguous groups; W1 [h, D], W2 [D, h].
    Not pykan's KAN (Liu et al. 2024): no B-spline grid, no silu base branch; the rational
    replaces both, as in KAT.

    Follows the KAT paper and Adamdad/kat katransformer.py (class KAN): F1 starts as the
    identity, F2 as the fitted `activation` (GELU by default), coefficients fitted in the
    form evaluated here by least squares on [-3, 3] (as rational_kat_cu kat_rational/fit.py),
    and the paper's variance-preserving init std = 1 / sqrt(fan_in E[F(z)^2]), so the layer
    starts as the MLP it replaces with matched signal variance.

    Differs from the official code (Adamdad/rational_kat_cu): (1) its CUDA and Triton
    kernels (src/rational_kernel_group.cu, kat_rational/rational_triton.py) evaluate
    Q = 1 + sum_k |b_k| |x|^k, not the paper's 1 + |sum_k b_k x^k| used here, and its
    init.json mixes fits for both forms (its gelu, fitted in the paper's form, is off by up
    to 1.46 on [-3, 3] under its own kernel); (2) KAT_Group (kat_rational/kat_1dgroup.py)
    shares one numerator across all groups, only denominators per group, while here each
    group has its own of both; (3) KAT's init_weights_vit_kan_* call kaiming_normal_ on the
    FFN weights and then overwrite them with trunc_normal_(std=0.02) (the if/else after it
    runs for every Linear), so the official effective init is not variance preserving;
    (4) KAT applies dropout after F1 and after F2, here only after F2; (5) the kernels run
    in float32 under autocast, here in the input dtype."""

    paper = "Kolmogorov-Arnold Transformer (Yang & Wang 2024)"

    def __init__(self, dim: int, ratio: PositiveFloat = 4.0, hidden: Count | None = None, groups: Count = 8,
                 activation: RationalInit = "gelu", first_activation: RationalInit = "identity", bias: bool = True,
                 dropout: Dropout = 0.0, variance_preserving: bool = True) -> None:
        super().__init__()
        h = hidden_size(dim, ratio, hidden, "kan")
        if groups < 1 or dim % groups or h % groups:
            raise ConfigError(f"ffn 'kan': groups {groups} must divide dim {dim} and the hidden size {h}")
        self.act1 = GroupRational(dim, groups, first_activation)
        self.fc1 = nn.Linear(dim, h, bias=bias)
        self.act2 = GroupRational(h, groups, activation)
        self.fc2 = nn.Linear(h, dim, bias=bias)
        self.drop = nn.Dropout(dropout)
        if variance_preserving:
            for act, fc in ((self.act1, self.fc1), (self.act2, self.fc2)):
                nn.init.normal_(fc.weight, std=(fc.in_features * act.second_moment()) ** -0.5)
                if fc.bias is not None:
                    nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act2(self.fc1(self.act1(x)))))
