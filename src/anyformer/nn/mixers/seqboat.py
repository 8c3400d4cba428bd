"""SeqBoat: an EMA state space signal that sparsely activates a local gated attention unit."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.errors import unknown
from anyformer.nn.mixers.base import TokenMixer
from anyformer.nn.mixers.gau import SCORE_FNS, GatedAttentionUnit, Scores
from anyformer.nn.ranges import Count, PositiveFloat
from anyformer.registry import register


def truncated_normal(*shape: int, std: float) -> torch.Tensor:
    """N(0, std) cut at +-2 std: the reference's `Normal` (seqboat_utils.py) for every init."""
    return nn.init.trunc_normal_(torch.empty(*shape), 0.0, std, -2 * std, 2 * std)


class DampedEMA(nn.Module):
    """Mega's multi-dimensional damped EMA per channel. x: [B, L, D] -> [B, L, D].

    Per channel d and component n: h_t = p * beta * x_t + (1 - p * alpha) * h_{t-1},
    y_t = sum_n gamma_n h_t[n] / sqrt(N) + omega * x_t, with p, alpha = sigmoid of
    parameters. Computed as a convolution with the kernel K[l] = sum_n gamma_n p beta
    q^l / sqrt(N) by FFT. `bidirectional` adds a second, anti-causal kernel (both see
    x_t itself). Padded tokens are zeroed first, so they never reach real ones.
    Initialised as renll/SeqBoat fairseq/modules/exponential_moving_average.py
    (`reset_parameters_trunc`, the one SeqBoat uses): normals truncated at 2 std."""

    def __init__(self, dim: int, ndim: int = 16, bidirectional: bool = False) -> None:
        super().__init__()
        self.ndim, self.bidirectional = ndim, bidirectional
        kernels = 2 * dim if bidirectional else dim
        self.delta = nn.Parameter(truncated_normal(kernels, ndim, std=0.2))
        self.alpha = nn.Parameter(truncated_normal(kernels, ndim, std=0.2))
        # beta alternates +1, -1 (the reference finds it more stable), plus small noise.
        sign = torch.ones(ndim)
        sign[1::2] = -1.0
        self.beta = nn.Parameter(truncated_normal(kernels, ndim, std=0.02) + sign)
        self.gamma = nn.Parameter(truncated_normal(kernels, ndim, std=1.0))
        self.omega = nn.Parameter(truncated_normal(dim, std=1.0))

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
    """SeqBoat layer (Ren et al. 2023, "Sparse Modular Activation for Efficient Sequence Modeling").

    x: [B, L, D] -> [B, L, D]. m = silu(EMA(x)) (Mega's damped EMA, causal or
    bidirectional). A latent configurator reads m: pi = softmax(m W_g / tau) over two
    options (tau learned, starting at sqrt(D));
    token t activates the attention module when option 1 wins (argmax), with weight
    pi_max. The activated tokens are compressed, in order, into a shorter sequence; a
    gated attention unit (the `gau` mixer, reused) runs on it with local attention:
    compressed positions i, j interact only when |i - j| <= window (j <= i when causal),
    relu2 scores divided by the fixed window (2 * window when not causal). Its outputs are
    scattered back and scaled by pi_max; non-activated tokens get 0. y = m W_h + that.
    Gradients reach the configurator through pi_max only (argmax blocks them), as in the
    paper.

    Follows renll/SeqBoat fairseq/modules/seqboat_unit.py (`SeqBoatUnit`: forward,
    `element_attention`, `local_attention`, `reset_parameters`) and
    fairseq/modules/seqboat_utils.py (`LatentConfigurator`, `Normal`). Init as there: every
    projection weight (W_g and W_h: the reference's `hx_proj`; the GAU's U/V/Z: `mx_proj`;
    its W_o: `h_proj`) and the GAU's gamma from N(0, 0.02) truncated at 2 std, biases and
    beta 0; the EMA as in `DampedEMA`. Remaining differences: the final silu after the
    residual, the pre-norm and dropout are left out (the Block's residual is linear); the
    GAU's relative position bias is left to the model's position component; W_g is its own
    Linear rather than the first two outputs of `hx_proj` (the same function); tau starts at
    sqrt(D), the reference's `init_temp_scale` 1.0 (its scripts use 0.3 to 1.0, the
    constructor's default is 0.3); no incremental decoding or EMA kernel truncation. The
    window is applied as a mask on the compressed score matrix (same values as the
    reference's blocked look-around, quadratic memory in the number of activated tokens)."""

    complexity = "L^2"
    paper = "Sparse Modular Activation for Efficient Sequence Modeling (Ren et al. 2023)"
    example_options = {"qk_dim": 16, "ema_dim": 4, "window": 4}

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, ema_dim: Count = 16, window: Count = 64,
                 expansion: PositiveFloat = 2.0, qk_dim: Count = 128, scores: Scores = "relu2",
                 bias: bool = True) -> None:
        super().__init__(dim, heads, max_len, causal, grid)
        if scores not in SCORE_FNS:
            raise unknown("scores of mixer 'seqboat'", scores, SCORE_FNS)
        self.window = window
        self.ema = DampedEMA(dim, ema_dim, bidirectional=not causal)
        self.router = nn.Linear(dim, 2, bias=bias)  # the latent configurator's two options
        self.log_temperature = nn.Parameter(torch.tensor(math.log(math.sqrt(dim))))
        self.ema_out = nn.Linear(dim, dim, bias=bias)
        self.gau = GatedAttentionUnit(dim, 1, max_len, causal, grid, expansion=expansion,
                                      qk_dim=qk_dim, scores=scores, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """SeqBoatUnit.reset_parameters: small truncated normals for the projections and the
        GAU's gamma, so the EMA path and the GAU both start near 0 (not PyTorch's defaults)."""
        with torch.no_grad():
            for linear in (self.router, self.ema_out, self.gau.uv_proj, self.gau.z_proj, self.gau.o_proj):
                linear.weight.copy_(truncated_normal(*linear.weight.shape, std=0.02))
                if linear.bias is not None:
                    linear.bias.zero_()
            self.gau.gamma.copy_(truncated_normal(*self.gau.gamma.shape, std=0.02))
            self.gau.beta.zero_()

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

    def activation_elements(self, batch: int, length: int) -> int:
        """The GAU's [B, L', L'] scores over the kept positions (at most L), masked to the
        window but materialised whole, their relu and its square."""
        return 3 * batch * length ** 2

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = self.check_input(x, mask)
        m = F.silu(self.ema(x, mask))
        active, weight = self.gates(m, mask)
        return self.ema_out(m) + self.local_gau(m, active) * weight[..., None]
