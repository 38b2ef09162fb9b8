"""The recognizer model: a backbone (tiny ResNet, identity encoder or any image classifier) with its identity loss
(cross-entropy or CosFace, optionally a batch-hard triplet term), and the training-time augmentation."""

from __future__ import annotations

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import CosFaceLoss, TripletMarginLoss
from pytorch_metric_learning.miners import BatchHardMiner
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    PreTrainedModel,
    ResNetConfig,
    ResNetForImageClassification,
)
from transformers.modeling_outputs import ImageClassifierOutput

from ..encoders import IdentityEncoder, IdentityEncoderConfig
from ..utils.model_sources import EMBEDDED_MODELS, resolve_pretrained_folder
from .backbones import (
    IRESNET_LAYERS,
    BNNeckForImageClassification,
    IResNetConfig,
    IResNetForImageClassification,
    iresnet_config,
)
from .config import TINY_MODEL, RecognizerConfig


class IdentityRecognizer(nn.Module):
    """An image classifier plus, for CosFace, the class centres; ``logits`` are the class scores used to identify.

    With cross-entropy the scores are the backbone's logits. With CosFace they are the cosines between the pooled
    embedding and each class centre of a ``pytorch_metric_learning`` ``CosFaceLoss`` (whose ``W`` lives here, so
    the optimizer and the virtual selection step update it); the margin and scale enter only the training loss.
    With ``triplet_weight`` > 0 the loss adds a batch-hard triplet term on the pooled embedding (the cross-entropy
    scores then come from the backbone's classifier on that same embedding); the per-sample identity loss, which
    selection scores samples by, stays the classification loss alone.

    With ``synthetic_trains_backbone=False`` the embeddings of training images flagged ``synthetic`` are detached:
    their loss moves the class centres (and the triplet term's other side) but never the backbone. With
    ``synthetic_moves_centres=False`` it is the other way round for the CosFace head: synthetic images are scored
    against detached centres, so the centres are placed by the real images alone and the samples teach the backbone
    to map their variation onto them (samples whose mean sits off the real photo would otherwise pull the centre).
    """

    def __init__(
        self,
        backbone: PreTrainedModel,
        cosface: CosFaceLoss | None = None,
        flip_test: bool = True,
        triplet_weight: float = 0.0,
        triplet_margin: float = 0.3,
        synthetic_trains_backbone: bool = True,
        label_smoothing: float = 0.0,
        synthetic_moves_centres: bool = True,
    ) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.backbone, self.cosface, self.flip_test = backbone, cosface, flip_test
        self.synthetic_trains_backbone = synthetic_trains_backbone
        self.synthetic_moves_centres = synthetic_moves_centres
        self.triplet_weight = triplet_weight
        self.triplet = TripletMarginLoss(margin=triplet_margin) if triplet_weight else None
        self.miner = BatchHardMiner() if triplet_weight else None

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled embedding, ``[N, D]``."""
        if isinstance(self.backbone, IdentityEncoder):
            return self.backbone(pixel_values)
        if isinstance(self.backbone, BNNeckForImageClassification):  # f_t in training, BN(f_t) in evaluation
            return self.backbone.embed(pixel_values)
        pooled = getattr(self.backbone.base_model(pixel_values=pixel_values), "pooler_output", None)
        if pooled is None:
            raise ValueError(
                f"{type(self.backbone.base_model).__name__} returns no pooled embedding for the CosFace head; "
                "use loss='cross_entropy' with this model."
            )
        return pooled.flatten(1)

    def scores(
        self, pixel_values: torch.Tensor, detach: torch.Tensor | None = None, frozen: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Class scores (the classifier's logits, or the cosines to the CosFace class centres) and, when a loss
        needs it, the pooled embedding they come from; rows flagged in ``detach`` pass no gradient to the backbone,
        rows flagged in ``frozen`` none to the CosFace centres."""
        if self.cosface is None and self.triplet is None:
            return self.backbone(pixel_values=pixel_values).logits, None
        embeddings = self.embed(pixel_values)
        if detach is not None:
            embeddings = torch.where(detach[:, None], embeddings.detach(), embeddings)
        if self.cosface is not None:
            cosine = self.cosface.get_cosine(embeddings)
            if frozen is not None:
                fixed = self.cosface.distance(embeddings, self.cosface.W.detach().t())  # get_cosine, centres detached
                cosine = torch.where(frozen[:, None], fixed, cosine)
            return cosine, embeddings
        classify = getattr(self.backbone, "classify", self.backbone.classifier)  # a BNNeck normalises first
        return classify(embeddings), embeddings

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, synthetic: torch.Tensor | None = None
    ) -> ImageClassifierOutput:
        detach = None if self.synthetic_trains_backbone or not self.training else synthetic
        frozen = None if self.synthetic_moves_centres or not self.training else synthetic
        logits, embeddings = self.scores(pixel_values, detach, frozen)
        if self.flip_test and not self.training:
            logits = (logits + self.scores(pixel_values.flip(-1))[0]) / 2
        loss = None if labels is None else self.per_sample_loss(ImageClassifierOutput(logits=logits), labels).mean()
        if loss is not None and self.triplet is not None:
            loss = loss + self.triplet_weight * self.triplet(embeddings, labels, self.miner(embeddings, labels))
        return ImageClassifierOutput(loss=loss, logits=logits)

    def per_sample_loss(self, outputs: ImageClassifierOutput, labels: torch.Tensor) -> torch.Tensor:
        """Identity loss of each sample (the l of the selection utility), from the model's outputs."""
        if self.cosface is None:
            return F.cross_entropy(outputs.logits, labels, reduction="none", label_smoothing=self.label_smoothing)
        margins = self.cosface.margin * F.one_hot(labels, outputs.logits.shape[1]).to(outputs.logits.dtype)
        return F.cross_entropy(self.cosface.scale_logits(outputs.logits - margins), labels, reduction="none")


