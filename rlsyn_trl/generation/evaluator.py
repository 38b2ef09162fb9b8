"""Identity consistency measured by an evaluator the reward never saw.

The DDPO policy is trained to please the reward's feature extractor phi, so "the nearest real-identity prototype in
phi's space is the sample's own identity" grows with every shortcut the policy finds in phi, whether or not a person
would recognise the face. The evaluator is another feature extractor of any kind (loaded like phi, through
:func:`rlsyn_trl.encoders.load_feature_extractor`), trained without the private identities; a run refuses one that
is phi itself, by folder or by weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..encoders import IdentityFeatureExtractor
from ..encoders.loading import onnx_file
from ..metrics.identity import nearest_prototype
from ..provenance import folder_revision
from ..settings import SettingsError
from ..utils.model_sources import resolve_pretrained_folder


def _fingerprint(path_or_id: str, revision: str | None) -> tuple[Path, str]:
    """Where a feature extractor lives and a hash of its weights (a single file, e.g. ONNX, hashes itself)."""
    path = onnx_file(path_or_id) or Path(path_or_id).expanduser()  # a missing .onnx file is named as one
    if path.is_file():
        return path.resolve(), hashlib.sha256(path.read_bytes()).hexdigest()
    folder = resolve_pretrained_folder(path_or_id, revision).resolve()
    return folder, folder_revision(folder)


def check_independent_evaluator(
    evaluator: str | None, evaluator_revision: str | None, phi: str, phi_revision: str | None = None
) -> None:
    """Refuse an evaluator that is the reward's phi: the same folder, id or weights (a copy in another folder)."""
    if evaluator is None:
        return
    same = evaluator == phi and evaluator_revision == phi_revision
    if not same:
        evaluator_folder, evaluator_weights = _fingerprint(evaluator, evaluator_revision)
        phi_folder, phi_weights = _fingerprint(phi, phi_revision)
        same = evaluator_folder == phi_folder or evaluator_weights == phi_weights
    if same:
        raise SettingsError(
            f"--evaluator {evaluator!r} is the reward's feature extractor phi ({phi}): the policy is trained to "
            "please phi, so its consistency figure cannot tell identity from reward hacking. Choose a feature "
            "extractor the reward never saw (on ORL: embedded:orl_faces/evaluator), or leave --evaluator unset."
        )


@torch.no_grad()
def consistent_with(
    evaluator: IdentityFeatureExtractor,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    bank_inputs: torch.Tensor,
    bank_labels: torch.Tensor,
) -> torch.Tensor:
    """Per sample: is the nearest real-identity prototype, in the evaluator's space, the sample's own identity?

    ``inputs`` and ``bank_inputs`` are images in ``[-1, 1]``; the evaluator brings them to its own input."""
    features = evaluator.encode_batched(inputs)
    bank = evaluator.encode_batched(bank_inputs)
    return nearest_prototype(features, bank, bank_labels) == labels
