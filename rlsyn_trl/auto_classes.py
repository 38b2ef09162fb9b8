"""``import rlsyn_trl`` makes the ``transformers`` Auto classes know the package's models, without importing
``transformers`` (or torch) itself: the CLI and ``import rlsyn_trl`` stay light.

A finder on ``sys.meta_path`` waits for transformers' own ``configuration_auto`` and ``modeling_auto`` modules
and registers the package's configs and models the moment each has been executed (or at once when they already
are). ``AutoModel.from_pretrained(folder)`` then loads a recognizer saved by ``train_recognizer``, and so does phi's
loader (:mod:`rlsyn_trl.encoders.loading`). The Auto mapping holds :class:`LazyRecognizerModel`, which imports the
real model class (:class:`rlsyn_trl.recognizer.pretrained.RecognizerModel`) only when such a folder is loaded.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys

CONFIG_MODULE = "transformers.models.auto.configuration_auto"
MODEL_MODULE = "transformers.models.auto.modeling_auto"


class LazyRecognizerModel:
    """Stands in the Auto mappings for ``RecognizerModel``: its ``from_pretrained`` / ``from_config`` import the
    real class (torch, the recognizer's backbones) only when a recognizer is actually loaded or built."""

    @staticmethod
    def model_class() -> type:
        from .recognizer.pretrained import RecognizerModel

        return RecognizerModel

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        return cls.model_class().from_pretrained(*args, **kwargs)

    @classmethod
    def _from_config(cls, config, **kwargs):
        return cls.model_class()._from_config(config, **kwargs)

    from_config = _from_config


def register_configs() -> None:
    """``AutoConfig`` knows the recognizer's config (idempotent)."""
    from transformers import AutoConfig

    from .recognizer.model_configs import RecognizerModelConfig

    AutoConfig.register(RecognizerModelConfig.model_type, RecognizerModelConfig, exist_ok=True)


def register_models() -> None:
    """``AutoModel`` and ``AutoModelForImageClassification`` load a saved recognizer (idempotent)."""
    from transformers import AutoModel, AutoModelForImageClassification

    from .recognizer.model_configs import RecognizerModelConfig

    register_configs()
    LazyRecognizerModel.config_class = RecognizerModelConfig
    for auto in (AutoModel, AutoModelForImageClassification):
        auto.register(RecognizerModelConfig, LazyRecognizerModel, exist_ok=True)


def _register(module_name: str) -> None:
    if module_name == CONFIG_MODULE:
        register_configs()
    else:
        register_models()


class _LoaderWithHook(importlib.abc.Loader):
    """The module's own loader, then the registration."""

    def __init__(self, loader: importlib.abc.Loader, name: str) -> None:
        self.loader, self.name = loader, name

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        _register(self.name)

    def __getattr__(self, name: str):
        """Everything else (``get_source``, ``is_package``, ...) is the module's own loader's."""
        if name == "loader":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)


class AutoClassFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it lets the other finders find the two Auto modules and wraps their loaders."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in (CONFIG_MODULE, MODEL_MODULE):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _LoaderWithHook(spec.loader, fullname)
                return spec
        return None


def install() -> None:
    """Register now for the Auto modules already imported; register the others when they are (idempotent)."""
    for name in (CONFIG_MODULE, MODEL_MODULE):
        if name in sys.modules:
            _register(name)
    if not any(isinstance(finder, AutoClassFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, AutoClassFinder())
