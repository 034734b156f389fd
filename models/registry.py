"""The model registry: every model is a config dataclass plus an ``nn.Module``, registered by name."""

from __future__ import annotations

import dataclasses

from mrfbench.errors import UsageError
from mrfbench.models.base import MultimodalVAE
from mrfbench.plugins import Registry

MODELS = Registry("model")  # name -> MultimodalVAE subclass


def register_model(name: str):
    """Class decorator adding a ``MultimodalVAE`` subclass to the registry under ``name``."""

    def add(cls: type[MultimodalVAE]) -> type[MultimodalVAE]:
        cls.name = name
        MODELS.add(name, cls)
        return cls

    return add


def get_model_class(name: str) -> type[MultimodalVAE]:
    return MODELS.named(name)


def build_model(name: str, **options) -> MultimodalVAE:
    """Instantiate model ``name`` from config fields; unknown fields are a usage error."""
    cls = get_model_class(name)
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise UsageError(f"model '{name}' has no option(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}")
    return cls(cls.config_class(**options))
