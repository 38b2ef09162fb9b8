"""Scoring the samples against the real training images: reward terms, memorisation audit, realism.

Held-out real images get the same audit and checks as the reference floor; the result is the synthetic dataset
(one row per sample, :func:`dataset_features`) and its summary. With an ``evaluator`` (a feature extractor the reward
never saw, :mod:`.evaluator`), identity consistency is also measured in its space, for the samples and the
held-out real photos alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets
import torch
from PIL import Image

from ..data import preprocess_images
from ..encoders import load_feature_extractor
from ..metrics.identity import identity_consistency, nearest_prototype
from ..provenance import DataSplit
from ..rewards import IdentityReward, RewardOptions
from .audit import audit_images, calibrate_thresholds, memorization_rates
from .config import GenerationConfig
from .evaluator import consistent_with
from .realism import detect_faces


@dataclass
class _Images:
    """One image set in the audit's pixel space (the samples' size and channels, in ``[-1, 1]``); phi brings
    these pixels to its own input size and normalisation itself."""

    pixels: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_pil(cls, images: list[Image.Image], labels: torch.Tensor, resolution: int, channels: int) -> _Images:
        return cls(preprocess_images(images, resolution, channels), labels)

    @classmethod
    def from_split(cls, split: datasets.Dataset, resolution: int, channels: int) -> _Images:
        return cls.from_pil(list(split["image"]), torch.tensor(split["label"]), resolution, channels)


def _per_identity(values: dict[str, torch.Tensor], labels: torch.Tensor, label_names: list[str]) -> dict:
    """``{identity: {name: mean of values[name] over its samples}}`` for the identities present in ``labels``."""
    return {
        label_names[identity]: {name: value[labels == identity].float().mean().item() for name, value in values.items()}
        for identity in labels.unique().tolist()
    }


def _score(
    config: GenerationConfig,
    rows: dict[str, list],
    data: datasets.DatasetDict,
    run: dict,
    phi: str,
    options: RewardOptions,
) -> tuple[datasets.Dataset, dict]:
    """Rewards, audit and realism of the samples (and of the held-out real images, the reference floor).

    The reward is phi and ``options`` built as DDPO builds it (``IdentityReward.build``), its bank the audit's."""
    label_feature = data["train"].features["label"]
    label_names = label_feature.names
    pil_images = [datasets.Image().decode_example(image) for image in rows["image"]]
    resolution, channels = pil_images[0].width, len(pil_images[0].getbands())
    # phi and the audit's products run on the accelerator; features come back to the CPU, where the bank lives.
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = load_feature_extractor(phi, config.encoder_revision).to(device)
    labels = torch.tensor([label_names.index(name) for name in rows["identity"]])
    samples = _Images.from_pil(pil_images, labels, resolution, channels)
    train = _Images.from_split(data["train"], resolution, channels)
    public = public_features = None
    if config.public_dataset_config:
        split = DataSplit(
            config.dataset_name, config.dataset_config, config.data_dir, config.shots, config.split_seed,
            config.dataset_revision, config.image_column, config.label_column,
        )  # fmt: skip
        public_split = split.load_public(config.public_dataset_config, data["train"], config.dataset_cache_dir)
        public = _Images.from_split(public_split, resolution, channels)
        public_features = encoder.encode_batched(public.pixels).cpu()
    public_set = (public.pixels, public.labels) if public else None
    reward = IdentityReward.build(encoder, train.pixels, train.labels, label_names, public_set, options)
    bank = reward.bank
    features = reward.encode(samples.pixels).cpu()
    rewards = reward.score(features, labels)
    thresholds = calibrate_thresholds(
        train.pixels,
        bank.features,
        train.labels,
        public_images=public.pixels if public else None,
        public_features=public_features,
        public_labels=public.labels if public else None,
        percentile=config.audit_percentile,
        criterion=config.memorization_criterion,
        source=config.threshold_source,
    )
    result = audit_images(samples.pixels, features, train.pixels, bank.features, thresholds, device=device)
    faces = detect_faces(samples.pixels)
    consistent = nearest_prototype(features, bank.features, bank.labels) == labels
    evaluator = load_feature_extractor(config.evaluator, config.evaluator_revision) if config.evaluator else None
    if evaluator is not None:
        evaluator_consistent = consistent_with(evaluator, samples.pixels, labels, train.pixels, train.labels)

    reference = None
    if "test" in data and len(data["test"]):
        test = _Images.from_split(data["test"], resolution, channels)
        test_features = encoder.encode_batched(test.pixels).cpu()
        test_result = audit_images(test.pixels, test_features, train.pixels, bank.features, thresholds, device=device)
        reference = {
            "num_images": len(test.labels),
            "memorization": memorization_rates(test_result, test.labels, label_names),
            "identity_consistency": identity_consistency(test_features, test.labels, bank.features, bank.labels),
            "face_detection_rate": detect_faces(test.pixels).float().mean().item(),
        }
        if evaluator is not None:
            held_out = consistent_with(evaluator, test.pixels, test.labels, train.pixels, train.labels)
            reference["evaluator_identity_consistency"] = held_out.float().mean().item()
    summary = {
        **run,
        "dataset": f"{config.dataset_name}/{config.dataset_config}",
        "num_samples": len(labels),
        "audit": {"thresholds": thresholds.to_dict(), "memorization": memorization_rates(result, labels, label_names)},
        "reference": reference,
        "identity_consistency": consistent.float().mean().item(),
        "evaluator": None
        if evaluator is None
        else {
            "id": config.evaluator,
            "revision": config.evaluator_revision,
            "identity_consistency": evaluator_consistent.float().mean().item(),
        },
        "face_detection_rate": faces.float().mean().item(),
        "reward": {term: rewards[term].mean().item() for term in ("sem", "cov", "exp", "total")},
        "reward_reference_spread": sorted(set(rewards["s_ref_source"])),
        "per_identity": _per_identity(
            {
                "memorized": result.memorized,
                "identity_consistent": consistent,
                "face_detected": faces,
                "reward": rewards["total"],
                **({} if evaluator is None else {"evaluator_consistent": evaluator_consistent}),
            },
            labels,
            label_names,
        ),
    }
    count = len(labels)
    dataset = datasets.Dataset.from_dict(
        {
            "image": rows["image"],
            "label": labels.tolist(),
            "identity": rows["identity"],
            "r_sem": rewards["sem"].tolist(),
            "r_cov": rewards["cov"].tolist(),
            "r_exp": rewards["exp"].tolist(),
            "reward": rewards["total"].tolist(),
            "nn_real_distance": result.pixel_distance.tolist(),
            "nn_real_feature_distance": result.feature_distance.tolist(),
            "nn_real_index": result.pixel_index.tolist(),
            "nn_real_feature_index": result.feature_index.tolist(),
            "memorized": result.memorized.tolist(),
            "memorized_by": result.memorized_by(),
            "identity_consistent": consistent.tolist(),
            "face_detected": faces.tolist(),
            "seed": rows["seed"],
            "sample_id": rows["sample_id"],
            "generator_id": [run["generator_id"]] * count,
            "generator_revision": [run["generator_revision"]] * count,
        },
        features=dataset_features(label_feature),
    )
    return dataset, summary


def dataset_features(label: datasets.ClassLabel) -> datasets.Features:
    """The synthetic dataset's schema; ``label`` is the real data's own ``ClassLabel``."""
    number, flag, text = datasets.Value("float32"), datasets.Value("bool"), datasets.Value("string")
    return datasets.Features(
        {
            "image": datasets.Image(),
            "label": label,
            "identity": text,
            "r_sem": number,
            "r_cov": number,
            "r_exp": number,
            "reward": number,
            "nn_real_distance": number,
            "nn_real_feature_distance": number,
            "nn_real_index": datasets.Value("int64"),
            "nn_real_feature_index": datasets.Value("int64"),
            "memorized": flag,
            "memorized_by": text,
            "identity_consistent": flag,
            "face_detected": flag,
            "seed": datasets.Value("int64"),
            "sample_id": datasets.Value("int64"),
            "generator_id": text,
            "generator_revision": text,
        }
    )
