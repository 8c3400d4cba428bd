"""Valid ranges of component options, declared on each component's `__init__` parameters.

The registry reads a parameter's annotation into the component's option schema, so a range
written here is checked before the component is built, named in the one-line ConfigError
('model.ffn.dropout must be in [0, 1), got 1.5') and shown by `anyformer show`:

    def __init__(self, dim: int, dropout: Dropout = 0.0, ratio: PositiveFloat = 4.0) -> None:

Float options are finite everywhere (the registry's rule); a bound belongs here when it is
the option's meaning (a probability, a momentum), or where values past it only overflow.
"""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

# Past this no tensor dimension fits torch's int64 sizes (a ratio of 1e30 made nn.Linear raise
# a raw TypeError of many lines): a width or token count computed from options is checked
# against it; smaller absurd sizes are the memory guard's (nn/footprint.py) to refuse.
MAX_WIDTH = 2 ** 62

# A dropout probability: 1 would zero every activation and divide the kept ones by 0.
Dropout = Annotated[float, Field(ge=0.0, lt=1.0, description="dropout probability in training")]
# A share of something: 0 and 1 both meaningful (a schedule fraction, a BatchNorm momentum).
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
# Scales, widths relative to dim, epsilons, temperatures: zero is degenerate or divides by 0.
PositiveFloat = Annotated[float, Field(gt=0.0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]
# An epsilon added to a variance or a denominator. 1e-12 (BERT's LayerNorm) is the smallest
# in use; below it a channel whose variance is 0 (one seen in eval, a dropped-out one) is
# scaled by 1 / sqrt(eps) > 1e6 and the next layers overflow float32.
Epsilon = Annotated[float, Field(ge=1e-12, description="added to the variance / denominator for numerical stability")]
# Sizes and counts of things that must exist (heads, experts, ranks, window widths).
Count = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
# The std of a random init. Past 10 the first forward pass already leaves float32 after a
# few products (squares of 1e19 overflow), and no published init comes near it.
InitStd = Annotated[float, Field(ge=0.0, le=10.0, description="standard deviation of the random init")]
# A geometric base of position frequencies (sinusoidal, rotary): base ** (i / d) must grow
# with i, so base > 1; base 1 gives every dimension the same frequency.
FrequencyBase = Annotated[float, Field(gt=1.0, description="base of the geometric frequency sequence")]
# Random query-key matrices W = qk_mean * I + qk_std * G (Fu et al. 2023) score unit tokens by
# about qk_mean + qk_std * N(0, 1). The random-feature head exponentiates the scores, and exp
# leaves float32 at 88: within these bounds the largest of a million scores, |qk_mean| + 5 qk_std,
# stays below 50. The paper samples qk_std 0.5 and a mean of about 1.
QKMean = Annotated[float, Field(ge=-8.0, le=8.0,
                                description="mean added on the diagonal of the random query-key matrices (biased sampling)")]
QKStd = Annotated[float, Field(ge=0.0, le=8.0, description="standard deviation of the entries of the random query-key matrices")]
