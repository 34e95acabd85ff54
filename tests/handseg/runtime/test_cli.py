"""Every command's ``--help`` says what it does and shows its example, as the README shows it; exit code 0."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest

from handseg.runtime.cli import command_parser, usage_block
from tests.commands import REPO_ROOT, load_script, run_main

SCRIPTS = ["dataset_summary", "eda", "fit_qc", "make_failure_cases", "make_phantom", "polygon_fidelity", "push_to_hub",
           "qc_report", "resolution_ceiling", "robustness", "scale_sweep", "score_submission", "tune_thresholds",
           "predict", "evaluate_efficiency", "tensorrt_aot"]
MODULES = ["evaluator.run_eval", "trainer.prepare"]
BENCHMARKS = ["bench_deploy", "bench_inference", "bench_loader", "bench_qc", "bench_rle", "bench_tiling"]


def benchmark(name: str):
    folder = str(REPO_ROOT / "benchmarks")
    if folder not in sys.path:
        sys.path.append(folder)  # the benchmarks import their helpers by name, as running them does
    spec = importlib.util.spec_from_file_location(f"bench_cli_{name}", REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_is_the_docstrings_indented_block_kept_as_written():
    doc = "Do a thing.\n\n    python x.py --a 1\n        [--b 2]\n\nMore words.\n"
    assert usage_block(doc) == "python x.py --a 1\n    [--b 2]"
    text = command_parser(doc, prog="x.py").format_help()
    assert "Do a thing." in text and "example:\n  python x.py --a 1\n      [--b 2]" in text
    assert usage_block("No example here.\n\nNone either.") is None
    assert "example:" not in command_parser("No example.", prog="x").format_help()


@pytest.mark.parametrize("kind, name", [("script", n) for n in SCRIPTS] + [("module", n) for n in MODULES]
                         + [("benchmark", n) for n in BENCHMARKS])
def test_help_shows_the_example(kind: str, name: str):
    module = {"script": load_script, "module": importlib.import_module, "benchmark": benchmark}[kind](name)
    proc = run_main(module.main, "--help")
    assert proc.returncode == 0, proc.stderr
    first = usage_block(module.__doc__).splitlines()[0]
    assert "example:" in proc.stdout and first in proc.stdout, proc.stdout
