"""The downstream identity recognizer: a transformers image classifier trained with the ``Trainer`` on the few real
images of the target identities, optionally mixed with a synthetic set that dynamic selection reweights.

The embedded default (``model="resnet-tiny"``) is a small ``ResNetForImageClassification`` built from a
``ResNetConfig``; any ``AutoModelForImageClassification`` id or local path works too, pretrained or from scratch.
The paper's benchmarks add what their recipes need: ``[height, width]`` inputs, a batch-hard triplet term, P x K
identity batches, random erasing and Adam with L2 weight decay. Evaluation follows the data
(:func:`rlsyn_trl.evaluation.evaluate_recognizer`): identification accuracy on a ``test`` split, mAP/CMC on
``query``/``gallery`` splits, 10-fold accuracy on face verification pair sets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import datasets
import kornia.augmentation as K
import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import CosFaceLoss, TripletMarginLoss
from pytorch_metric_learning.miners import BatchHardMiner
from torch import nn
from transformers import (
    AutoConfig,
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
from .data.preprocessing import image_size
from .encoders import IdentityEncoder, IdentityEncoderConfig
from .evaluation import evaluate_recognizer
from .metrics import load_metric
from .model_sources import EMBEDDED_MODELS, resolve_pretrained_folder
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
        metadata={
            "help": f"'{TINY_MODEL}' (small ResNet from scratch), an AutoModelForImageClassification id/path, or an "
            "identity encoder (e.g. 'embedded:orl_faces/encoder', the public feature extractor) to fine-tune."
        },
    )
    imprint_centres: bool = field(
        default=True,
        metadata={
            "help": "With a pretrained backbone and CosFace, start each class centre at the mean normalised embedding "
            "of its real training images (the backbone's nearest-class-mean classifier) instead of at random."
        },
    )
    from_scratch: bool = field(
        default=False, metadata={"help": "Random weights in the architecture of `model` (face recognizers train so)."}
    )
    loss: str = field(default="cosface", metadata={"help": f"Identity loss, one of {LOSSES}."})
    cosface_scale: float = field(default=16.0, metadata={"help": "CosFace scale s."})
    cosface_margin: float = field(default=0.1, metadata={"help": "CosFace additive cosine margin m."})
    triplet_weight: float = field(
        default=0.0, metadata={"help": "Weight of a batch-hard triplet loss on the pooled embedding (ReID: 1; 0: off)."}
    )
    triplet_margin: float = field(default=0.3, metadata={"help": "Triplet margin (distance of normalised features)."})
    identities_per_batch: int | None = field(
        default=None,
        metadata={"help": "P of P x K batches (ReID: 16 x 4); K = batch size / P. None: images drawn independently."},
    )
    resolution: list[int] = field(
        default_factory=lambda: [32], metadata={"help": "Input size: a square side, or height and width (256 128)."}
    )
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
    random_erasing: float = field(default=0.0, metadata={"help": "Probability of erasing a random rectangle."})
    flip_test: bool = field(default=True, metadata={"help": "Average class scores over the image and its mirror."})
    synthetic_dataset: str | None = field(
        default=None, metadata={"help": "A synthetic dataset saved with save_to_disk (columns image, label)."}
    )
    synthetic_ratio: float | None = field(
        default=0.5,
        metadata={"help": "Fraction of synthetic images in every batch; None mixes real and synthetic uniformly."},
    )
    synthetic_until: float = field(
        default=1.0,
        metadata={
            "help": "Fraction of max_steps during which synthetic images are mixed in; the steps after it train on "
            "real images only (synthetic first, real last). 1: mixed throughout."
        },
    )
    synthetic_trains_backbone: bool = field(
        default=True,
        metadata={
            "help": "False: synthetic images' loss reaches only the CosFace class centres (their embeddings are "
            "detached), so the backbone's features are learned from real images alone. Needs a CosFace or triplet loss."
        },
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
    l2_adam: bool = field(
        default=False,
        metadata={
            "help": "Train with torch.optim.Adam, weight_decay as an L2 term of the gradient (the ReID baselines' "
            "'Adam, weight decay 5e-4'), instead of `optim`."
        },
    )
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
        if not self.synthetic_trains_backbone and self.loss != "cosface" and not self.triplet_weight:
            raise ValueError(
                "synthetic_trains_backbone=False needs loss='cosface' or a triplet term: plain classifier logits "
                "come straight from the backbone."
            )
        if not 0 < self.synthetic_until <= 1:
            raise ValueError(f"synthetic_until must be in (0, 1], got {self.synthetic_until}")
        self.resolution = list(image_size(self.resolution))  # a YAML may give one int
        if self.identities_per_batch is not None and self.per_device_train_batch_size % self.identities_per_batch:
            raise ValueError(
                f"per_device_train_batch_size {self.per_device_train_batch_size} is not a multiple of "
                f"identities_per_batch {self.identities_per_batch} (P x K batches)."
            )


class IdentityRecognizer(nn.Module):
    """An image classifier plus, for CosFace, the class centres; ``logits`` are the class scores used to identify.

    With cross-entropy the scores are the backbone's logits. With CosFace they are the cosines between the pooled
    embedding and each class centre of a ``pytorch_metric_learning`` ``CosFaceLoss`` (whose ``W`` lives here, so
    the optimizer and the virtual selection step update it); the margin and scale enter only the training loss.
    With ``triplet_weight`` > 0 the loss adds a batch-hard triplet term on the pooled embedding (the cross-entropy
    scores then come from the backbone's classifier on that same embedding); the per-sample identity loss, which
    selection scores samples by, stays the classification loss alone.

    With ``synthetic_trains_backbone=False`` the embeddings of training images flagged ``synthetic`` are detached:
    their loss moves the class centres (and the triplet term's other side) but never the backbone.
    """

    def __init__(
        self,
        backbone: PreTrainedModel,
        cosface: CosFaceLoss | None = None,
        flip_test: bool = True,
        triplet_weight: float = 0.0,
        triplet_margin: float = 0.3,
        synthetic_trains_backbone: bool = True,
    ) -> None:
        super().__init__()
        self.backbone, self.cosface, self.flip_test = backbone, cosface, flip_test
        self.synthetic_trains_backbone = synthetic_trains_backbone
        self.triplet_weight = triplet_weight
        self.triplet = TripletMarginLoss(margin=triplet_margin) if triplet_weight else None
        self.miner = BatchHardMiner() if triplet_weight else None

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled embedding, ``[N, D]``."""
        if isinstance(self.backbone, IdentityEncoder):
            return self.backbone(pixel_values)
        pooled = getattr(self.backbone.base_model(pixel_values=pixel_values), "pooler_output", None)
        if pooled is None:
            raise ValueError(
                f"{type(self.backbone.base_model).__name__} returns no pooled embedding for the CosFace head; "
                "use loss='cross_entropy' with this model."
            )
        return pooled.flatten(1)

    def scores(
        self, pixel_values: torch.Tensor, detach: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Class scores (the classifier's logits, or the cosines to the CosFace class centres) and, when a loss
        needs it, the pooled embedding they come from; rows flagged in ``detach`` pass no gradient to the backbone."""
        if self.cosface is None and self.triplet is None:
            return self.backbone(pixel_values=pixel_values).logits, None
        embeddings = self.embed(pixel_values)
        if detach is not None:
            embeddings = torch.where(detach[:, None], embeddings.detach(), embeddings)
        if self.cosface is not None:
            return self.cosface.get_cosine(embeddings), embeddings
        return self.backbone.classifier(embeddings), embeddings

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, synthetic: torch.Tensor | None = None
    ) -> ImageClassifierOutput:
        detach = None if self.synthetic_trains_backbone or not self.training else synthetic
        logits, embeddings = self.scores(pixel_values, detach)
        if self.flip_test and not self.training:
            logits = (logits + self.scores(pixel_values.flip(-1))[0]) / 2
        loss = None if labels is None else self.per_sample_loss(ImageClassifierOutput(logits=logits), labels).mean()
        if loss is not None and self.triplet is not None:
            loss = loss + self.triplet_weight * self.triplet(embeddings, labels, self.miner(embeddings, labels))
        return ImageClassifierOutput(loss=loss, logits=logits)

    def per_sample_loss(self, outputs: ImageClassifierOutput, labels: torch.Tensor) -> torch.Tensor:
        """Identity loss of each sample (the l of the selection utility), from the model's outputs."""
        if self.cosface is None:
            return F.cross_entropy(outputs.logits, labels, reduction="none")
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
    source = str(resolve_pretrained_folder(config.model)) if config.model in EMBEDDED_MODELS else config.model
    architecture = AutoConfig.from_pretrained(source, id2label=id2label, label2id=label2id)
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
        synthetic = torch.tensor(index >= self.num_real)
        return {"pixel_values": self.images[index], "labels": self.labels[index], "synthetic": synthetic}


class MixedBatchSampler(torch.utils.data.Sampler[int]):
    """Indices in consecutive blocks of ``batch_size``, each block one training batch.

    With ``synthetic_ratio`` r, a block holds ``round(r * batch_size)`` synthetic images drawn in proportion to their
    weights and real images for the rest, drawn uniformly (half/half batches beat uniform mixing in the project's
    prototype). With ``synthetic_ratio=None`` every image of the union is drawn in proportion to its weight, real
    images weighing 1 (uniform mixing). Draws are with replacement and read the weights when each block is drawn,
    so selection updates apply from the next batch on.

    With ``synthetic_blocks`` n, only the first n blocks (counted over the sampler's life, across epochs) may hold
    synthetic images; later blocks are real only.

    With ``identities_per_batch`` P, a block is P x K instead (K = batch_size / P), as batch-hard triplet training
    needs positives and negatives in every batch: P distinct real identities drawn uniformly and K images of each,
    the same real/synthetic rule applying within the identity (``round(r * K)`` of its synthetic images, when it has
    any); within an identity, images are drawn without replacement when it has enough.
    """

    def __init__(
        self,
        dataset: MixedIdentityDataset,
        batch_size: int,
        synthetic_ratio: float | None,
        generator: torch.Generator,
        identities_per_batch: int | None = None,
        synthetic_blocks: int | None = None,
    ) -> None:
        self.dataset, self.batch_size, self.generator = dataset, batch_size, generator
        self.synthetic_ratio, self.identities_per_batch = synthetic_ratio, identities_per_batch
        self.synthetic_blocks, self.blocks_drawn = synthetic_blocks, 0
        if identities_per_batch is None:
            self.groups = [torch.arange(len(dataset))]
            return
        identities = dataset.labels[: dataset.num_real].unique()
        if len(identities) < identities_per_batch:
            raise ValueError(
                f"identities_per_batch is {identities_per_batch} but the real training set has only "
                f"{len(identities)} identities."
            )
        self.groups = [torch.nonzero(dataset.labels == identity).flatten() for identity in identities]

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size) * self.batch_size

    def _draw(self, pool: torch.Tensor, weights: torch.Tensor, count: int) -> torch.Tensor:
        replacement = self.identities_per_batch is None or count > len(pool)
        return pool[torch.multinomial(weights, count, replacement=replacement, generator=self.generator)]

    def _group(self, members: torch.Tensor, size: int) -> torch.Tensor:
        """``size`` of ``members`` (dataset indices, real ones first), real and synthetic as configured."""
        num_real = self.dataset.num_real
        real, synthetic = members[members < num_real], members[members >= num_real]
        if self.synthetic_blocks is not None and self.blocks_drawn >= self.synthetic_blocks:
            members, synthetic = real, synthetic[:0]
        weights = self.dataset.synthetic_weights[synthetic - num_real]
        if self.synthetic_ratio is None:
            return self._draw(members, torch.cat([torch.ones(len(real)), weights]), size)
        num_synthetic = round(self.synthetic_ratio * size) if len(synthetic) else 0
        real = self._draw(real, torch.ones(len(real)), size - num_synthetic)
        if not num_synthetic:
            return real
        return torch.cat([real, self._draw(synthetic, weights, num_synthetic)])

    def _block(self) -> torch.Tensor:
        if self.identities_per_batch is None:
            return self._group(self.groups[0], self.batch_size)
        chosen = torch.randperm(len(self.groups), generator=self.generator)[: self.identities_per_batch]
        size = self.batch_size // self.identities_per_batch
        return torch.cat([self._group(self.groups[index], size) for index in chosen.tolist()])

    def __iter__(self):
        for _ in range(len(self) // self.batch_size):
            block = self._block()
            self.blocks_drawn += 1
            yield from block.tolist()


class RecognizerTrainer(Trainer):
    """``Trainer`` that augments training batches on the fly and composes them with :class:`MixedBatchSampler`."""

    def __init__(
        self,
        *args,
        augmentation: nn.Module,
        synthetic_ratio: float | None,
        identities_per_batch: int | None = None,
        synthetic_blocks: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.augmentation, self.synthetic_ratio = augmentation, synthetic_ratio
        self.identities_per_batch, self.synthetic_blocks = identities_per_batch, synthetic_blocks

    def _get_train_sampler(self, train_dataset: MixedIdentityDataset | None = None) -> MixedBatchSampler:
        generator = torch.Generator().manual_seed(self.args.seed)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return MixedBatchSampler(
            dataset,
            self._train_batch_size,
            self.synthetic_ratio,
            generator,
            self.identities_per_batch,
            self.synthetic_blocks,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            inputs = {**inputs, "pixel_values": self.augmentation(inputs["pixel_values"])}
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)


def synthetic_blocks(config: RecognizerConfig) -> int | None:
    """Sampler blocks (per-device batches) that may hold synthetic images: ``synthetic_until`` of the training
    steps, each of which draws gradient_accumulation_steps x world_size blocks."""
    if config.synthetic_until >= 1:
        return None
    per_step = config.gradient_accumulation_steps * config.world_size
    return round(config.synthetic_until * config.max_steps) * per_step


def l2_adam(config: RecognizerConfig) -> tuple[type[torch.optim.Adam], dict]:
    """``torch.optim.Adam`` with the configured rate and betas; the Trainer's parameter groups carry the weight
    decay, which Adam adds to the gradient (L2) where AdamW would decay the weights directly."""
    betas = (config.adam_beta1, config.adam_beta2)
    return torch.optim.Adam, {"lr": config.learning_rate, "betas": betas, "eps": config.adam_epsilon}


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
    config: RecognizerConfig,
    real: datasets.DatasetDict,
    synthetic: datasets.Dataset | None = None,
    verification: Mapping[str, datasets.Dataset] | None = None,
) -> dict[str, float]:
    """Train on ``real['train']`` (+ ``synthetic``, or ``config.synthetic_dataset``) and return the test metrics the
    data supports: identification on ``real['test']`` (``test_accuracy``, ``test_loss``, ...), mAP/CMC on
    ``real['query']`` against ``real['gallery']`` (``test_mAP``, ``test_rank1``, ...) and 10-fold accuracy on each
    ``verification`` pair set (``test_<name>_accuracy``, ...).

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
    if config.imprint_centres and model.cosface is not None and config.model != TINY_MODEL and not config.from_scratch:
        imprint_centres(model, *real_train)
    metric = load_metric("identification_accuracy")

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        return metric.compute(predictions=prediction.predictions.argmax(-1), references=prediction.label_ids)

    trainer = RecognizerTrainer(
        model=model,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=MixedIdentityDataset(*tensors(real["test"])) if "test" in real else None,
        compute_metrics=compute_metrics,
        augmentation=build_augmentation(config),
        synthetic_ratio=config.synthetic_ratio,
        identities_per_batch=config.identities_per_batch,
        synthetic_blocks=synthetic_blocks(config),
        optimizer_cls_and_kwargs=l2_adam(config) if config.l2_adam else None,
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
    metrics = trainer.evaluate(metric_key_prefix="test") if "test" in real else {}
    return {**metrics, **evaluate_recognizer(model, config, real, verification)}
