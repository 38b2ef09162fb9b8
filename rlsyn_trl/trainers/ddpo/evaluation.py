"""The final cold-start vs RL comparison: fresh samples of each policy, scored side by side with shared z-scores."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ...encoders import IdentityFeatureExtractor
from ...generation.realism import detect_faces
from ...generators import IdentityGenerator, ReferenceStart
from ...generators.lora_merge import merged_lora
from ...metrics.identity import identity_consistency
from ...rewards.identity_reward import REWARD_TERMS, IdentityReward, encode_images

EVALUATION_COLUMNS = {
    "sem": "R_sem",
    "cov": "R_cov",
    "exp": "R_exp (LOO)",
    "group_exp": "E(G_y)",
    "total": "total (joint z)",
    "consistency": "identity consistency",
    "evaluator_consistency": "identity consistency (evaluator)",
    "face_rate": "face-detection rate",
}


@torch.no_grad()
def evaluate_policies(
    policies: Mapping[str, IdentityGenerator],
    reward: IdentityReward,
    seeds: Sequence[int],
    samples_per_identity: int,
    num_inference_steps: int,
    guidance_scale: float,
    eta: float,
    reference: ReferenceStart | None = None,
    evaluator: tuple[IdentityFeatureExtractor, torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, dict[str, float]]:
    """Fresh samples of every identity from each policy with the same seeds, scored side by side.

    Per policy and seed: the mean of R_sem, R_cov, R_exp (leave-one-out share) and of the group-level E(G_y), the
    total with z-scores shared by all policies' samples (a per-policy z-score would centre every total at 0),
    identity consistency and the face-detection rate (realism); returned as the mean and std over seeds. With
    ``reference``, every policy starts from the same drawn real images and strengths (the draws follow the seed).
    ``evaluator`` (a feature extractor the reward never saw, the real training images and their labels) adds identity
    consistency in its space.
    """
    evaluator_bank = None
    if evaluator is not None:
        evaluator_model, real_images, real_labels = evaluator
        evaluator_bank = encode_images(evaluator_model, real_images).cpu(), real_labels.cpu()
    names = list(policies)
    num_identities = len(reward.bank.label_names)
    per_seed: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in names}
    for seed in seeds:
        features, labels = [], []
        for index, name in enumerate(names):
            identities = torch.arange(num_identities).repeat_interleave(samples_per_identity)
            with merged_lora(policies[name].transformer):
                images = policies[name].sample(
                    identities,
                    seed=seed,
                    num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale,
                    eta=eta,
                    reference=reference,
                )
            feature = reward.encode(images).cpu()
            features.append(feature)
            labels.append(identities + index * num_identities)
            per_seed[name]["face_rate"].append(detect_faces(images).float().mean().item())
            per_seed[name]["consistency"].append(
                identity_consistency(feature, identities, reward.bank.features, reward.bank.labels)
            )
            if evaluator_bank is not None:
                independent = encode_images(evaluator_model, images).cpu()
                per_seed[name]["evaluator_consistency"].append(
                    identity_consistency(independent, identities, *evaluator_bank)
                )
        result = reward.score(torch.cat(features), torch.cat(labels), copies=len(names))
        sample_policy = torch.cat(labels) // num_identities
        group_policy = result["identities"] // num_identities
        for index, name in enumerate(names):
            for term in (*REWARD_TERMS, "total"):
                per_seed[name][term].append(result[term][sample_policy == index].mean().item())
            per_seed[name]["group_exp"].append(result["group_exp"][group_policy == index].mean().item())
    return {
        name: {
            key: value
            for metric, values in metrics.items()
            for key, value in ((metric, float(np.mean(values))), (f"{metric}_std", float(np.std(values))))
        }
        for name, metrics in per_seed.items()
    }


def evaluation_table(evaluation: Mapping[str, Mapping[str, float]]) -> str:
    """A Markdown table of :func:`evaluate_policies` (mean +- std over seeds), one row per policy."""
    first = next(iter(evaluation.values()))
    columns = {key: title for key, title in EVALUATION_COLUMNS.items() if key in first}
    header = "| policy | " + " | ".join(columns.values()) + " |"
    rule = "|---|" + "---:|" * len(columns)
    rows = [
        f"| {name} | " + " | ".join(f"{metrics[key]:.4f} +- {metrics[key + '_std']:.4f}" for key in columns) + " |"
        for name, metrics in evaluation.items()
    ]
    return "\n".join([header, rule, *rows])
