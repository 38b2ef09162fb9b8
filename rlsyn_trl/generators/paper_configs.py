"""The architecture of the paper's base generator, shipped with the package: ``facebook/DiT-XL-2-256``.

The cold start of the paper-scale recipes (``recipes/casia_webface``, ``recipes/market1501``, ``recipes/cuhk03_*``)
starts from DiT-XL/2 in the latent space of the Stable Diffusion VAE. Its component configs live in
``assets/dit_xl_2_256.json`` (the published ``transformer/``, ``vae/`` and ``scheduler/`` configs, which
``model_index.json`` does not record) so that the model can be built at its true size, with random weights and no
download: ``benchmarks/gpu_smoke.py`` measures the recipes that way, and tests check the true-size path. Real runs
load the published weights with ``IdentityGenerator.from_pretrained("facebook/DiT-XL-2-256")``.
"""

from __future__ import annotations

import copy
import json
from functools import cache

from ..utils.model_sources import ASSETS

PAPER_BASE_MODEL = "facebook/DiT-XL-2-256"
PAPER_CONFIG_FILE = ASSETS / "dit_xl_2_256.json"
COMPONENTS = ("transformer", "vae", "scheduler")


@cache
def _components() -> dict[str, dict]:
    values = json.loads(PAPER_CONFIG_FILE.read_text())
    return {name: values[name] for name in COMPONENTS}


def paper_config(component: str) -> dict:
    """A fresh copy of one component's config: ``transformer`` (``DiTTransformer2DModel``), ``vae``
    (``AutoencoderKL``) or ``scheduler`` (``DDIMScheduler``); each is the keyword arguments of that class."""
    if component not in COMPONENTS:
        raise KeyError(f"{PAPER_BASE_MODEL} has the components {COMPONENTS}, not {component!r}.")
    return copy.deepcopy(_components()[component])


def dit_xl_2_config() -> dict:
    """DiT-XL/2: 28 blocks, 16 heads x 72 (1,152 wide), patch 2 on 32x32x4 latents, 1,000 classes, learned variance."""
    return paper_config("transformer")


def sd_vae_config() -> dict:
    """The Stable Diffusion VAE: 4 latent channels, downsampling by 8 (block widths 128, 256, 512, 512)."""
    return paper_config("vae")


def dit_scheduler_config() -> dict:
    """The linear beta schedule DiT was trained on, for DDIM."""
    return paper_config("scheduler")
