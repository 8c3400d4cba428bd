"""The distillation objective: ScaleKD-lite ("ScaleKD: Strong Vision Transformers Could Be
Excellent Teachers", Fan et al. 2024; reference code deep-optimization/ScaleKD).

loss = (1 - alpha) * task loss
       + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))          (logits)
       + beta * sum over pairs (s, t) of [ d(CAP_direct(h_s), h_t)
                                           + d(dc(CAP_alt(h_s)), dc(h_t)) ]      (DFM)

h_s [B, Ls, Ds]: the student's layer-s output; h_t [B, Lt, Dt]: the teacher's layer t.
CAP (cross-attention projector): Lt learnable queries of width Dt attend to the student's
tokens, so width, depth, mixer and token count may all differ. DFM (dual-view feature
mimicking): the direct view, and the alternative view with the direct component removed
(dc: the mean over tokens, the zero frequency of the token axis). d: each token L2-normalized
over channels, the squared distance summed over channels, averaged over real tokens and the
batch. TPP (teacher parameter perception), on by default: a pair whose teacher layer t is
not the last sends each projection through the frozen teacher's layers t+1.. (gradients
reach the projector and the student, never the teacher) and mimics the teacher's last layer.

Simplified relative to the paper and the reference code:
- CAP's student branch is a token-wise Linear + ReLU and a learned position per token, where
  the reference runs a 3x3 convolution + BatchNorm + ReLU over the student's feature map:
  anyformer's tokens need not lie on a grid (text, series, a [CLS] token) and BatchNorm's
  running statistics would make the objective differ between steps of equal inputs. Global
  attention only (the reference's window option is left out); no query taken from another
  pair's projection (the reference's `self_query=False` chaining of stage 4 to stage 3).
- The alternative view subtracts the token mean (over every real token, prefix tokens such as
  [CLS] included) where the reference zeroes the (0, 0) coefficient of a 2-D DCT of the
  feature map: the same operation for grid tokens, and defined for any token sequence.
- d averages over tokens, where the reference sums over them, so `beta` does not scale with
  the token count; one weight beta for both views (the reference: 0.08 and 0.06).
- TPP runs the projections through the teacher's remaining layers only (not its final norm
  and head: no logit loss on the proxy path, as the reference's feature loss) and only for
  teachers of the plain layer-stack arch without transitions.
- Logits: KL for single-label classification and language modelling (real target positions
  only); other problems distil features only (alpha must be 0). The reference writes the
  cross-entropy to the teacher's soft labels, which is this KL plus the teacher's entropy (a
  constant): the same gradients.
As the reference: two projectors per pair (one per view), queries through Linear + ReLU, the
attention sharpened by 5, LayerNorm then a residual MLP, the teacher frozen in eval mode.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from anyformer.tasks.base import Batch, Task

# The reference's CAP sharpens its attention: logits scaled by this on top of 1/sqrt(head_dim).
SHARPNESS = 5.0
# Problems whose outputs are logits of one softmax over the last axis.
SOFTMAX_PROBLEMS = ("classification", "lm")


class CrossAttentionProjector(nn.Module):
    """CAP: student tokens [B, Ls, Ds] (mask Bool[B, Ls] | None, True = real) -> [B, Lt, Dt].
    Learnable queries, one per teacher position, attend to the student's tokens (each with a
    learned position); then LayerNorm and a residual MLP, as the reference's projector."""

    def __init__(self, student_dim: int, teacher_dim: int, student_tokens: int, teacher_tokens: int,
                 heads: int = 1) -> None:
        super().__init__()
        if teacher_dim % heads:
            raise ValueError(f"teacher width {teacher_dim} is not divisible by {heads} heads")
        self.heads = heads
        self.student = nn.Sequential(nn.Linear(student_dim, student_dim), nn.ReLU())
        # Tables as embeddings: the optimizer leaves them undecayed, as it does position tables.
        self.position = nn.Embedding(student_tokens, student_dim)
        self.query = nn.Embedding(teacher_tokens, teacher_dim)
        nn.init.trunc_normal_(self.position.weight, std=0.02)
        nn.init.trunc_normal_(self.query.weight, std=0.02)
        self.query_in = nn.Sequential(nn.Linear(teacher_dim, teacher_dim), nn.ReLU())
        self.q_proj = nn.Linear(teacher_dim, teacher_dim)
        self.k_proj = nn.Linear(student_dim, teacher_dim)
        self.v_proj = nn.Linear(student_dim, teacher_dim)
        self.o_proj = nn.Linear(teacher_dim, teacher_dim)
        self.norm = nn.LayerNorm(teacher_dim)
        self.mlp = nn.Sequential(nn.Linear(teacher_dim, 4 * teacher_dim), nn.GELU(), nn.Linear(4 * teacher_dim, teacher_dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, length: int | None = None) -> torch.Tensor:
        """x [B, Ls, Ds] -> [B, length or Lt, Dt] (the first `length` queries)."""
        B, L, _ = x.shape
        if L > self.position.num_embeddings:
            raise ValueError(f"{L} student tokens; the projector was built for {self.position.num_embeddings}")
        keys = self.student(x) + self.position.weight[:L]
        queries = self.query_in(self.query.weight[:length]).expand(B, -1, -1)
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # noqa: E731  [B, H, L, d]
        q, k, v = split(self.q_proj(queries)), split(self.k_proj(keys)), split(self.v_proj(keys))
        attend = mask[:, None, None, :] if mask is not None else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, scale=SHARPNESS / math.sqrt(q.shape[-1]))
        out = self.norm(self.o_proj(out.transpose(1, 2).flatten(2)))
        return out + self.mlp(out)


