"""Model registry: every model is a config dataclass plus an ``nn.Module``, registered by name
(``registry.py``); importing this package registers the models."""

from mrfbench.models import almrf, gmrf, mmvae, mmvaeplus, mopoe, mrf, mvae, nnmrf  # noqa: F401  (register the models)
from mrfbench.models.base import LossOutput, ModelConfig, MultimodalVAE
from mrfbench.models.registry import MODELS, build_model, get_model_class, register_model

__all__ = ["MODELS", "LossOutput", "ModelConfig", "MultimodalVAE", "build_model", "get_model_class", "register_model"]
