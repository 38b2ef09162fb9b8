"""1-NN identification on the UNSEEN private ORL identities: identity encoder features vs raw pixels.

    python benchmarks/feature_extractor.py [--encoder embedded:orl_faces/encoder] [--seeds 0 1 2 3 4]

The encoder never saw a private identity; the gallery is the k train shots, the queries the 10-k test images.
"""

import argparse

import numpy as np

from rlsyn_trl.data import dataset_to_tensors, load_identity_dataset
from rlsyn_trl.encoders import load_encoder
from rlsyn_trl.metrics.identity import nearest_neighbour_accuracy
from rlsyn_trl.runtime import setup_runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="embedded:orl_faces/encoder")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    setup_runtime(offline=True)
    encoder = load_encoder(args.encoder)
    resolution = encoder.config.image_size
    rows = {"raw 32x32 pixels (Euclidean)": [], f"encoder {args.encoder} (cosine)": []}
    for shots in args.shots:
        pixels, features = [], []
        for seed in args.seeds:
            data = load_identity_dataset("orl_faces", "private", shots=shots, seed=seed)
            gallery, gallery_labels = dataset_to_tensors(data["train"], resolution)
            query, query_labels = dataset_to_tensors(data["test"], resolution)
            pixels.append(nearest_neighbour_accuracy(query, query_labels, gallery, gallery_labels, "euclidean"))
            features.append(
                nearest_neighbour_accuracy(
                    encoder.encode_batched(query), query_labels, encoder.encode_batched(gallery), gallery_labels
                )
            )
        for name, values in zip(rows, (pixels, features)):
            rows[name].append(f"{100 * np.mean(values):.1f} +- {100 * np.std(values):.1f}")
    print(f"1-NN identification on private ORL (mean +- std over split seeds {args.seeds})\n")
    print("| features | " + " | ".join(f"{k} shot" for k in args.shots) + " |")
    print("|---|" + "---|" * len(args.shots))
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
