"""ORL's public/private halves and the private split: which images of which identity train, and the checks of the
split's options.

Free of ``datasets`` and the image libraries, so ``rlsyn-trl run-all --shots 7`` is refused with the builder's own
message before either is imported.
"""

from __future__ import annotations

import numpy as np

from .option_checks import require_choice, require_count

NUM_IDENTITIES = 40
IMAGES_PER_IDENTITY = 10
PUBLIC_IDENTITIES = tuple(range(1, 21))
PRIVATE_IDENTITIES = tuple(range(21, 41))
ALLOWED_SHOTS = (1, 2, 3, 5)
PRIVATE_CONFIG = "orl_faces/private"


def check_private_options(shots, seed) -> None:
    """Refuse split options the private half does not have, naming the allowed values."""
    require_choice(PRIVATE_CONFIG, "shots", shots, ALLOWED_SHOTS, "real training images per private identity")
    require_count(PRIVATE_CONFIG, "seed", seed, "the split seed, `split_seed` in the stages", minimum=0)


def private_split(seed: int, shots: int) -> dict[int, tuple[list[int], list[int]]]:
    """Image numbers (1..10) of each private identity for ``train`` (k shots) and ``test`` (the rest).

    A single ``numpy`` generator seeded by ``seed`` permutes each identity's images in a fixed order, so the
    split is a pure function of (seed, shots) and the train images of k shots are a prefix of those of k+1.
    """
    if shots not in ALLOWED_SHOTS:
        raise ValueError(f"shots must be one of {ALLOWED_SHOTS}, got {shots}")
    rng = np.random.default_rng(seed)
    split = {}
    for identity in PRIVATE_IDENTITIES:
        order = (rng.permutation(IMAGES_PER_IDENTITY) + 1).tolist()
        split[identity] = (sorted(order[:shots]), sorted(order[shots:]))
    return split
