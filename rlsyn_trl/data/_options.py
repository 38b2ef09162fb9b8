"""Checking a builder's config name and options as the config is made, before any file is listed or read.

``datasets`` only looks at most options once it builds the splits, after the data folder has been scanned (hundreds
of thousands of files for the large benchmarks) or deep in its own traceback. Builders here derive from
:class:`CheckedBuilder` and say what they accept in :meth:`CheckedBuilder.check_config`; the check runs when the
builder is constructed and, through :func:`rlsyn_trl.data.check_identity_options`, before it is.
"""

from __future__ import annotations

import copy

import datasets

from .option_checks import listed


def identity_features(names: list[str]) -> datasets.Features:
    """The columns every identity builder yields: the image, its identity as a class label over ``names`` and as
    text, and the file (or record) it came from; the stages read any identity dataset through them."""
    return datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=names),
            "identity": datasets.Value("string"),
            "source": datasets.Value("string"),
        }
    )


class CheckedBuilder(datasets.GeneratorBasedBuilder):
    """A builder that refuses an unknown (or, without a default, missing) config name and bad options at once.

    ``REGISTERED_NAME`` is the builder's name for :func:`rlsyn_trl.data.load_identity_dataset` and
    ``CONFIG_SETTING`` the setting users choose the config with; both are used in messages.
    """

    REGISTERED_NAME = ""
    CONFIG_SETTING = "`dataset_config` in the stage configs and recipes"

    @classmethod
    def config_names(cls) -> list[str]:
        return [config.name for config in cls.BUILDER_CONFIGS]

    @classmethod
    def check_config_name(cls, config_name: str | None) -> None:
        """Configs that are different data (face_verification's sets, CUHK03-NP's box sets) must be chosen."""
        names = cls.config_names()
        if config_name is None and (cls.DEFAULT_CONFIG_NAME is not None or len(names) <= 1):
            return
        if config_name in names:
            return
        example = f'load_identity_dataset("{cls.REGISTERED_NAME}", "{names[0]}", data_dir=...)'
        got = "no config name" if config_name is None else f"unknown config {config_name!r}"
        raise ValueError(
            f"{cls.REGISTERED_NAME} got {got}: choose one of {listed(names)} and pass it after the dataset name, "
            f"e.g. {example} ({cls.CONFIG_SETTING})."
        )

    @classmethod
    def check_config(cls, config: datasets.BuilderConfig) -> None:
        """Raise a ``ValueError`` naming a bad option of ``config``, what is allowed and the dataset. Default: none."""

    @classmethod
    def check_options(cls, config_name: str | None, **options) -> None:
        """The checks the builder's constructor runs, without constructing it (nothing is listed or read).

        ``options`` are config fields as the constructor takes them; ``None`` keeps the config's value, as in
        ``datasets``. Options the config has no field for are left to the constructor to refuse.
        """
        cls.check_config_name(config_name)
        name = config_name or cls.DEFAULT_CONFIG_NAME or (cls.config_names() or [None])[0]
        config = next((c for c in cls.BUILDER_CONFIGS if c.name == name), None)
        if config is None:
            return
        config = copy.deepcopy(config)
        for key, value in options.items():
            if value is not None and hasattr(config, key):
                setattr(config, key, value)
        cls.check_config(config)

    def _create_builder_config(self, config_name=None, custom_features=None, config_id=None, **config_kwargs):
        self.check_config_name(config_name)
        config, config_id = super()._create_builder_config(config_name, custom_features, config_id, **config_kwargs)
        self.check_config(config)
        return config, config_id
