"""The identity-group sampling plan and per-identity advantages.

Each epoch draws identity GROUPS (``identities_per_epoch`` x ``samples_per_identity``) because the coverage and
expression reward terms are set-level. Which identities an epoch draws and each sample's noise seed are pure
functions of (seed, epoch, sample index), so every process and a resumed run agree; advantages compare each sample
only with its own identity's group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch


def epoch_identities(seed: int, epoch: int, num_identities: int, count: int) -> torch.Tensor:
    """The identities of one epoch, a pure function of (seed, epoch): every process and a resumed run agree."""
    rng = np.random.default_rng([seed, epoch])
    return torch.from_numpy(np.sort(rng.choice(num_identities, size=count, replace=False))).long()


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The noise seed of sample ``index`` of ``epoch``, independent of batch and process boundaries."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0])


def identity_advantages(rewards: torch.Tensor, labels: torch.Tensor, normalization: str = "epoch") -> torch.Tensor:
    """Each reward minus its identity group's mean, scaled by one std over the epoch or per group.

    Centring per identity compares a sample only with the samples of the same identity (identities differ in how
    easy they are). The default epoch-wide scale keeps a near-tied group of 4 from having its noise blown up to
    unit size, which a per-group std would do.
    """
    _, group = torch.unique(labels, return_inverse=True)
    count = torch.bincount(group).to(rewards.dtype)
    mean = torch.zeros_like(count).index_add_(0, group, rewards) / count
    centred = rewards - mean[group]
    if normalization == "group":
        scale = (torch.zeros_like(count).index_add_(0, group, centred**2) / count).sqrt()[group]
    elif normalization == "epoch":
        scale = centred.std(correction=0)
    else:
        raise ValueError(f"normalization must be 'epoch' or 'group', got {normalization!r}")
    return centred / (scale + 1e-8)


def identity_prompt_fn(label_names: Sequence[str], group_size: int, seed: int = 0) -> Callable[[], tuple[str, dict]]:
    """A stock DDPO prompt function: random identities, each repeated ``group_size`` times in a row.

    The stock trainer scores each sample batch on its own, so a batch must hold whole groups for the set-level
    terms; with ``sample_batch_size`` a multiple of ``group_size`` it does.
    """
    rng = np.random.default_rng(seed)
    state = {"label": 0, "left": 0}

    def prompt() -> tuple[str, dict]:
        if state["left"] == 0:
            state["label"], state["left"] = int(rng.integers(len(label_names))), group_size
        state["left"] -= 1
        return label_names[state["label"]], {"label": state["label"]}

    return prompt
