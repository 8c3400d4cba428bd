"""K seeds of one plain ViT folded into the tensors of one module.

Small models leave the CPU's cores underused, so K seeds trained one after another cost
about K times one seed. `stack_seeds(models)` turns K identically configured plain ViTs
(preset `vit`: patches encoder, learned positions, pre-norm LayerNorm, softmax attention,
GELU MLP, [CLS] head) into one module whose every weight carries a leading seed axis:

- linears: weights [K, out, in] applied with one `torch.baddbmm` to activations
  [K, B*L, in] (`StackedLinear`);
- attention has no weights, so the seed axis folds into the batch axis: K x B sequences
  of H heads go through ONE `scaled_dot_product_attention` call;
- LayerNorm: `F.layer_norm` without affine, then a per-seed scale / shift [K, D]
  (`StackedLayerNorm`);
- patch embedding: the Conv2d with kernel = stride is a Linear on unfolded patches, stacked;
- [CLS] token and position embedding: [K, 1, 1, D] / [K, 1, L, D].

forward(x [K, B, C, H, W] (or [K, B, H, W] for one channel): a different batch per seed)
-> logits [K, B, classes]. The math is each seed model's own, so the output and the
gradients of a sum of per-seed losses equal each model's (tests/nn/test_seeds.py); AdamW
acts elementwise, so one optimizer over the stacked parameters steps every seed as its own
optimizer would (global-norm gradient clipping would not: it couples the seeds).
`StackedViT.unstack_into(models)` copies the trained weights back into the K models.

Only what the plain ViT uses is supported; anything else raises ValueError naming the
module type (see benchmarks/README.md, "Seeds folded into the tensors", for which
families the approach extends to)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.nn.block import Block
from anyformer.nn.encoders.patches import PatchEncoder
from anyformer.nn.ffn.mlp import MLP
from anyformer.nn.heads.classifier import ClsHead
from anyformer.nn.mixers.softmax import SoftmaxAttention
from anyformer.nn.model import AnyFormer
from anyformer.nn.norms.layernorm import LayerNorm
from anyformer.nn.positions import LearnedPosition

__all__ = ["StackedLinear", "StackedLayerNorm", "StackedViT", "stack_seeds"]


def _stack(tensors: list[torch.Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.stack([t.detach() for t in tensors]).clone())


class StackedLinear(nn.Module):
    """K linears in one: weight [K, out, in], bias [K, out]. x [K, ..., in] -> [K, ..., out]
    (the middle axes are flattened for one batched matmul)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None

    @classmethod
    def from_linears(cls, linears: list[nn.Linear]) -> StackedLinear:
        for lin in linears:
            if type(lin) is not nn.Linear:
                raise ValueError(f"stack_seeds: expected nn.Linear, got {type(lin).__name__}")
        bias = _stack([lin.bias for lin in linears]) if linears[0].bias is not None else None
        return cls(_stack([lin.weight for lin in linears]), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K, *mid, d_in = x.shape
        flat = x.reshape(K, -1, d_in)
        wt = self.weight.transpose(1, 2)
        out = torch.bmm(flat, wt) if self.bias is None else torch.baddbmm(self.bias[:, None], flat, wt)
        return out.view(K, *mid, out.shape[-1])

    def unstack_into(self, linears: list[nn.Linear]) -> None:
        with torch.no_grad():
            for k, lin in enumerate(linears):
                lin.weight.copy_(self.weight[k])
                if self.bias is not None:
                    lin.bias.copy_(self.bias[k])


class StackedLayerNorm(nn.Module):
    """K LayerNorms in one: normalise without affine, then scale [K, D] / shift [K, D] per
    seed. x [K, ..., D] -> [K, ..., D]."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.eps = eps

    @classmethod
    def from_norms(cls, norms: list[nn.Module]) -> StackedLayerNorm:
        for n in norms:
            if type(n) is not LayerNorm:
                raise ValueError(f"stack_seeds: norm {type(n).__name__} is not supported (only anyformer's LayerNorm)")
            if not n.elementwise_affine or len(n.normalized_shape) != 1:
                raise ValueError("stack_seeds: LayerNorm must have an elementwise affine over one feature dim")
        bias = _stack([n.bias for n in norms]) if norms[0].bias is not None else None
        return cls(_stack([n.weight for n in norms]), bias, norms[0].eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K, D = self.weight.shape
        y = F.layer_norm(x, (D,), eps=self.eps)
        shape = (K,) + (1,) * (x.dim() - 2) + (D,)
        w = self.weight.view(shape)
        return y * w if self.bias is None else torch.addcmul(self.bias.view(shape), y, w)

    def unstack_into(self, norms: list[nn.Module]) -> None:
        with torch.no_grad():
            for k, n in enumerate(norms):
                n.weight.copy_(self.weight[k])
                if self.bias is not None:
                    n.bias.copy_(self.bias[k])


class StackedBlock(nn.Module):
    """One pre-norm layer for K seeds: x + attn(norm(x)), then x + mlp(norm(x)).
    x [K, B, L, D] -> [K, B, L, D]."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        mixers = [b.part("mixer") for b in blocks]
        ffns = [b.part("ffn") for b in blocks]
        m0, f0 = mixers[0], ffns[0]
        self.heads, self.causal = m0.heads, m0.causal
        self.norm1 = StackedLayerNorm.from_norms([b.path("mixer").norm_in for b in blocks])
        self.q = StackedLinear.from_linears([m.q_proj for m in mixers])
        self.k = StackedLinear.from_linears([m.k_proj for m in mixers])
        self.v = StackedLinear.from_linears([m.v_proj for m in mixers])
        self.o = StackedLinear.from_linears([m.o_proj for m in mixers])
        self.norm2 = StackedLayerNorm.from_norms([b.path("ffn").norm_in for b in blocks])
        self.fc1 = StackedLinear.from_linears([f.fc1 for f in ffns])
        self.fc2 = StackedLinear.from_linears([f.fc2 for f in ffns])
        self.act = f0.act

    def attention(self, h: torch.Tensor) -> torch.Tensor:
        K, B, L, D = h.shape
        H = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:  # [K, B, L, D] -> [K*B, H, L, Dh]
            return t.view(K * B, L, H, D // H).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)), split(self.v(h)), is_causal=self.causal)
        return self.o(out.transpose(1, 2).reshape(K, B, L, D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))

    def unstack_into(self, blocks: list[nn.Module]) -> None:
        mixers = [b.part("mixer") for b in blocks]
        ffns = [b.part("ffn") for b in blocks]
        self.norm1.unstack_into([b.path("mixer").norm_in for b in blocks])
        self.norm2.unstack_into([b.path("ffn").norm_in for b in blocks])
        for name, attr in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "o_proj")):
            getattr(self, name).unstack_into([getattr(m, attr) for m in mixers])
        self.fc1.unstack_into([f.fc1 for f in ffns])
        self.fc2.unstack_into([f.fc2 for f in ffns])


