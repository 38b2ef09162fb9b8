"""The downstream identity recognizer: a transformers image classifier trained with the ``Trainer`` on the few real
images of the target identities, optionally mixed with a synthetic set that dynamic selection reweights.

The embedded default (``model="resnet-tiny"``) is a small ``ResNetForImageClassification`` built from a
``ResNetConfig``; any ``AutoModelForImageClassification`` id or local path works too. Test accuracy comes from the
local ``identification_accuracy`` evaluate module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import datasets
import kornia.augmentation as K
import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import CosFaceLoss
from torch import nn
from transformers import (
    AutoModelForImageClassification,
    EvalPrediction,
    PreTrainedModel,
    ResNetConfig,
    ResNetForImageClassification,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.modeling_outputs import ImageClassifierOutput

from .data import dataset_to_tensors
from .metrics import load_metric
from .selection import DynamicSampleSelectionCallback, SelectionConfig

TINY_MODEL = "resnet-tiny"
LOSSES = ("cross_entropy", "cosface")


@dataclass
class RecognizerConfig(TrainingArguments, SelectionConfig):
    """Recognizer, augmentation, real/synthetic mixing and selection settings on top of ``TrainingArguments``.

    The defaults were tuned on ORL private 1-shot (split seeds 0 and 1, all held-out images): CosFace beat
    cross-entropy by about 5 points and the affine + brightness/contrast augmentation added about 4 over flip +
    pad-crop alone. The selection fields are those of :class:`~rlsyn_trl.selection.SelectionConfig` and apply
    when ``selection`` is on.
    """

    model: str = field(
        default=TINY_MODEL,
        metadata={"help": f"'{TINY_MODEL}' (small ResNet from scratch) or an AutoModelForImageClassification id/path."},
    )
    loss: str = field(default="cosface", metadata={"help": f"Identity loss, one of {LOSSES}."})
    cosface_scale: float = field(default=16.0, metadata={"help": "CosFace scale s."})
    cosface_margin: float = field(default=0.1, metadata={"help": "CosFace additive cosine margin m."})
    resolution: int = field(default=32, metadata={"help": "Square input size in pixels."})
    channels: int = field(default=1, metadata={"help": "1 (grayscale) or 3 (RGB) input channels."})
    embedding_size: int = field(default=32, metadata={"help": f"'{TINY_MODEL}' stem width."})
    hidden_sizes: list[int] = field(
        default_factory=lambda: [32, 64, 128], metadata={"help": f"'{TINY_MODEL}' stage widths (one block each)."}
    )
    flip: bool = field(default=True, metadata={"help": "Random horizontal flips in training."})
    crop_padding: int = field(default=4, metadata={"help": "Pad-and-random-crop shift in pixels (0: off)."})
    affine_degrees: float = field(default=10.0, metadata={"help": "Random rotation range in degrees (0: off)."})
    affine_scale: float = field(default=0.1, metadata={"help": "Random zoom range +/- this fraction (0: off)."})
    brightness: float = field(default=0.2, metadata={"help": "Random brightness shift range in [-1, 1] units."})
    contrast: float = field(default=0.2, metadata={"help": "Random contrast factor range 1 +/- this."})
    flip_test: bool = field(default=True, metadata={"help": "Average class scores over the image and its mirror."})
    synthetic_dataset: str | None = field(
        default=None, metadata={"help": "A synthetic dataset saved with save_to_disk (columns image, label)."}
    )
    synthetic_ratio: float | None = field(
        default=0.5,
        metadata={"help": "Fraction of synthetic images in every batch; None mixes real and synthetic uniformly."},
    )
    selection: bool = field(default=False, metadata={"help": "Reweight the synthetic images by dynamic selection."})
    output_dir: str = field(default="outputs/recognizer", metadata={"help": "Where logs and checkpoints go."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak AdamW learning rate."})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Training batch size."})
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "Evaluation batch size."})
    max_steps: int = field(default=300, metadata={"help": "Training steps."})
    weight_decay: float = field(default=5e-4, metadata={"help": "AdamW weight decay."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warm-up steps, or a fraction of max_steps if < 1."})
    optim: str = field(default="adamw_torch", metadata={"help": "Optimizer."})
    logging_steps: float = field(default=50, metadata={"help": "Log every this many steps."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpointing strategy."})
    dataloader_pin_memory: bool = field(default=False, metadata={"help": "Pin batches (tiny in-memory tensors)."})
    seed: int = field(default=0, metadata={"help": "Seed of initialisation, sampling and augmentation."})

    def __post_init__(self) -> None:
        super().__post_init__()
        SelectionConfig.__post_init__(self)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.synthetic_ratio is not None and not 0 <= self.synthetic_ratio <= 1:
            raise ValueError(f"synthetic_ratio must be in [0, 1] or None (uniform mixing), got {self.synthetic_ratio}")


class IdentityRecognizer(nn.Module):
    """An image classifier plus, for CosFace, the class centres; ``logits`` are the class scores used to identify.

    With cross-entropy the scores are the backbone's logits. With CosFace they are the cosines between the pooled
    embedding and each class centre of a ``pytorch_metric_learning`` ``CosFaceLoss`` (whose ``W`` lives here, so
    the optimizer and the virtual selection step update it); the margin and scale enter only the training loss.
    """

    def __init__(self, backbone: PreTrainedModel, cosface: CosFaceLoss | None = None, flip_test: bool = True) -> None:
        super().__init__()
        self.backbone, self.cosface, self.flip_test = backbone, cosface, flip_test

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled embedding, ``[N, D]``."""
        pooled = getattr(self.backbone.base_model(pixel_values=pixel_values), "pooler_output", None)
        if pooled is None:
            raise ValueError(
                f"{type(self.backbone.base_model).__name__} returns no pooled embedding for the CosFace head; "
                "use loss='cross_entropy' with this model."
            )
        return pooled.flatten(1)

    def scores(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Class scores: the classifier's logits, or the cosines to the CosFace class centres."""
        if self.cosface is None:
            return self.backbone(pixel_values=pixel_values).logits
        return self.cosface.get_cosine(self.embed(pixel_values))

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> ImageClassifierOutput:
        logits = self.scores(pixel_values)
        if self.flip_test and not self.training:
            logits = (logits + self.scores(pixel_values.flip(-1))) / 2
        loss = None if labels is None else self.per_sample_loss(ImageClassifierOutput(logits=logits), labels).mean()
        return ImageClassifierOutput(loss=loss, logits=logits)

    def per_sample_loss(self, outputs: ImageClassifierOutput, labels: torch.Tensor) -> torch.Tensor:
        """Identity loss of each sample (the l of the selection utility), from the model's outputs."""
        if self.cosface is None:
            return F.cross_entropy(outputs.logits, labels, reduction="none")
        margins = self.cosface.margin * F.one_hot(labels, outputs.logits.shape[1]).to(outputs.logits.dtype)
        return F.cross_entropy(self.cosface.scale_logits(outputs.logits - margins), labels, reduction="none")


def build_recognizer(config: RecognizerConfig, label_names: list[str]) -> IdentityRecognizer:
    """The configured backbone (from scratch for the tiny default) with the configured identity loss."""
    id2label = dict(enumerate(label_names))
    label2id = {name: index for index, name in id2label.items()}
    if config.model == TINY_MODEL:
        backbone = ResNetForImageClassification(
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
    else:
        backbone = AutoModelForImageClassification.from_pretrained(
            config.model, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True
        )
    cosface = None
    if config.loss == "cosface":
        probe = torch.zeros(1, config.channels, config.resolution, config.resolution)
        with torch.no_grad():
            width = IdentityRecognizer(backbone).embed(probe).shape[1]
        cosface = CosFaceLoss(len(label_names), width, margin=config.cosface_margin, scale=config.cosface_scale)
    return IdentityRecognizer(backbone, cosface, flip_test=config.flip_test)


def build_augmentation(config: RecognizerConfig) -> nn.Sequential:
    """Training-time kornia augmentation on batches in ``[-1, 1]`` (brightness is a shift, contrast a factor)."""
    size = (config.resolution, config.resolution)
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
    return nn.Sequential(*layers)


class MixedIdentityDataset(torch.utils.data.Dataset):
    """Real images (indices ``0..num_real-1``) followed by synthetic ones, as ``pixel_values``/``labels`` items.

    ``synthetic_weights`` (mean 1, one per synthetic image) is what :class:`MixedBatchSampler` draws by and what
    the selection callback updates in place.
    """

    def __init__(
        self,
        real_images: torch.Tensor,
        real_labels: torch.Tensor,
        synthetic_images: torch.Tensor | None = None,
        synthetic_labels: torch.Tensor | None = None,
    ) -> None:
        self.images = real_images if synthetic_images is None else torch.cat([real_images, synthetic_images])
        self.labels = real_labels if synthetic_labels is None else torch.cat([real_labels, synthetic_labels])
        self.num_real = len(real_labels)
        self.synthetic_weights = torch.ones(len(self.labels) - self.num_real)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.images[index], "labels": self.labels[index]}


class MixedBatchSampler(torch.utils.data.Sampler[int]):
    """Indices in consecutive blocks of ``batch_size``, each block one training batch.

    With ``synthetic_ratio`` r, a block holds ``round(r * batch_size)`` synthetic images drawn in proportion to their
    weights and real images for the rest, drawn uniformly (half/half batches beat uniform mixing in the project's
    prototype). With ``synthetic_ratio=None`` every image of the union is drawn in proportion to its weight, real
    images weighing 1 (uniform mixing). Draws are with replacement and read the weights when each block is drawn,
    so selection updates apply from the next batch on.
    """

    def __init__(
        self,
        dataset: MixedIdentityDataset,
        batch_size: int,
        synthetic_ratio: float | None,
        generator: torch.Generator,
    ) -> None:
        self.dataset, self.batch_size, self.generator = dataset, batch_size, generator
        self.num_synthetic_per_batch = (
            round(synthetic_ratio * batch_size) if synthetic_ratio is not None and len(dataset.synthetic_weights) else 0
        )
        self.uniform = synthetic_ratio is None

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size) * self.batch_size

    def _draw(self, weights: torch.Tensor, count: int) -> torch.Tensor:
        return torch.multinomial(weights, count, replacement=True, generator=self.generator)

    def _block(self) -> torch.Tensor:
        num_real, synthetic_weights = self.dataset.num_real, self.dataset.synthetic_weights
        if self.uniform:
            return self._draw(torch.cat([torch.ones(num_real), synthetic_weights]), self.batch_size)
        real = self._draw(torch.ones(num_real), self.batch_size - self.num_synthetic_per_batch)
        if not self.num_synthetic_per_batch:
            return real
        synthetic = num_real + self._draw(synthetic_weights, self.num_synthetic_per_batch)
        return torch.cat([real, synthetic])

    def __iter__(self):
        for _ in range(len(self) // self.batch_size):
            yield from self._block().tolist()


class RecognizerTrainer(Trainer):
    """``Trainer`` that augments training batches on the fly and composes them with :class:`MixedBatchSampler`."""

    def __init__(self, *args, augmentation: nn.Module, synthetic_ratio: float | None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.augmentation, self.synthetic_ratio = augmentation, synthetic_ratio

    def _get_train_sampler(self, train_dataset: MixedIdentityDataset | None = None) -> MixedBatchSampler:
        generator = torch.Generator().manual_seed(self.args.seed)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return MixedBatchSampler(dataset, self._train_batch_size, self.synthetic_ratio, generator)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            inputs = {**inputs, "pixel_values": self.augmentation(inputs["pixel_values"])}
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)


def check_synthetic_dataset(real: datasets.DatasetDict, synthetic: datasets.Dataset) -> None:
    """Fail early, and say why, when a synthetic set cannot be mixed with the real one."""
    missing = {"image", "label"} - set(synthetic.column_names)
    if missing:
        raise ValueError(f"The synthetic dataset lacks the column(s) {sorted(missing)}; it needs 'image' and 'label'.")
    real_names = real["train"].features["label"].names
    feature = synthetic.features["label"]
    synthetic_names = feature.names if isinstance(feature, datasets.ClassLabel) else None
    if synthetic_names != real_names:
        raise ValueError(
            "The synthetic dataset's label space does not match the real one: its 'label' must be a ClassLabel with "
            f"the same names in the same order. Real: {real_names}; synthetic: {synthetic_names or feature}. "
            "Cast it with dataset.cast_column('label', real['train'].features['label']) if only the feature differs."
        )


def train_recognizer(
    config: RecognizerConfig, real: datasets.DatasetDict, synthetic: datasets.Dataset | None = None
) -> dict[str, float]:
    """Train on ``real['train']`` (+ ``synthetic``, or ``config.synthetic_dataset``) and return the metrics on
    ``real['test']`` (``test_accuracy``, ``test_loss``, ...).

    With ``config.selection`` the synthetic images are reweighted during training and the scored synthetic dataset
    is saved to ``config.scored_dataset_path`` when that is set.
    """
    if synthetic is None and config.synthetic_dataset:
        synthetic = datasets.load_from_disk(config.synthetic_dataset)
    if synthetic is not None:
        check_synthetic_dataset(real, synthetic)
    elif config.selection:
        raise ValueError("selection=True needs a synthetic dataset to select from.")
    set_seed(config.seed)

    def tensors(split: datasets.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        return dataset_to_tensors(split, resolution=config.resolution, channels=config.channels)

    real_train = tensors(real["train"])
    synthetic_train = tensors(synthetic) if synthetic is not None else (None, None)
    train_dataset = MixedIdentityDataset(*real_train, *synthetic_train)
    model = build_recognizer(config, real["train"].features["label"].names)
    metric = load_metric("identification_accuracy")

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        return metric.compute(predictions=prediction.predictions.argmax(-1), references=prediction.label_ids)

    trainer = RecognizerTrainer(
        model=model,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=MixedIdentityDataset(*tensors(real["test"])),
        compute_metrics=compute_metrics,
        augmentation=build_augmentation(config),
        synthetic_ratio=config.synthetic_ratio,
    )
    if config.selection:
        trainer.add_callback(
            DynamicSampleSelectionCallback(
                trainer,
                config,
                model.per_sample_loss,
                real=real_train,
                synthetic=synthetic_train,
                synthetic_dataset=synthetic,
                weights=train_dataset.synthetic_weights,
            )
        )
    trainer.train()
    return trainer.evaluate(metric_key_prefix="test")
