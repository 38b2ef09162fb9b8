"""Training the recognizer: the ``Trainer`` with on-the-fly augmentation and mixed batches, and the recipe that
builds it, adds dynamic selection and evaluates the result as the data allows."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import datasets
import torch
from torch import nn
from transformers import EvalPrediction, Trainer, TrainerCallback, set_seed
from transformers.trainer_callback import PrinterCallback

from ..data import StreamedSplit, dataset_to_tensors
from ..data.preprocessing import preprocess_images
from ..data.streaming import decode_images
from ..encoders.identity_encoder import IdentityEncoder
from ..metrics import load_metric
from .config import TINY_MODEL, RecognizerConfig
from .evaluation import evaluate_recognizer
from .model import build_augmentation, build_recognizer, imprint_centres
from .pretrained import RecognizerModel
from .sampling import MixedBatchSampler, MixedIdentityDataset, synthetic_blocks
from .selection import DynamicSampleSelectionCallback

logger = logging.getLogger(__name__)


class LogLineCallback(TrainerCallback):
    """One readable log line per ``Trainer.log`` call instead of ``PrinterCallback``'s raw dict.

    Training and evaluation lines go to INFO; the selection rounds (every ``round_every`` steps) go to DEBUG.
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_local_process_zero or not logs:
            return
        values = ", ".join(
            f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
            for key, value in logs.items()
            if key != "epoch"
        )
        level = logging.DEBUG if all(key.startswith("selection/") or key == "epoch" for key in logs) else logging.INFO
        logger.log(level, "recognizer step %d/%d: %s", state.global_step, state.max_steps, values)


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
        if self.args.disable_tqdm:  # the quiet mode: readable log lines, not printed dicts
            self.remove_callback(PrinterCallback)
            self.add_callback(LogLineCallback())
        self.augmentation, self.synthetic_ratio = augmentation, synthetic_ratio
        self.identities_per_batch, self.synthetic_blocks = identities_per_batch, synthetic_blocks
        backbone = getattr(getattr(self.model, "recognizer", None), "backbone", None)
        if self.args.device.type == "cpu" and isinstance(backbone, IdentityEncoder):
            # oneDNN's CPU convolutions run on channels-last weights without a reorder per call: the identity
            # encoder's training step took 0.63x the time (benchmarks/cpu_speedups.py). Only this backbone: the
            # same switch on a tiny IResNet corrupted the heap in its backward pass (torch 2.13, AVX2).
            backbone.to(memory_format=torch.channels_last)

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


def streamed_examples(
    split: StreamedSplit, config: RecognizerConfig, shuffle_buffer: int = 0
) -> datasets.IterableDataset:
    """``pixel_values`` and ``labels`` of a streamed split, decoded and resized as they are read (as
    ``dataset_to_tensors`` does a built split's). The ``Trainer``'s accelerate loader reads it on the main process
    and hands each process its share of every batch, so no image is trained on twice per batch."""

    def decode(item: dict) -> dict:
        pixels = preprocess_images(decode_images([item["image"]]), config.resolution, config.channels)[0]
        return {"pixel_values": pixels.numpy(), "labels": item["label"]}

    stream = split.dataset(config.seed, shuffle_buffer).map(decode, remove_columns=["image", "label", "order"])
    return stream.with_format("torch")


def check_streamable(config: RecognizerConfig, synthetic: datasets.Dataset | None) -> None:
    """Refuse, before any work, what a streamed real split cannot serve: each needs every real image at hand."""
    pretrained = config.model != TINY_MODEL and not config.from_scratch
    refused = {
        "synthetic_dataset": synthetic is not None or bool(config.synthetic_dataset),
        "selection": config.selection,
        "identities_per_batch": config.identities_per_batch is not None,
        "imprint_centres": config.imprint_centres and pretrained and config.loss == "cosface",
    }
    named = [name for name, on in refused.items() if on]
    if named:
        raise ValueError(
            f"--streaming true trains on the real stream alone, in its shuffled order; --{named[0]} needs every real "
            "image at hand (mixing, selection, P x K batches, class centres from the images). Set --streaming false, "
            f"or leave {', '.join(named)} off."
        )
    if config.max_steps <= 0:
        raise ValueError("--streaming true needs --max_steps: a stream has no epochs to count steps by.")


