"""SeqBoat: an EMA state space signal that sparsely activates a local gated attention unit."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.errors import ConfigError, unknown
from anyformer.nn.mixers.base import TokenMixer
from anyformer.nn.mixers.gau import SCORE_FNS, GatedAttentionUnit
from anyformer.registry import register


class DampedEMA(nn.Module):
    """Mega's multi-dimensional damped EMA per channel. x: [B, L, D] -> [B, L, D].

    Per channel d and component n: h_t = p * beta * x_t + (1 - p * alpha) * h_{t-1},
    y_t = sum_n gamma_n h_t[n] / sqrt(N) + omega * x_t, with p, alpha = sigmoid of
    parameters. Computed as a convolution with the kernel K[l] = sum_n gamma_n p beta
    q^l / sqrt(N) by FFT. `bidirectional` adds a second, anti-causal kernel (both see
    x_t itself). Padded tokens are zeroed first, so they never reach real ones."""

    def __init__(self, dim: int, ndim: int = 16, bidirectional: bool = False) -> None:
        super().__init__()
        self.ndim, self.bidirectional = ndim, bidirectional
        kernels = 2 * dim if bidirectional else dim
        # Initialisation of the reference (Mega / SeqBoat): beta alternates +1, -1.
        self.delta = nn.Parameter(torch.randn(kernels, ndim) * 0.2)
        self.alpha = nn.Parameter(torch.randn(kernels, ndim) * 0.2)
        sign = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(ndim)])
        self.beta = nn.Parameter(torch.randn(kernels, ndim) * 0.02 + sign)
        self.gamma = nn.Parameter(torch.randn(kernels, ndim))
        self.omega = nn.Parameter(torch.randn(dim))

    def kernel(self, length: int) -> torch.Tensor:
        """[kernels, length]: the impulse response K[l]."""
        p = torch.sigmoid(self.delta)
        q = 1.0 - p * torch.sigmoid(self.alpha)
        steps = torch.arange(length, device=p.device, dtype=p.dtype)
        decay = torch.exp(steps * torch.log(q)[..., None])  # [K, N, L]
        return torch.einsum("knl,kn->kl", decay * (p * self.beta)[..., None], self.gamma / math.sqrt(self.ndim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, D = x.shape
        residual = x * self.omega
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)
        k = self.kernel(L).to(x.dtype)
        xt = x.transpose(1, 2)  # [B, D, L]
        n = 2 * L  # zero-padded FFT: a linear, not circular, convolution
        xf = torch.fft.rfft(xt, n=n)
        out = torch.fft.irfft(xf * torch.fft.rfft(k[:D], n=n), n=n)[..., :L]
        if self.bidirectional:
            # Anti-causal part: convolve the time-reversed input and reverse back.
            back = torch.fft.irfft(torch.fft.rfft(xt.flip(-1), n=n) * torch.fft.rfft(k[D:], n=n), n=n)[..., :L]
            out = out + back.flip(-1)
        return out.transpose(1, 2) + residual


@register("mixer", "seqboat")
class SeqBoat(TokenMixer):
    """SeqBoat layer (Ren et al. 2023). x: [B, L, D] -> [B, L, D].

    m = silu(EMA(x)) (Mega's damped EMA, causal or bidirectional). A latent configurator
    reads m: pi = softmax(m W_g / tau) over two options (tau learned, starting at sqrt(D));
    token t activates the attention module when option 1 wins (argmax), with weight
    pi_max. The activated tokens are compressed, in order, into a shorter sequence; a
    gated attention unit (the `gau` mixer, reused) runs on it with local attention:
    compressed positions i, j interact only when |i - j| <= window (j <= i when causal),
    relu2 scores divided by the fixed window (2 * window when not causal), as in the
    reference code. Its outputs are scattered back and scaled by pi_max; non-activated
    tokens get 0. y = m W_h + that. Gradients reach the configurator through pi_max only
    (argmax blocks them), as in the paper. Differences from the reference layer: the
    final silu after the residual is left out (the Block's residual is linear), and the
    GAU's relative position bias is left to the model's position component. The window
    is applied as a mask on the compressed score matrix (same values as the reference's
    blocked look-around, quadratic memory in the number of activated tokens)."""

    complexity = "L^2"
    paper = "Sparse Modular Activation for Efficient Sequence Modeling (Ren et al. 2023)"
    example_options = {"qk_dim": 16, "ema_dim": 4, "window": 4}

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, ema_dim: int = 16, window: int = 64,
                 expansion: float = 2.0, qk_dim: int = 128, scores: str = "relu2",
                 bias: bool = True) -> None:
        super().__init__(dim, heads, max_len, causal, grid)
        if scores not in SCORE_FNS:
            raise unknown("scores of mixer 'seqboat'", scores, SCORE_FNS)
        if ema_dim < 1 or window < 1:
            raise ConfigError(f"mixer 'seqboat': ema_dim and window must be >= 1 (got {ema_dim}, {window})")
        self.window = window
        self.ema = DampedEMA(dim, ema_dim, bidirectional=not causal)
        self.router = nn.Linear(dim, 2, bias=bias)  # the latent configurator's two options
        self.log_temperature = nn.Parameter(torch.tensor(math.log(math.sqrt(dim))))
        self.ema_out = nn.Linear(dim, dim, bias=bias)
        self.gau = GatedAttentionUnit(dim, 1, max_len, causal, grid, expansion=expansion,
                                      qk_dim=qk_dim, scores=scores, bias=bias)

    def gates(self, m: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(active [B, L] bool, weight [B, L]): which tokens activate the GAU and pi_max."""
        probs = (self.router(m) / self.log_temperature.exp()).softmax(-1)
        weight, choice = probs.max(-1)
        active = choice == 1
        if mask is not None:
            active = active & mask
        return active, weight * active.to(weight.dtype)

    def local_gau(self, m: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """GAU with local attention over the activated tokens only, scattered back: [B, L, D]."""
        B, L, D = m.shape
        count = active.sum(-1)
        M = int(count.max())
        if M == 0:
            return torch.zeros_like(m)
        # Stable sort puts activated tokens first, in their original order.
        order = torch.sort((~active).to(torch.uint8), dim=1, stable=True).indices[:, :M]
        packed = m.gather(1, order[..., None].expand(B, M, D))
        real = torch.arange(M, device=m.device)[None] < count[:, None]
        pos = torch.arange(M, device=m.device)
        window = ((pos[:, None] - pos[None]).abs() <= self.window)[None]
        normaliser = float(self.window if self.causal else 2 * self.window)
        h = self.gau.gated(packed, None if bool(real.all()) else real, window, normaliser)
        h = h * real[..., None].to(h.dtype)
        return torch.zeros_like(m).scatter(1, order[..., None].expand(B, M, D), h)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        m = F.silu(self.ema(x, mask))
        active, weight = self.gates(m, mask)
        return self.ema_out(m) + self.local_gau(m, active) * weight[..., None]
