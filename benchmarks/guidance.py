"""How classifier-free guidance trades faces for identity: a prior's grid at several guidance scales, read by the
face detector (against the real photos of the same identities) and by phi (is a sample's nearest identity its own?).

    OMP_NUM_THREADS=2 python benchmarks/guidance.py [--prior embedded:orl_faces] [--scales 1 1.5 2 3 4]
        [--per-identity 4] [--steps 50] [--eta 0] [--intervals 0,1 0.5,1 0.7,1]

The prior's labels are ORL's public identities s1-s20, so the real reference is their 200 photos at the prior's
resolution. Guidance 1 is the conditional model alone; every scale uses the same seed, so the rows differ only by
the scale. The ratio column is the grid's detection rate over the real photos' (the realism target is 0.9).
``--intervals`` runs each scale with guidance limited to those noise levels t/T (the conditional model elsewhere).
"""

import argparse
import itertools
import time

import torch

from rlsyn_trl.data import dataset_to_tensors, load_identity_dataset
from rlsyn_trl.encoders import load_feature_extractor
from rlsyn_trl.generation.realism import face_detection_rate
from rlsyn_trl.generators import load_generator
from rlsyn_trl.metrics.identity import identity_consistency
from rlsyn_trl.utils.checks import parse_guidance_interval
from rlsyn_trl.utils.runtime import setup_runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default="embedded:orl_faces")
    parser.add_argument("--encoder", default="embedded:orl_faces/encoder", help="phi, for the own-identity column.")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0, 4.0])
    parser.add_argument("--per-identity", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--eta", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--intervals",
        nargs="+",
        default=["0,1"],
        help='Noise-level intervals "lo,hi" of t/T where guidance applies (each scale is run with each; "0,1": all).',
    )
    args = parser.parse_args()
    setup_runtime(offline=True)

    generator = load_generator(args.prior, torch_dtype=torch.float32)
    phi = load_feature_extractor(args.encoder)
    real, real_labels = dataset_to_tensors(load_identity_dataset("orl_faces", "public")["train"], 32)
    real_rate = face_detection_rate(real)
    real_features = phi.encode_batched(real)
    labels = torch.arange(generator.num_classes).repeat_interleave(args.per_identity)
    print(f"{args.prior}: {len(labels)} samples, {args.steps} DDIM steps, eta {args.eta:g}, seed {args.seed}")
    print(f"real photos of the prior's identities: face detection {100 * real_rate:.1f}%")
    print("| guidance | interval | face detection | x real | own identity (phi) | pixel std | seconds |")
    print("|---|---|---|---|---|---|---|")
    runs = [(scale, interval) for scale, interval in itertools.product(args.scales, args.intervals)]
    runs = list(dict.fromkeys((scale, "0,1" if scale == 1 else interval) for scale, interval in runs))  # 1: no guidance
    for scale, interval in runs:
        low, high = parse_guidance_interval(interval, "intervals")
        began = time.perf_counter()
        images = generator.sample(
            labels,
            seed=args.seed,
            guidance_scale=scale,
            guidance_interval=(low, high),
            num_inference_steps=args.steps,
            eta=args.eta,
        )
        seconds = time.perf_counter() - began
        rate = face_detection_rate(images)
        own = identity_consistency(phi.encode_batched(images), labels, real_features, real_labels)
        print(
            f"| {scale:g} | {low:g}-{high:g} | {100 * rate:.1f}% | {rate / real_rate:.2f} | {100 * own:.1f}% | "
            f"{images.float().std():.3f} | {seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
