"""The recognizer recipe's settings: ``TrainingArguments`` plus model, loss, augmentation, mixing and selection."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from transformers import TrainingArguments

from ..data.preprocessing import image_size
from ..utils.launch import local_batch_size
from .backbones import IRESNET_LAYERS
from .selection import SelectionConfig

TINY_MODEL = "resnet-tiny"
LOSSES = ("cross_entropy", "cosface")


@dataclass
class RecognizerConfig(TrainingArguments, SelectionConfig):
    """Recognizer, augmentation, real/synthetic mixing and selection settings on top of ``TrainingArguments``.

    The defaults were tuned on ORL private 1-shot (split seeds 0 and 1, all held-out images): CosFace beat
    cross-entropy by about 5 points and the affine + brightness/contrast augmentation added about 4 over flip +
    pad-crop alone. The selection fields are those of :class:`~rlsyn_trl.recognizer.selection.SelectionConfig` and apply
    when ``selection`` is on.
    """

    model: str = field(
        default=TINY_MODEL,
        metadata={
            "help": f"'{TINY_MODEL}' (small ResNet from scratch), an IResNet by name ({', '.join(IRESNET_LAYERS)}; "
            "from scratch, at `resolution`), an AutoModelForImageClassification id/path, or an identity encoder "
            "(e.g. 'embedded:orl_faces/encoder', the public feature extractor) to fine-tune."
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
    reid_neck: bool = field(
        default=False,
        metadata={
            "help": "The ReID strong baseline's head on `model`'s backbone (a ResNet or a ViT AutoModel): BNNeck and a "
            "bias-free classifier, triplet on the pooled feature, retrieval on its normalised form. Needs "
            "loss='cross_entropy'."
        },
    )
    last_stride: int = field(
        default=1, metadata={"help": "With reid_neck and a ResNet: the last stage's stride (1: a 16x8 map at 256x128)."}
    )
    loss: str = field(default="cosface", metadata={"help": f"Identity loss, one of {LOSSES}."})
    label_smoothing: float = field(
        default=0.0, metadata={"help": "Label smoothing of the cross-entropy loss (the ReID baseline: 0.1)."}
    )
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
    synthetic_moves_centres: bool = field(
        default=True,
        metadata={
            "help": "False: synthetic images are scored against detached CosFace class centres, so the centres are "
            "placed by the real images alone and the samples train the backbone only. Needs loss='cosface'."
        },
    )
    selection: bool = field(default=False, metadata={"help": "Reweight the synthetic images by dynamic selection."})
    output_dir: str = field(default="outputs/recognizer", metadata={"help": "Where logs and checkpoints go."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak AdamW learning rate."})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Training batch size of each process."})
    global_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "The training batch over ALL processes (the paper's batch): each process trains on "
            "global_batch_size / processes, which replaces per_device_train_batch_size, and identities_per_batch "
            "then counts the identities of the global batch. None: per_device_train_batch_size as given."
        },
    )
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
    hub_private_repo: bool | None = field(
        default=True, metadata={"help": "Hub repos are private unless set to false (transformers' default: public)."}
    )
    dataloader_pin_memory: bool = field(default=False, metadata={"help": "Pin batches (tiny in-memory tensors)."})
    seed: int = field(default=0, metadata={"help": "Seed of initialisation, sampling and augmentation."})

    def __post_init__(self) -> None:
        super().__post_init__()
        SelectionConfig.__post_init__(self)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.reid_neck and self.loss != "cross_entropy":
            raise ValueError(
                f"reid_neck needs loss='cross_entropy' (BNNeck feeds its own classifier), got loss={self.loss!r}."
            )
        if self.last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {self.last_stride}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.synthetic_ratio is not None and not 0 <= self.synthetic_ratio <= 1:
            raise ValueError(f"synthetic_ratio must be in [0, 1] or None (uniform mixing), got {self.synthetic_ratio}")
        if not self.synthetic_trains_backbone and self.loss != "cosface" and not self.triplet_weight:
            raise ValueError(
                "synthetic_trains_backbone=False needs loss='cosface' or a triplet term: plain classifier logits "
                "come straight from the backbone."
            )
        if not self.synthetic_moves_centres and self.loss != "cosface":
            raise ValueError(
                "synthetic_moves_centres=False needs loss='cosface': the other losses have no class centres apart "
                "from the backbone's classifier."
            )
        if not 0 < self.synthetic_until <= 1:
            raise ValueError(f"synthetic_until must be in (0, 1], got {self.synthetic_until}")
        self.resolution = list(image_size(self.resolution))  # a YAML may give one int
        if self.global_batch_size is not None:
            share = partial(local_batch_size, num_processes=self.world_size)
            self.per_device_train_batch_size = share(self.global_batch_size, setting="global_batch_size")
            if self.identities_per_batch is not None:
                self.identities_per_batch = share(self.identities_per_batch, setting="identities_per_batch")
        if self.identities_per_batch is not None and self.per_device_train_batch_size % self.identities_per_batch:
            raise ValueError(
                f"per_device_train_batch_size {self.per_device_train_batch_size} is not a multiple of "
                f"identities_per_batch {self.identities_per_batch} (P x K batches)."
            )
