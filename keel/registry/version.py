"""A model version keel registered: its name, number, run and model URI, the aliases it got
and what the promotion policy did with it (and, with ``[compress] auto``, its variant)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    model_uri: str
    aliases: list[str] = field(default_factory=list)
    decision: str = ""  # what the promotion policy did with it
    variant: str = ""  # [compress] auto: the compressed version registered from this one
    variant_decision: str = ""

    @property
    def registry_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"