class StackedViT(nn.Module):
    """K plain ViTs as one module. x [K, B, C, H, W] (or [K, B, H, W] with one channel)
    -> logits [K, B, classes]; seed k's batch x[k] runs through seed k's weights only."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        _check(models)
        self.num_seeds = len(models)
        enc0 = models[0].encoder
        self.channels, self.image_size, self.patch_size = enc0.channels, enc0.image_size, enc0.patch_size
        convs = [m.encoder.proj for m in models]
        self.patch = StackedLinear(_stack([c.weight.flatten(1) for c in convs]),
                                   _stack([c.bias for c in convs]) if convs[0].bias is not None else None)
        self.cls = _stack([m.encoder.cls for m in models]) if enc0.cls is not None else None  # [K, 1, 1, D]
        self.pos = _stack([m.position.weight[None, : enc0.num_tokens] for m in models])  # [K, 1, L, D]
        self.blocks = nn.ModuleList(StackedBlock([m.stack.blocks[i] for m in models]) for i in range(len(models[0].stack.blocks)))
        self.final_norm = StackedLayerNorm.from_norms([m.final_norm for m in models]) if models[0].final_norm is not None else None
        self.head = StackedLinear.from_linears([m.head.fc for m in models])

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """[K, B, C, H, W] -> [K, B, nH*nW, C*ph*pw], in the Conv2d weight's (C, ph, pw) order."""
        K, B, C, H, W = images.shape
        ph, pw = self.patch_size
        x = images.view(K, B, C, H // ph, ph, W // pw, pw).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(K, B, (H // ph) * (W // pw), C * ph * pw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and self.channels == 1:
            x = x[:, :, None]
        expected = (self.num_seeds, self.channels, *self.image_size)
        if x.dim() != 5 or (x.shape[0], *x.shape[2:]) != expected:
            raise ValueError(f"StackedViT expects images [{self.num_seeds}, batch, {self.channels}, "
                             f"{self.image_size[0]}, {self.image_size[1]}], got {list(x.shape)}")
        K, B = x.shape[:2]
        tokens = self.patch(self.patches(x))  # [K, B, P, D]
        if self.cls is not None:
            tokens = torch.cat([self.cls.expand(K, B, 1, -1).to(tokens.dtype), tokens], dim=2)
        tokens = tokens + self.pos.to(tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens)
        if self.final_norm is not None:
            tokens = self.final_norm(tokens)
        return self.head(tokens[:, :, 0])

    def unstack_into(self, models: list[nn.Module]) -> None:
        """Copy the stacked weights back into K models of the same configuration."""
        if len(models) != self.num_seeds:
            raise ValueError(f"unstack_into: {len(models)} models for {self.num_seeds} seeds")
        with torch.no_grad():
            for k, m in enumerate(models):
                m.encoder.proj.weight.copy_(self.patch.weight[k].view_as(m.encoder.proj.weight))
                if self.patch.bias is not None:
                    m.encoder.proj.bias.copy_(self.patch.bias[k])
                if self.cls is not None:
                    m.encoder.cls.copy_(self.cls[k])
                m.position.weight[: self.pos.shape[2]].copy_(self.pos[k, 0])
        for i, block in enumerate(self.blocks):
            block.unstack_into([m.stack.blocks[i] for m in models])
        if self.final_norm is not None:
            self.final_norm.unstack_into([m.final_norm for m in models])
        self.head.unstack_into([m.head.fc for m in models])


def _refuse(what: str, module: object) -> ValueError:
    return ValueError(f"stack_seeds: {what} {type(module).__name__} is not supported; only the plain ViT's parts "
                      "(PatchEncoder without conv_stem, LearnedPosition, pre-norm Block of SoftmaxAttention + MLP, "
                      "LayerNorm, ClsHead) can be stacked")


def _check(models: list[nn.Module]) -> None:
    """Every model a plain ViT of one configuration, with nothing the stacked forward would skip."""
    if not models:
        raise ValueError("stack_seeds: no models")
    for m in models:
        if type(m) is not AnyFormer:
            raise _refuse("model", m)
        if type(m.encoder) is not PatchEncoder:
            raise _refuse("encoder", m.encoder)
        conv = m.encoder.proj
        if type(conv) is not nn.Conv2d or conv.kernel_size != conv.stride or conv.padding != (0, 0) or conv.groups != 1:
            raise _refuse("patch projection", conv)
        if type(m.position) is not LearnedPosition:
            raise _refuse("position", m.position)
        if type(m.head) is not ClsHead:
            raise _refuse("head", m.head)
        c = m.config
        if c.dropout or c.drop_path or c.path_scale or c.layout != "sequential" or c.norm.placement != "pre":
            raise ValueError("stack_seeds: needs dropout 0, drop_path 0, no path_scale, sequential layout and pre-norm "
                             f"(got dropout {c.dropout}, drop_path {c.drop_path}, path_scale {c.path_scale}, "
                             f"layout {c.layout!r}, placement {c.norm.placement!r})")
        stack = m.stack
        if len(stack.transitions) or stack.dropped or stack.skip or stack.layer_blocks != list(range(len(stack.blocks))):
            raise ValueError("stack_seeds: needs a plain layer schedule (no transitions, dropped, pruned or shared layers)")
        if m.head.drop.p:
            raise ValueError("stack_seeds: head dropout must be 0")
        for block in stack.blocks:
            if type(block) is not Block:
                raise _refuse("block", block)
            if block.path_names != ("mixer", "ffn"):
                raise ValueError(f"stack_seeds: block paths {block.path_names} are not ('mixer', 'ffn')")
            mixer, ffn = block.part("mixer"), block.part("ffn")
            if type(mixer) is not SoftmaxAttention:
                raise _refuse("mixer", mixer)
            if mixer.position is not None or mixer.attn_dropout or mixer.dim % mixer.heads or mixer.kv_heads != mixer.heads:
                raise ValueError("stack_seeds: softmax attention must have no position inside attention, no attention dropout "
                                 "and kv_heads equal to heads")
            if type(ffn) is not MLP:
                raise _refuse("ffn", ffn)
            if ffn.drop.p:
                raise ValueError("stack_seeds: mlp dropout must be 0")
    shapes = [[(n, tuple(p.shape)) for n, p in m.named_parameters()] for m in models]
    if any(s != shapes[0] for s in shapes[1:]) or any(m.config.heads != models[0].config.heads for m in models):
        raise ValueError("stack_seeds: the models are not identically configured (parameter names or shapes differ)")
    acts = {m.stack.blocks[0].part("ffn").act for m in models}
    if len(acts) != 1:
        raise ValueError("stack_seeds: the models' mlp activations differ")


def stack_seeds(models: list[nn.Module]) -> StackedViT:
    """K identically configured plain ViTs (preset `vit`) -> one StackedViT holding copies
    of their weights along a leading seed axis. forward(x [K, B, ...]) -> [K, B, classes]."""
    return StackedViT(list(models))