def build_backbone(config: RecognizerConfig, label_names: list[str]) -> PreTrainedModel:
    """The configured backbone: the tiny ResNet (always from scratch), an identity encoder, or any
    ``AutoModelForImageClassification``; pretrained weights unless ``from_scratch``."""
    id2label = dict(enumerate(label_names))
    label2id = {name: index for index, name in id2label.items()}
    if config.model == TINY_MODEL:
        return ResNetForImageClassification(
            ResNetConfig(
                num_channels=config.channels,
                embedding_size=config.embedding_size,
                hidden_sizes=list(config.hidden_sizes),
                depths=[1] * len(config.hidden_sizes),
                layer_type="basic",
                id2label=id2label,
                label2id=label2id,
            )
        )
    if config.model in IRESNET_LAYERS:  # the face baselines' backbone, always from scratch
        size = {"num_channels": config.channels, "image_size": list(config.resolution)}
        return IResNetForImageClassification(iresnet_config(config.model, **size, id2label=id2label, label2id=label2id))
    source = str(resolve_pretrained_folder(config.model)) if config.model in EMBEDDED_MODELS else config.model
    if config.reid_neck:
        return BNNeckForImageClassification.from_backbone(
            source, config.last_stride, config.from_scratch, config.resolution, id2label=id2label, label2id=label2id
        )
    architecture = AutoConfig.from_pretrained(source, id2label=id2label, label2id=label2id)
    if isinstance(architecture, IResNetConfig):  # its head's input follows the image size
        architecture.image_size = list(config.resolution)
    if isinstance(architecture, IdentityEncoderConfig):
        if config.loss != "cosface":
            raise ValueError(f"{config.model} is an identity encoder without a classifier; use loss='cosface'.")
        return IdentityEncoder(architecture) if config.from_scratch else IdentityEncoder.from_pretrained(source)
    if config.from_scratch:
        return AutoModelForImageClassification.from_config(architecture)
    return AutoModelForImageClassification.from_pretrained(source, config=architecture, ignore_mismatched_sizes=True)


@torch.no_grad()
def imprint_centres(recognizer: IdentityRecognizer, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Set each CosFace class centre to the mean normalised embedding of its images (weight imprinting), so a
    pretrained backbone starts as its own nearest-class-mean classifier rather than from random centres."""
    was_training = recognizer.training
    recognizer.eval()
    embeddings = torch.cat([F.normalize(recognizer.embed(chunk), dim=-1) for chunk in images.split(256)])
    recognizer.train(was_training)
    centres = torch.zeros_like(recognizer.cosface.W.t()).index_add_(0, labels, embeddings)
    present = torch.bincount(labels, minlength=len(centres)) > 0
    recognizer.cosface.W[:, present] = F.normalize(centres[present], dim=-1).t()


def build_recognizer(config: RecognizerConfig, label_names: list[str]) -> IdentityRecognizer:
    """The configured backbone with the configured identity loss."""
    backbone = build_backbone(config, label_names)
    cosface = None
    if config.loss == "cosface":
        probe = torch.zeros(1, config.channels, *config.resolution)
        with torch.no_grad():
            width = IdentityRecognizer(backbone).eval().embed(probe).shape[1]
        cosface = CosFaceLoss(len(label_names), width, margin=config.cosface_margin, scale=config.cosface_scale)
    return IdentityRecognizer(
        backbone,
        cosface,
        flip_test=config.flip_test,
        triplet_weight=config.triplet_weight,
        triplet_margin=config.triplet_margin,
        synthetic_trains_backbone=config.synthetic_trains_backbone,
        label_smoothing=config.label_smoothing,
        synthetic_moves_centres=config.synthetic_moves_centres,
    )


def build_augmentation(config: RecognizerConfig) -> nn.Sequential:
    """Training-time kornia augmentation on batches in ``[-1, 1]`` (brightness is a shift, contrast a factor)."""
    size = tuple(config.resolution)
    layers: list[nn.Module] = []
    if config.flip:
        layers.append(K.RandomHorizontalFlip())
    if config.crop_padding:
        layers.append(K.RandomCrop(size, padding=config.crop_padding, padding_mode="reflect"))
    if config.affine_degrees or config.affine_scale:
        zoom = (1 - config.affine_scale, 1 + config.affine_scale)
        layers.append(K.RandomAffine(degrees=config.affine_degrees, scale=zoom, padding_mode="border", p=1.0))
    if config.brightness:
        layers.append(K.RandomBrightness((1 - config.brightness, 1 + config.brightness), clip_output=False))
    if config.contrast:
        layers.append(K.RandomContrast((1 - config.contrast, 1 + config.contrast), clip_output=False))
    if config.random_erasing:
        layers.append(K.RandomErasing(p=config.random_erasing))
    return nn.Sequential(*layers)
