"""The token-mixer contract and the shared machinery of attention-family mixers.

Contract: `__init__(dim, heads, max_len, causal=False, grid=None, **options)`;
`forward(x: [B, L, D], mask: Bool[B, L] | None) -> [B, L, D]`, mask True for real tokens.
A mixer that cannot honour a request raises ConfigError when it is built (or, for a mask,
when one with padding reaches it), never a wrong answer.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from anyformer import registry
from anyformer.errors import ConfigError, ShapeError
from anyformer.nn.decoding import DecodeState
from anyformer.nn.ffn.mlp import select_linear
from anyformer.nn.ranges import Count


def mixers_supporting(flag: str) -> str:
    """Names of registered mixers with a capability, for error messages."""
    return ", ".join(n for n in registry.list_components("mixer") if getattr(registry.get("mixer", n), flag, False))


class TokenMixer(nn.Module):
    """Base of every token mixer; checks the contract's requests at build and call time."""

    supports_causal: ClassVar[bool] = True
    supports_mask: ClassVar[bool] = True
    complexity: ClassVar[str] = "L^2"
    # True when time and memory grow below L^2 in the sequence length L (L, L log L, L*w,
    # L^2/groups, ...): the efficient mixers a comparison sets against full attention.
    # Declared by each such class, never derived from the `complexity` text.
    subquadratic: ClassVar[bool] = False
    paper: ClassVar[str] = ""
    needs_grid: ClassVar[bool] = False
    # Positions applied inside the mixer ('rotary' -> q/k, 'alibi' -> score bias).
    supported_positions: ClassVar[frozenset[str]] = frozenset()
    # Options the generic test suite adds when it builds this mixer (kept small and fast).
    example_options: ClassVar[dict] = {}
    # True when outputs are random in training mode (feature redraw, subsampling).
    stochastic_in_training: ClassVar[bool] = False
    # False for mixers that act on each token alone (Activator): a model made only of them
    # cannot read the input through a [CLS] token.
    mixes_tokens: ClassVar[bool] = True
    # Layers of this mixer after which every output reads every input it may (all of them,
    # or the past when causal): 1 for global attention, 2 for sliced groups (contiguous,
    # then permuted), None when the receptive field grows with depth (local windows).
    reach_layers: ClassVar[int | None] = 1
    # Names of the q/k/v/o projections an attention-family mixer reads its input and writes
    # its output through (dim -> heads * head_dim = dim unless head_dim is set; k/v dim ->
    # kv_heads * head_dim under grouped-query attention; o_proj back to dim): what
    # per-modality routing (MoT), weight swapping and head pruning act on.
    # Empty for mixers without them.
    attention_projections: ClassVar[tuple[str, ...]] = ()
    # True when `prune_heads(keep)` removes heads exactly (their q/k/v rows and o_proj
    # columns go, the rest keep their head_dim) and `heads_output()` names the linear that
    # reads the concatenated heads, whose input masking a head zeroes (compress's prune).
    prunable_heads: ClassVar[bool] = False
    # True when the mixer holds weights only in its `attention_projections` and its output is
    # unchanged by permuting its heads, the dims of q and k together within a head, and those
    # of v with o_proj's columns (softmax(q k^T / sqrt(Dh)) v per head): what OT fusion
    # aligns between two models (compress/fuse.py, Imfeld et al. 2024). An attached rotary
    # or ALiBi position breaks that within a head or across heads; fusion refuses those.
    fusable_heads: ClassVar[bool] = False
    # True when the mixer takes `kv_heads` < heads (grouped-query attention, Ainslie et al.
    # 2023): fewer key/value heads, each shared by heads // kv_heads query heads.
    supports_kv_heads: ClassVar[bool] = False
    # True when the mixer acts differently by layer (SReT's sliced attention alternates
    # contiguous and permuted groups): it is built with `layer` (its first layer) and its
    # forward takes `layer=`, the index of the layer running it, since a shared block runs
    # at several.
    depth_aware: ClassVar[bool] = False
    # True when a causal forward on new tokens alone, with this mixer's cache of the earlier
    # ones (keys and values, a recurrent state), gives what a forward over the whole
    # sequence gives at those tokens; generation recomputes the whole sequence otherwise.
    supports_decoding: ClassVar[bool] = False
    # Held while generating (nn/decoding.py) by mixers that support decoding.
    decode_state: DecodeState | None = None
    # True when the mixer treats its tokens as a set (what it does to a token depends on the
    # others' contents, not on their count, index or grid place), so a token filter
    # (model.token_filter) may hand it any subset of them in order. Declared by each such
    # class: a mixer that windows, convolves, transforms or projects along the sequence cannot.
    accepts_token_subset: ClassVar[bool] = False

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None) -> None:
        super().__init__()
        name = getattr(self, "registry_name", type(self).__name__)
        if dim < 1 or heads < 1 or max_len < 1:
            raise ConfigError(f"mixer {name!r}: dim, heads and max_len must be positive (got {dim}, {heads}, {max_len})")
        if causal and not self.supports_causal:
            raise ConfigError(
                f"mixer {name!r} cannot be causal; causal mixers: {mixers_supporting('supports_causal')}"
            )
        if self.needs_grid and grid is None:
            raise ConfigError(
                f"mixer {name!r} needs a 2-D token grid (image patches); use it with the 'patches' encoder"
            )
        self.dim, self.heads, self.max_len, self.causal = dim, heads, max_len, causal
        self.grid = tuple(grid) if grid is not None else None
        self.position: nn.Module | None = None

    @property
    def name(self) -> str:
        return getattr(self, "registry_name", type(self).__name__)

    def activation_elements(self, batch: int, length: int) -> int:
        """Elements one call on [batch, length, dim] keeps for backward beyond the few
        [batch, length, dim] tensors every layer keeps (nn/footprint.py counts those), for
        memory guards. None by default: fused attention (SDPA's flash and memory-efficient
        kernels) and subquadratic mixers keep no more. A mixer that keeps its attention
        weights (an explicit softmax) returns batch * self.heads * length ** 2."""
        return 0

    def input_linears(self) -> list[nn.Linear]:
        """The linear layers that read this mixer's input x [B, L, D] directly, when nothing
        else reads it: an affine map applied to x (a folded BatchNorm) can then move into
        their weights exactly. Empty (the default): the mixer uses x otherwise too, so it
        cannot absorb one. A subclass that reads x in any other way must return []."""
        return []

    def check_grid_tokens(self, count: int | None, built: bool = False) -> None:
        """Grid mixers place tokens on the H x W grid, so they need exactly H * W of them;
        a [CLS] token (or any other count) is refused, at build (`built`) or call time."""
        if count is None or self.grid is None:
            return
        H, W = self.grid
        if count != H * W:
            raise ConfigError(
                f"mixer {self.name!r} works on the {H}x{W} token grid and needs exactly {H * W} tokens, "
                f"{'the model gives' if built else 'got'} {count}; set the encoder's cls_token: false and pool "
                "with head 'mean' (as preset vit-gap does)"
            )

    def set_position(self, position: nn.Module) -> None:
        """Attach a rotary / ALiBi module that acts inside this mixer."""
        kind = getattr(position, "registry_name", "?")
        if kind not in self.supported_positions:
            allowed = ", ".join(sorted(self.supported_positions)) or "none inside the mixer"
            raise ConfigError(
                f"mixer {self.name!r} cannot apply {kind!r} positions (supports: {allowed}); "
                "use position 'learned' or 'sinusoidal', which act on the input"
            )
        # Rotary angles are laid out for dim / heads; a mixer whose head_dim is set smaller
        # (a fuzzed head_dim 1 under rotary) has fewer dims than the angles rotate.
        rotated, head_dim = getattr(position, "rot", 0), getattr(self, "head_dim", None)
        if head_dim is not None and rotated > head_dim:
            raise ConfigError(f"{kind!r} positions rotate {rotated} dims of each head (model.dim / model.heads), more than "
                              f"mixer {self.name!r}'s head_dim {head_dim}; raise model.mixer.head_dim or lower position.fraction")
        self.position = position

    @property
    def decode_offset(self) -> int:
        """Tokens this mixer's decode cache already holds (0 outside generation)."""
        return self.decode_state.offset if self.decode_state is not None else 0

    def decode_cache(self) -> dict | None:
        """This call's cache while generating (None otherwise): a causal forward then sees
        the new tokens only, and keeps in the cache what later tokens need."""
        if self.decode_state is None:
            return None
        return self.decode_state.slot()

    def check_input(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
        """Validate shapes; returns the mask, or None when it masks nothing."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ShapeError(f"mixer {self.name!r} expects [batch, length, {self.dim}], got {list(x.shape)}")
        if self.decode_offset + x.shape[1] > self.max_len:
            raise ConfigError(
                f"sequence length {self.decode_offset + x.shape[1]} exceeds max_len {self.max_len} of mixer {self.name!r}; raise model.max_len"
            )
        if mask is None:
            return None
        if mask.shape != x.shape[:2] or mask.dtype != torch.bool:
            raise ShapeError(f"mask must be bool [batch, length] = {list(x.shape[:2])}, got {mask.dtype} {list(mask.shape)}")
        if torch.compiler.is_exporting():
            # An exported graph cannot branch on the mask's values: it keeps the mask (an
            # all-True one masks nothing), and a mixer that cannot honour one is refused,
            # since the graph could not tell a padded batch from a full one.
            if not self.supports_mask:
                raise ConfigError(f"mixer {self.name!r} cannot honour a padding mask, so a graph exported with padding cannot be checked pad-free; "
                                  f"export the model without pad_id, or use a mixer that can: {mixers_supporting('supports_mask')}")
            return mask
        if bool(mask.all()):
            return None
        if not self.supports_mask:
            raise ConfigError(
                f"mixer {self.name!r} cannot honour a padding mask; pad-free batches or a mixer that can: {mixers_supporting('supports_mask')}"
            )
        return mask


class AttentionMixer(TokenMixer):
    """Attention family: `q_proj`, `k_proj`, `v_proj`, `o_proj` (shared names so weights move
    between variants); queries split into heads [B, H, L, Dh], keys/values into `kv_heads`
    heads [B, Hkv, L, Dh] (GQA, Ainslie et al. 2023: k_proj/v_proj are dim -> Hkv * Dh; None
    or kv_heads == heads is multi-head attention), which `qkv` repeats to H for the math.
    `head_dim` (default dim / heads) sets Dh apart from dim: q_proj is then dim -> H * Dh and
    o_proj H * Dh -> dim, what a layer keeps after some of its heads are pruned."""

    supported_positions = frozenset({"rotary", "alibi"})
    attention_projections = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __init__(self, dim: int, heads: int, max_len: int, causal: bool = False,
                 grid: tuple[int, int] | None = None, bias: bool = True,
                 kv_heads: Count | None = None, head_dim: Count | None = None) -> None:
        super().__init__(dim, heads, max_len, causal, grid)
        if head_dim is None and dim % heads:
            raise ConfigError(f"dim {dim} is not divisible by heads {heads}; pick heads among the divisors of {dim}")
        kv = heads if kv_heads is None else kv_heads
        if kv != heads and not self.supports_kv_heads:
            raise ConfigError(
                f"mixer {self.name!r} cannot use kv_heads {kv} != heads {heads} (grouped-query attention); "
                f"mixers that can: {mixers_supporting('supports_kv_heads')}"
            )
        if kv < 1 or heads % kv:
            raise ConfigError(f"mixer {self.name!r}: heads {heads} must be a multiple of kv_heads {kv}; "
                              f"kv_heads could be one of {[d for d in range(1, heads + 1) if heads % d == 0]}")
        self.head_dim = dim // heads if head_dim is None else head_dim
        self.kv_heads = kv
        self.q_proj = nn.Linear(dim, heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, kv * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, kv * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(heads * self.head_dim, dim, bias=bias)

    def heads_output(self) -> nn.Linear:
        """The linear that reads the heads' outputs concatenated, [B, L, H * Dh] (head h at
        columns h * Dh .. (h + 1) * Dh): zeroing its input there masks head h."""
        return self.o_proj

    def prune_heads(self, keep: list[int]) -> None:
        """Keep only query heads `keep` (indices into 0..heads-1): their rows of q/k/v and
        columns of o_proj stay, the rest are removed, head_dim unchanged, so the output
        equals the full mixer's with the other heads masked before o_proj. Multi-head
        attention only: under grouped-query attention a kv head serves several query heads."""
        if not self.prunable_heads:
            raise ConfigError(f"mixer {self.name!r} cannot prune heads; mixers that can: {mixers_supporting('prunable_heads')}")
        if self.kv_heads != self.heads:
            raise ConfigError(f"mixer {self.name!r} uses grouped-query attention (kv_heads {self.kv_heads} < heads {self.heads}); "
                              "head pruning supports multi-head attention only (kv_heads == heads)")
        chosen = sorted(set(int(h) for h in keep))
        if not chosen or not all(0 <= h < self.heads for h in chosen):
            raise ConfigError(f"mixer {self.name!r}: keep {list(keep)} must name 1..{self.heads} of heads 0..{self.heads - 1}")
        idx = torch.tensor(chosen, device=self.q_proj.weight.device)
        idx = (idx[:, None] * self.head_dim + torch.arange(self.head_dim, device=idx.device)).flatten()
        self.q_proj, self.k_proj, self.v_proj = (select_linear(p, rows=idx) for p in (self.q_proj, self.k_proj, self.v_proj))
        self.o_proj = select_linear(self.o_proj, cols=idx)
        self.heads = self.kv_heads = len(chosen)

    def split(self, t: torch.Tensor, heads: int | None = None) -> torch.Tensor:
        """[B, L, heads * Dh] -> [B, heads, L, Dh]; heads defaults to the query heads."""
        B, L, _ = t.shape
        return t.view(B, L, heads or self.heads, -1).transpose(1, 2)

    def merge(self, t: torch.Tensor) -> torch.Tensor:
        B, H, L, Dh = t.shape
        return t.transpose(1, 2).reshape(B, L, H * Dh)

    def repeat_kv(self, t: torch.Tensor) -> torch.Tensor:
        """Keys or values [B, Hkv, L, Dh] -> [B, H, L, Dh]: query head h reads kv head
        h // (H / Hkv), the grouping of the GQA paper and of SDPA's enable_gqa."""
        group = self.heads // t.shape[1]
        return t if group == 1 else t.repeat_interleave(group, dim=1)

    def qkv(self, x: torch.Tensor, expand: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projected, head-split q [B, H, L, Dh] and k, v [B, H, L, Dh] (or [B, Hkv, L, Dh]
        when not `expand`, for kernels that group themselves), rotary applied when attached."""
        q, k, v = self.split(self.q_proj(x)), self.split(self.k_proj(x), self.kv_heads), self.split(self.v_proj(x), self.kv_heads)
        if self.position is not None and self.position.applies_to == "qk":
            q, k = self.position(q, k, self.decode_offset)
        if expand:
            k, v = self.repeat_kv(k), self.repeat_kv(v)
        return q, k, v

    def score_bias(self, length: int, dtype: torch.dtype) -> torch.Tensor | None:
        """Additive score bias [H, L, offset + L] from an attached ALiBi module (queries
        after the `decode_offset` cached keys), else None."""
        if self.position is not None and self.position.applies_to == "bias":
            return self.position(length, self.decode_offset).to(dtype)
        return None


def allowed_pairs(length: int, mask: torch.Tensor | None, causal: bool,
                  device: torch.device) -> torch.Tensor | None:
    """Bool [B or 1, 1, L, L], True where query i may attend key j; None when all may.

    Each query also may attend itself, so a padded query never faces an empty row (whose
    softmax is NaN); this changes only outputs at padded positions, which nobody reads."""
    if mask is None and not causal:
        return None
    allowed = torch.ones(1, 1, length, length, dtype=torch.bool, device=device)
    if causal:
        allowed = allowed.tril()
    if mask is not None:
        allowed = allowed & mask[:, None, None, :]
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=device)
    return allowed


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """scaled_dot_product_attention over blocks: q [..., M, N, Dh], k and v [..., M, S, Dh],
    attn_mask broadcastable to [..., M, N, S] -> [..., M, N, Dh]. The leading dims (windows,
    groups) fold into the batch, since torch's fused kernels and the ONNX exporter take 4-D
    inputs only; the mask is expanded over them, which the scores it masks already are."""
    lead = q.shape[:-3]
    if len(lead) <= 1:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)

    def fold(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(-1, *t.shape[-3:])

    if attn_mask is not None:
        attn_mask = attn_mask.reshape((1,) * (q.dim() - attn_mask.dim()) + tuple(attn_mask.shape))
        attn_mask = fold(attn_mask.expand(*lead, *attn_mask.shape[-3:]))
    out = F.scaled_dot_product_attention(fold(q), fold(k), fold(v), attn_mask=attn_mask)
    return out.reshape(*lead, *out.shape[-3:])


def cached_pairs(new: int, total: int, device: torch.device) -> torch.Tensor | None:
    """Bool [new, total]: the causal pairs of `new` queries placed after total - new cached
    keys (query i may attend key j <= total - new + i); None for one query, which may
    attend every key."""
    if new == 1:
        return None
    keys = torch.arange(total, device=device)
    return keys[None, :] <= keys[total - new:, None]


def refuse_padded_decoding(mixer: TokenMixer, mask: torch.Tensor | None) -> None:
    """Generation feeds whole prompts of one length: a padding mask has no place in it."""
    if mask is not None:
        raise ConfigError(f"mixer {mixer.name!r}: generation takes prompts of one length without padding; "
                          "generate each prompt on its own, or give prompts of equal length")
