"""Do synthetic public faces make a better phi? 1-NN identification of the unseen private ORL identities, per split
seed, for any number of encoders; and the seconds a face takes to render.

    OMP_NUM_THREADS=1 python benchmarks/public_faces.py --encoders embedded:orl_faces/encoder outputs/x/encoder \
        [--shots 1] [--seeds 0 1 2] [--time_render 20]

The protocol is ``benchmarks/feature_extractor.py``'s: gallery = the k train shots of each private identity s21-s40,
queries = its other 10-k images, 32x32 grayscale, cosine in phi's space with flip test-time augmentation; no phi saw
a private identity. ``--time_render N`` renders N faces into a fresh folder with one OpenVINO thread and reports the
set-up (compile + the truncation centre) and the seconds a face.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from rlsyn_trl.data import dataset_to_tensors, load_identity_dataset
from rlsyn_trl.encoders import load_feature_extractor
from rlsyn_trl.metrics.identity import nearest_neighbour_accuracy
from rlsyn_trl.utils.runtime import setup_runtime


def identification(references: list[str], shots: list[int], seeds: list[int]) -> dict:
    """``{(reference, shots): [accuracy per seed]}``."""
    phis = {reference: load_feature_extractor(reference) for reference in references}
    results = {}
    for k in shots:
        for seed in seeds:
            data = load_identity_dataset("orl_faces", "private", shots=k, seed=seed)
            gallery, gallery_labels = dataset_to_tensors(data["train"], 32)
            query, query_labels = dataset_to_tensors(data["test"], 32)
            for reference, phi in phis.items():
                features = phi.encode_batched(query), phi.encode_batched(gallery)
                accuracy = nearest_neighbour_accuracy(features[0], query_labels, features[1], gallery_labels)
                results.setdefault((reference, k), []).append(100 * accuracy)
    return results


def time_render(num_faces: int) -> tuple[float, float]:
    """(set-up seconds, seconds a face) for ``num_faces`` faces rendered with one thread into a fresh folder."""
    from rlsyn_trl.data import synthetic_faces as faces

    began = time.perf_counter()
    renderer = faces.FaceRenderer(truncation=0.7, threads=1)
    setup = time.perf_counter() - began
    latents = faces.face_latents(0, num_faces)
    with tempfile.TemporaryDirectory() as folder:
        began = time.perf_counter()
        for index in range(num_faces):
            renderer.render(latents[index]).save(Path(folder) / f"{index}.png")
        return setup, (time.perf_counter() - began) / num_faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="*", default=["embedded:orl_faces/encoder"])
    parser.add_argument("--shots", type=int, nargs="+", default=[1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--time_render", type=int, default=0, help="Faces to render for the timing (0: none).")
    args = parser.parse_args()
    setup_runtime(offline=True, threads=1)
    if args.time_render:
        setup, per_face = time_render(args.time_render)
        print(f"render: set-up {setup:.1f} s, {per_face:.3f} s a face over {args.time_render} faces (1 thread)")
    if not args.encoders:
        return
    results = identification(args.encoders, args.shots, args.seeds)
    print(f"\n1-NN identification on private ORL, % (split seeds {args.seeds})\n")
    print("| phi | shots | " + " | ".join(f"seed {seed}" for seed in args.seeds) + " | mean +- std |")
    print("|---|---|" + "---|" * (len(args.seeds) + 1))
    for (reference, k), values in results.items():
        cells = " | ".join(f"{value:.1f}" for value in values)
        print(f"| {reference} | {k} | {cells} | {np.mean(values):.1f} +- {np.std(values):.1f} |")


if __name__ == "__main__":
    main()