def train_recognizer(
    config: RecognizerConfig,
    real: datasets.DatasetDict,
    synthetic: datasets.Dataset | None = None,
    verification: Mapping[str, datasets.Dataset] | None = None,
    shuffle_buffer: int = 0,
) -> dict[str, float]:
    """Train on ``real['train']`` (+ ``synthetic``, or ``config.synthetic_dataset``) and return the test metrics the
    data supports: identification on ``real['test']`` (``test_accuracy``, ``test_loss``, ...), mAP/CMC on
    ``real['query']`` against ``real['gallery']`` (``test_mAP``, ``test_rank1``, ...) and 10-fold accuracy on each
    ``verification`` pair set (``test_<name>_accuracy``, ...).

    With ``config.selection`` the synthetic images are reweighted during training and the scored synthetic dataset
    is saved to ``config.scored_dataset_path`` when that is set. The trained model is saved to ``config.output_dir``
    (a :class:`RecognizerModel`: ``AutoModel.from_pretrained`` reloads it); ``config.resume_from_checkpoint``
    continues from a checkpoint that ``save_strategy="steps"`` wrote there.

    A streamed ``real`` (:class:`~rlsyn_trl.data.StreamedSplit` splits) trains on its images as they are read,
    shuffled by shards and ``shuffle_buffer`` (:func:`streamed_examples`), and tests on its streamed ``test``.
    """
    streamed = isinstance(real["train"], StreamedSplit)
    if streamed:
        check_streamable(config, synthetic)
    if config.resume_from_checkpoint and config.selection:
        raise ValueError(
            "resume_from_checkpoint with selection=True would restart the synthetic weights from 1 (checkpoints hold "
            "the model, optimizer and data order, not the selection state); rerun without resume_from_checkpoint."
        )
    if synthetic is None and config.synthetic_dataset:
        synthetic = datasets.load_from_disk(config.synthetic_dataset)
    if synthetic is not None:
        check_synthetic_dataset(real, synthetic)
    elif config.selection:
        raise ValueError("selection=True needs a synthetic dataset to select from.")
    set_seed(config.seed)

    def tensors(split: datasets.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        return dataset_to_tensors(split, resolution=config.resolution, channels=config.channels)

    if streamed:
        train_dataset = streamed_examples(real["train"], config, shuffle_buffer)
        test_dataset = streamed_examples(real["test"], config) if "test" in real else None
    else:
        real_train = tensors(real["train"])
        synthetic_train = tensors(synthetic) if synthetic is not None else (None, None)
        train_dataset = MixedIdentityDataset(*real_train, *synthetic_train)
        test_dataset = MixedIdentityDataset(*tensors(real["test"])) if "test" in real else None
    label_names = real["train"].features["label"].names
    recognizer = build_recognizer(config, label_names)
    pretrained = config.model != TINY_MODEL and not config.from_scratch
    if config.imprint_centres and recognizer.cosface is not None and pretrained:
        imprint_centres(recognizer, *real_train)
    model = RecognizerModel.wrap(recognizer, config, label_names)
    metric = load_metric("identification_accuracy")

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        return metric.compute(predictions=prediction.predictions.argmax(-1), references=prediction.label_ids)

    trainer = RecognizerTrainer(
        model=model,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=test_dataset,
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
    trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    trainer.save_model()  # model.safetensors + config.json in output_dir: AutoModel.from_pretrained loads it
    metrics = trainer.evaluate(metric_key_prefix="test") if "test" in real else {}
    return {**metrics, **evaluate_recognizer(model, config, real, verification)}
