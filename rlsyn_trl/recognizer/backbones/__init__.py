"""The paper's downstream backbones as ``transformers`` models, registered with the Auto classes so a saved one
loads with ``AutoModelForImageClassification.from_pretrained``: IResNet (faces) and the BNNeck ReID head over a
ResNet or a ViT (persons)."""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .iresnet import (
    IRESNET_LAYERS,
    IResNetConfig,
    IResNetForImageClassification,
    IResNetModel,
    iresnet_config,
)
from .reid import BNNeckConfig, BNNeckForImageClassification, set_last_stride

for _config, _model, _classifier in (
    (IResNetConfig, IResNetModel, IResNetForImageClassification),
    (BNNeckConfig, None, BNNeckForImageClassification),
):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    if _model is not None:
        AutoModel.register(_config, _model, exist_ok=True)
    AutoModelForImageClassification.register(_config, _classifier, exist_ok=True)

__all__ = [
    "IRESNET_LAYERS",
    "BNNeckConfig",
    "BNNeckForImageClassification",
    "IResNetConfig",
    "IResNetForImageClassification",
    "IResNetModel",
    "iresnet_config",
    "set_last_stride",
]
