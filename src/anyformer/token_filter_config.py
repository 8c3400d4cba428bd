"""The config of the learned token filter (a ModelConfig field), apart from config.py so that
file stays one screenful per part."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from anyformer import registry
from anyformer.errors import ConfigError, suggest


class TokenFilterConfig(BaseModel):
    """A learned token filter before the first layer (Wang et al. 2023, nn/token_filter.py):
    `keep` a share of each sample's tokens, or those whose predicted loss increase is at
    least `threshold`; [CLS] is always kept. `anyformer compress --method token-filter` trains it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    keep: float | None = Field(None, description="share of each sample's tokens kept, in (0, 1] (1: all)")
    threshold: float | None = Field(None, description="keep the tokens whose predicted loss increase when masked is at least this")
    hidden: int = Field(64, description="width of the filter MLP's hidden layer")

    @model_validator(mode="before")
    @classmethod
    def _known(cls, value: Any) -> Any:
        # Named here: the generic error path cannot see through the optional field's type.
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"model.token_filter must be a mapping such as {{keep: 0.5}} or {{threshold: 0.01}}, got {value!r}")
        valid = sorted(cls.model_fields)
        for key, option in value.items():
            if key not in valid:
                raise ConfigError(f"model.token_filter: unknown field {key!r}{suggest(str(key), valid)}; valid: {', '.join(valid)}")
            if isinstance(option, bool):
                raise ConfigError(f"model.token_filter.{key} must be a number, got {option!r}")
        return value

    @model_validator(mode="after")
    def _check(self) -> "TokenFilterConfig":
        if (self.keep is None) == (self.threshold is None):
            both = "not both" if self.keep is not None else "one of them"
            raise ConfigError(f"model.token_filter: give keep (share of tokens kept, in (0, 1]) or threshold (least predicted loss increase), {both}")
        if self.keep is not None and not 0.0 < self.keep <= 1.0:
            raise ConfigError(f"model.token_filter.keep must be in (0, 1] (the share of tokens kept), got {self.keep!r}")
        if self.hidden < 1:
            raise ConfigError(f"model.token_filter.hidden must be >= 1, got {self.hidden!r}")
        return self

    def check_model(self, causal: bool, arch: str) -> None:
        """What the model config alone refuses of a filter; the parts' own capabilities are checked at build."""
        if causal:
            raise ConfigError("model.token_filter: a causal model predicts at every position, so none can be dropped; "
                              "drop model.token_filter or set model.causal false")
        if not getattr(registry.get("arch", arch), "supports_token_filter", False):
            raise ConfigError(f"model.token_filter: arch {arch!r} does not apply a token filter; use arch 'stack' or drop model.token_filter")
