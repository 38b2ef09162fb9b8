"""Cold-start vs DDPO policy on private ORL: reward terms and realism on fresh samples, same seeds.

    nice -n 5 python benchmarks/ddpo_rewards.py --config recipes/orl_faces/ddpo.yaml \
        [--cold-start outputs/orl_faces/sft] [--ddpo outputs/orl_faces/ddpo] [--seeds 0 1 2]

Both policies sample every private identity ``eval_samples_per_identity`` times per seed with the training sampler
of the YAML (steps, guidance, eta); the reward is the training reward (the encoder and constants recorded in the
DDPO adapter's provenance, the memory bank of the split the adapters were trained on, read from it too). R_exp is
shown both as the mean leave-one-out share and at the group level, E(G_y): with the unbiased spread S the share of
a group averages to Var_i(S(G without g_i)) / tau^2 >= 0, so a collapsed group gets share 0 rather than a penalty,
while E(G_y) falls with any gap to the target spread. The total uses z-scores over both policies' samples (a
per-policy z-score would centre each total at 0). Realism is the LBP face-detection rate (rlsyn_trl.generation.realism);
real held-out images give its reference.
Requirements: R_cov and R_exp rise, R_sem falls by at most 0.02, the face-detection rate does not fall.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from trl import TrlParser  # noqa: E402

from rlsyn_trl.encoders import load_encoder  # noqa: E402
from rlsyn_trl.generation.realism import face_detection_rate  # noqa: E402
from rlsyn_trl.generators import IdentityGenerator, resolve_pretrained_folder  # noqa: E402
from rlsyn_trl.metrics.identity import identity_consistency  # noqa: E402
from rlsyn_trl.provenance import (  # noqa: E402
    DataSplit,
    check_same_train_images,
    inherit_settings,
    input_provenance,
    load_input_split,
    read_reward,
)
from rlsyn_trl.rewards import IdentityReward  # noqa: E402
from rlsyn_trl.rewards.identity_reward import needs_public_spread  # noqa: E402
from rlsyn_trl.settings import REWARD_FIELDS  # noqa: E402
from rlsyn_trl.trainers import RLSynDDPOConfig, evaluate_policies, evaluation_table  # noqa: E402
from rlsyn_trl.trainers.ddpo.data import check_same_identities, identity_tensors  # noqa: E402
from rlsyn_trl.utils.runtime import setup_runtime  # noqa: E402


def checks(evaluation: dict, cold: str, rl: str) -> list[tuple[str, float, bool]]:
    """(requirement, change, met) for each requirement in the module docstring."""
    delta = {
        key: evaluation[rl][key] - evaluation[cold][key] for key in ("sem", "cov", "exp", "group_exp", "face_rate")
    }
    return [
        ("R_cov rises", delta["cov"], delta["cov"] > 0),
        ("R_exp (LOO share) rises", delta["exp"], delta["exp"] > 0),
        ("E(G_y) (group level) rises", delta["group_exp"], delta["group_exp"] > 0),
        ("R_sem falls by <= 0.02", delta["sem"], delta["sem"] >= -0.02),
        ("face-detection rate does not fall", delta["face_rate"], delta["face_rate"] >= 0),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="recipes/orl_faces/ddpo.yaml", help="the DDPO recipe YAML")
    parser.add_argument("--cold-start", default=None, help="cold-start adapter (default: the YAML's adapter)")
    parser.add_argument("--ddpo", default=None, help="trained adapter (default: the YAML's output_dir)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    (config,) = TrlParser((RLSynDDPOConfig,)).parse_args_and_config(args=["--config", args.config])
    setup_runtime(config.seed, config.mixed_precision)
    cold_path, ddpo_path = args.cold_start or config.adapter, args.ddpo or config.output_dir

    # The split and the reward as the DDPO recipe trained with them (its provenance), checked against the cold start.
    cold_folder = resolve_pretrained_folder(cold_path, config.adapter_revision)
    ddpo_folder = resolve_pretrained_folder(ddpo_path)
    source = f"the adapter {ddpo_path}"
    policy, split, data, data_record = load_input_split(config, ddpo_folder, source)
    check_same_train_images(input_provenance(cold_folder)["data"] or {}, data_record, f"the adapter {cold_path}")
    trained = inherit_settings(config, policy.get("reward") or {}, {"encoder": "encoder", **REWARD_FIELDS}, source)
    phi, options = read_reward(trained)
    encoder = load_encoder(phi)

    cold_start = IdentityGenerator.from_pretrained(cold_folder)
    ddpo = IdentityGenerator.from_pretrained(ddpo_folder)
    check_same_identities(cold_start, data["train"], f"the adapter {cold_path}")
    images, labels = identity_tensors(data["train"], cold_start)
    names = cold_start.label_names
    public = None
    if needs_public_spread(labels) and config.public_dataset_config:
        public_split = DataSplit(split.dataset_name, config.public_dataset_config, split.data_dir, None, None)
        public = identity_tensors(public_split.load()["train"], cold_start)
    reward = IdentityReward.build(encoder, images, labels, names, public, options)
    policies = {f"cold start ({cold_path})": cold_start, f"DDPO ({ddpo_path})": ddpo}
    evaluation = evaluate_policies(
        policies,
        reward,
        args.seeds,
        config.eval_samples_per_identity,
        config.sample_num_steps,
        config.sample_guidance_scale,
        config.sample_eta,
    )
    test_images, test_labels = identity_tensors(data["test"], cold_start)
    real_rate = face_detection_rate(test_images)
    real_consistency = identity_consistency(
        reward.encode(test_images), test_labels, reward.bank.features, reward.bank.labels
    )

    print(
        f"\nPrivate {split.dataset_name} ({split.shots} shots, split seed {split.split_seed}); "
        f"{config.eval_samples_per_identity} samples x {len(names)} identities per policy and seed; "
        f"seeds {args.seeds}; "
        f"sampler: {config.sample_num_steps} DDIM steps, eta {config.sample_eta:g}, guidance "
        f"{config.sample_guidance_scale:g}. Mean +- std over seeds.\n"
    )
    print(evaluation_table(evaluation))
    print(
        f"\nReal held-out images ({len(test_images)}): face-detection rate {real_rate:.4f}, "
        f"identity consistency {real_consistency:.4f}\n"
    )
    cold, rl = policies
    for requirement, change, met in checks(evaluation, cold, rl):
        print(f"- {requirement}: change {change:+.4f} -> {'met' if met else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {"evaluation": evaluation, "real_face_rate": real_rate, "real_consistency": real_consistency},
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
