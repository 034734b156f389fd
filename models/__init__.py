"""Model registry: every model is a config dataclass plus an ``nn.Module``, registered by name
(``registry.py``). Importing this package imports each of its modules, so a new model is one new module
that registers itself; the registry's first lookup imports the modules named in ``$MRFBENCH_PLUGINS``
(``mrfbench.plugins``), for models kept outside the package."""

from mrfbench.models.base import LossOutput, ModelConfig, MultimodalVAE
from mrfbench.models.registry import MODELS, build_model, get_model_class, register_model
from mrfbench.plugins import discover

discover(__name__, __path__)

__all__ = ["MODELS", "LossOutput", "ModelConfig", "MultimodalVAE", "build_model", "get_model_class", "register_model"]
