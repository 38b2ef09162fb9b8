"""1-NN identification on the UNSEEN private ORL identities: raw pixels, the shipped identity encoder, and phi =
recognizers trained by the project's ORL recipe on the public identities only.

    OMP_NUM_THREADS=1 python benchmarks/feature_extractor.py [--encoder embedded:orl_faces/encoder] \
        [--recognizer_starts resnet-tiny embedded:orl_faces/encoder] [--seeds 0 1 2 3 4]

No feature extractor ever saw a private identity; the gallery is the k train shots, the queries the 10-k test
images. Each recognizer trains once, with `recipes/orl_faces/recognizer.yaml`'s settings, on the 200 images of
the public identities s1-s20 (from random weights for `resnet-tiny`, else fine-tuned from the given start), is saved
by the recipe's code path and loaded back as phi with `load_feature_extractor`, as `--encoder` would load it.
"""

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import yaml

from rlsyn_trl.data import dataset_to_tensors, load_identity_dataset
from rlsyn_trl.encoders import load_feature_extractor
from rlsyn_trl.metrics.identity import nearest_neighbour_accuracy
from rlsyn_trl.recipes import RECIPES_DIR
from rlsyn_trl.recognizer import RecognizerConfig, train_recognizer
from rlsyn_trl.utils.runtime import setup_runtime


def train_public_recognizer(start: str, output_dir: Path) -> str:
    """The ORL recipe's recognizer settings, on the public identities, from ``start``; returns the saved folder."""
    recipe = yaml.safe_load((RECIPES_DIR / "orl_faces" / "recognizer.yaml").read_text())
    fields = {field.name for field in dataclasses.fields(RecognizerConfig)}
    settings = {key: value for key, value in recipe.items() if key in fields}
    settings.update(model=start, output_dir=str(output_dir), disable_tqdm=True, report_to="none")
    train_recognizer(RecognizerConfig(**settings), load_identity_dataset("orl_faces", "public"))
    return str(output_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="embedded:orl_faces/encoder")
    parser.add_argument("--recognizer_starts", nargs="*", default=["resnet-tiny", "embedded:orl_faces/encoder"])
    parser.add_argument("--output_dir", default="outputs/benchmarks/feature_extractor")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    setup_runtime(offline=True)
    phis = {f"shipped encoder {args.encoder} (cosine, flip TTA)": load_feature_extractor(args.encoder)}
    for start in args.recognizer_starts:
        began = time.perf_counter()
        folder = train_public_recognizer(start, Path(args.output_dir) / start.replace(":", "_").replace("/", "_"))
        origin = "from scratch" if start == "resnet-tiny" else f"fine-tuned from {start}"
        name = f"recognizer on the public identities, {origin} (cosine, flip TTA)"
        phis[name] = load_feature_extractor(folder)
        print(f"{name}: trained in {time.perf_counter() - began:.0f} s, saved in {folder}")
    rows = {"raw 32x32 pixels (Euclidean)": [], **{name: [] for name in phis}}
    for shots in args.shots:
        values = {name: [] for name in rows}
        for seed in args.seeds:
            data = load_identity_dataset("orl_faces", "private", shots=shots, seed=seed)
            gallery, gallery_labels = dataset_to_tensors(data["train"], 32)
            query, query_labels = dataset_to_tensors(data["test"], 32)
            values["raw 32x32 pixels (Euclidean)"].append(
                nearest_neighbour_accuracy(query, query_labels, gallery, gallery_labels, "euclidean")
            )
            for name, phi in phis.items():
                features = phi.encode_batched(query), phi.encode_batched(gallery)
                values[name].append(nearest_neighbour_accuracy(features[0], query_labels, features[1], gallery_labels))
        for name, cells in values.items():
            rows[name].append(f"{100 * np.mean(cells):.1f} +- {100 * np.std(cells):.1f}")
    print(f"\n1-NN identification on private ORL (mean +- std over split seeds {args.seeds})\n")
    print("| features | " + " | ".join(f"{k} shot" for k in args.shots) + " |")
    print("|---|" + "---|" * len(args.shots))
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
