"""Train on synthetic, test on real: how much identity a finished main job's synthetic sets carry, in phi's space.

    python benchmarks/synthetic_prototypes.py --run outputs/main [--weights 0.1 0.25 0.5]

A nearest-class-mean classifier on the public feature extractor's features (the recognizer's start) identifies the
real test images with class means from: the real training images only; each synthetic set only (no real image at
all, the "train on synthetic, test on real" check); and mixtures ``(1 - w) * real mean + w * synthetic mean``. A
synthetic set whose own class means identify fewer test images than the real ones pull a mixture down: the
recognizer cannot gain from it whatever the mixing or selection. Also reported on the face-detected samples only.
Takes seconds; no training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import datasets
import torch
import torch.nn.functional as F

from rlsyn_trl.data import dataset_to_tensors, load_identity_dataset
from rlsyn_trl.encoders import load_encoder
from rlsyn_trl.utils.runtime import setup_runtime


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Normalised mean feature of each class, ``[num_classes, D]``."""
    sums = torch.zeros(num_classes, features.shape[1]).index_add_(0, labels, features)
    return F.normalize(sums, dim=-1)


def accuracy(means: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> float:
    return 100 * ((features @ means.t()).argmax(1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs="+", default=["outputs/main"], help="finished main-job output folders")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    args = parser.parse_args()
    setup_runtime(offline=True)
    print("| run | class means from | all samples | face-detected samples only |\n|---|---|---|---|")
    for run in map(Path, args.run):
        job = json.loads((run / "results.json").read_text())["config"]
        encoder = load_encoder(job["encoder"])
        real = load_identity_dataset("orl_faces", "private", shots=job["shots"], seed=job["split_seed"])
        num_classes = real["train"].features["label"].num_classes
        train_images, train_labels = dataset_to_tensors(real["train"])
        test_images, test_labels = dataset_to_tensors(real["test"])
        test = encoder.encode_batched(test_images), test_labels
        real_means = class_means(encoder.encode_batched(train_images), train_labels, num_classes)
        tag = f"{run.name} ({job['shots']} shot, split {job['split_seed']})"
        print(f"| {tag} | real training images | {accuracy(real_means, *test):.1f} | - |")
        for folder in sorted(run.glob("synthetic_*/dataset")):
            synthetic = datasets.load_from_disk(str(folder))
            images, labels = dataset_to_tensors(synthetic)
            features = encoder.encode_batched(images)
            faces = torch.tensor(synthetic["face_detected"])
            means = class_means(features, labels, num_classes)
            face_means = class_means(features[faces], labels[faces], num_classes)
            name = folder.parent.name.removeprefix("synthetic_")
            print(
                f"| {tag} | {name} synthetic only | {accuracy(means, *test):.1f} | {accuracy(face_means, *test):.1f} |"
            )
            for weight in args.weights:
                cells = [
                    accuracy(F.normalize((1 - weight) * real_means + weight * synthetic_means, dim=-1), *test)
                    for synthetic_means in (means, face_means)
                ]
                print(f"| {tag} | real + {weight:g} x {name} | {cells[0]:.1f} | {cells[1]:.1f} |")


if __name__ == "__main__":
    main()
