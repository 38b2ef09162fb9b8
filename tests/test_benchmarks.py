"""Every benchmark script imports: a refactor that moves a name out from under one is caught here, not when someone
runs the benchmark hours later (the scripts run their work only under ``__main__``)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(path.name for path in BENCHMARKS.glob("*.py")))
def test_the_benchmark_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # a script may import a sibling (gpu_smoke imports true_size)
    name = f"benchmark_{Path(script).stem}"
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    if '__name__ == "__main__"' in (BENCHMARKS / script).read_text():  # a script, not a helper module of others
        assert callable(getattr(module, "main", None)), f"{script} has no main()"