def remove_dc(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """DFM's alternative view: x [B, L, D] minus its mean over the (real) tokens, i.e. the
    zero-frequency component of the token axis removed; padding positions stay as they are."""
    if mask is None:
        return x - x.mean(dim=1, keepdim=True)
    w = mask.unsqueeze(-1).to(x.dtype)
    return x - w * (x * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1)


def feature_distance(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Both [B, L, D]: each token L2-normalized over channels, the squared distance summed
    over channels, averaged over the real tokens (mask Bool[B, L]) and the batch -> []."""
    d = (F.normalize(student.float(), dim=-1) - F.normalize(teacher.float(), dim=-1)).pow(2).sum(-1)
    if mask is None:
        return d.mean()
    return (d * mask).sum() / mask.sum().clamp_min(1)


def logit_distance(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                   valid: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)) over the last axis, averaged over
    the predictions ([B, C] or, for LM, [B, L, V] with `valid` Bool[B, L]) -> []."""
    log_s = F.log_softmax(student.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher.float() / temperature, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)
    kl = kl[valid] if valid is not None else kl
    return temperature ** 2 * kl.mean()


def encoder_mask(model: nn.Module, batch: Batch) -> torch.Tensor | None:
    """The mask of the model's encoder tokens Bool[B, L] (a padded batch), else None."""
    if batch.mask is None:
        return None
    with torch.no_grad():
        return model.encoder(batch.inputs, batch.mask)[1]


def token_mask(mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """Which of a hidden state's `length` tokens are real: the encoder's `mask` when the
    layer keeps the encoder's tokens, None (all real) otherwise (a layer that pooled them)."""
    return mask if mask is not None and mask.shape[1] == length else None


class DistillObjective(nn.Module):
    """The training loss of a student distilled from `teacher` (module docstring): called by
    the Trainer as objective(student, batch, output, hidden) -> loss []. Its parameters are
    the projectors (two per layer pair: direct and alternative view); the teacher is held
    frozen outside the submodules, so it is neither trained nor checkpointed.

    pairs: (student layer, teacher layer) with non-negative indices; shapes: per pair the
    student's (Ls, Ds) and the teacher's (Lt, Dt) hidden sizes; perceive: per pair, whether
    the projection goes through the teacher's later layers (TPP)."""

    def __init__(self, teacher: nn.Module, task: Task, alpha: float, temperature: float, feature_weight: float,
                 pairs: Sequence[tuple[int, int]], shapes: Sequence[tuple[tuple[int, int], tuple[int, int]]],
                 perceive: Sequence[bool], heads: int) -> None:
        super().__init__()
        # Plain attributes, not submodules: the teacher is never trained, moved by .to() or saved.
        object.__setattr__(self, "teacher", teacher.eval().requires_grad_(False))
        object.__setattr__(self, "task", task)
        self.alpha, self.temperature, self.feature_weight = float(alpha), float(temperature), float(feature_weight)
        self.pairs, self.perceive = [tuple(p) for p in pairs], list(perceive)
        self.direct = nn.ModuleList()
        self.alternative = nn.ModuleList()
        if self.feature_weight:
            for (ls, ds), (lt, dt) in shapes:
                self.direct.append(CrossAttentionProjector(ds, dt, ls, lt, heads))
                self.alternative.append(CrossAttentionProjector(ds, dt, ls, lt, heads))

    def _teacher(self, batch: Batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        first = next(self.teacher.parameters(), None)
        if first is not None and first.device != batch.target.device:
            self.teacher.to(batch.target.device)  # follows the student's device on first use
        with torch.no_grad():
            return self.teacher(batch.inputs, **({"mask": batch.mask} if batch.mask is not None else {}), return_hidden=True)

    def _perceived(self, projected: torch.Tensor, t: int, mask: torch.Tensor | None) -> torch.Tensor:
        """TPP: the projection of teacher layer t's output through the teacher's layers t+1.."""
        stack = self.teacher.stack
        return stack.run(t + 1, stack.depth, projected, mask)[0]

    def forward(self, model: nn.Module, batch: Batch, output: torch.Tensor, hidden: list[torch.Tensor]) -> torch.Tensor:
        task_loss = self.task.loss(output.float(), batch.target)
        loss = task_loss if not self.alpha else (1 - self.alpha) * task_loss
        if not self.alpha and not self.feature_weight:
            return loss
        t_out, t_hidden = self._teacher(batch)
        if self.alpha:
            valid = batch.target != -100 if self.task.problem == "lm" else None
            loss = loss + self.alpha * logit_distance(output, t_out, self.temperature, valid)
        if self.feature_weight:
            features: Any = 0.0
            s_enc, t_enc = encoder_mask(model, batch), encoder_mask(self.teacher, batch)
            for i, (s, t) in enumerate(self.pairs):
                h_s = hidden[s]
                target = t_hidden[-1] if self.perceive[i] else t_hidden[t]
                s_mask, t_mask = token_mask(s_enc, h_s.shape[1]), token_mask(t_enc, t_hidden[t].shape[1])
                views = []
                for projector in (self.direct[i], self.alternative[i]):
                    p = projector(h_s, s_mask, t_hidden[t].shape[1])
                    views.append(self._perceived(p, t, t_mask) if self.perceive[i] else p)
                features = features + feature_distance(views[0], target, t_mask)
                features = features + feature_distance(remove_dc(views[1], t_mask), remove_dc(target, t_mask), t_mask)
            loss = loss + self.feature_weight * features
        return loss
