"""Shared fixtures, and how the suite stays fast on two cores (``make test``: ``pytest -n 2 --dist loadgroup``).

Every test process (pytest-xdist worker or a subprocess a test starts) runs torch on one intra-op thread: two workers
share two cores, and idle OpenMP threads spinning on a loaded machine cost more than they give. AOTInductor
compiles write their kernels to a cache under ``.cache/inductor`` (``TORCHINDUCTOR_CACHE_DIR``, git-ignored), which
every worker and later run reuses; Inductor locks and renames its cache files, so the workers share it safely.

How a new test stays cheap:

- **Expensive shared fixtures are built once.** A session fixture named in :data:`XDIST_GROUPS` (the AOTInductor
  engine, the shared tiny training run) puts every test that uses it, directly or through another fixture, in one
  xdist group: one worker builds it, once. A test that uses a module-scoped fixture runs with the rest of its
  module on one worker. Tests that need two groups join them into one. Nothing to add to the test itself; a new
  expensive session fixture gets its name in :data:`XDIST_GROUPS`; ``@pytest.mark.xdist_group("name")`` groups
  tests explicitly.
- **A trained checkpoint comes from** :func:`tiny_run` (one stage 1, a stage 2 and a cascade trained from it, each
  on first use), not from a training of the test's own, unless the training is what is tested (resume, signals,
  locks, two processes).
- **A command is run in this process**, ``tests.commands.run_main(main, *argv)`` (exit code, stdout, stderr as a
  subprocess gives them), unless the process itself is tested (an exit code through the launcher, a signal, a
  killed process, the modules a fresh process imports).
- **Nothing is written into the repository**: runs, outputs and engines go to ``tmp_path``. Tests run in any order
  and on either worker.
- ``@pytest.mark.slow`` (end-to-end runs) schedules a test's module before the others, so the long tests do not
  end the run alone on one worker; ``--durations=15`` in ``make test`` shows the slowest.
"""

from __future__ import annotations

import os
from pathlib import Path

# Before torch is imported, and inherited by every subprocess a test starts.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(REPO_ROOT / ".cache" / "inductor"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# Session fixtures that are expensive to build (a compile, trainings): their users share one xdist group.
XDIST_GROUPS = ("aoti_engine", "tiny_run")


def _groups_of(item: pytest.Item) -> set[str]:
    """The xdist groups ``item`` needs: its explicit marks, the grouped session fixtures it uses, and its module
    where it uses a module- or class-scoped fixture."""
    names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
    names.update(name for name in item.fixturenames if name in XDIST_GROUPS)
    defs = getattr(item, "_fixtureinfo", None)
    for name in item.fixturenames:
        fixturedefs = defs.name2fixturedefs.get(name, ()) if defs else ()
        if fixturedefs and fixturedefs[-1].scope in ("module", "class", "package"):
            names.add(item.nodeid.split("::")[0])
    return names


def _join_groups(items: list[pytest.Item]) -> dict[str, str]:
    """Group name -> the name of the union it belongs to (groups that one test needs together are one)."""
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    for item in items:
        names = sorted(_groups_of(item))
        for other in names[1:]:
            a, b = sorted((root(names[0]), root(other)))
            parent[b] = a
        if names:
            root(names[0])
    members: dict[str, list[str]] = {}
    for name in parent:
        members.setdefault(root(name), []).append(name)
    return {name: "+".join(sorted(members[root(name)])) for name in parent}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every test one ``xdist_group`` (see the module docstring), and on xdist workers put the modules that
    hold ``slow`` tests first (each module stays in one piece, so its module fixtures are built once)."""
    union = _join_groups(items)
    final = {item.nodeid: union[min(_groups_of(item))] for item in items if _groups_of(item)}
    for item in items:
        for node in item.listchain():  # the union replaces the marks it was made of
            node.own_markers[:] = [m for m in node.own_markers if m.name != "xdist_group"]
    for item in items:
        if item.nodeid in final:
            item.add_marker(pytest.mark.xdist_group(final[item.nodeid]))
    if hasattr(config, "workerinput"):
        slow_modules = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
        items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow_modules)  # stable


def pytest_collection_finish(session: pytest.Session) -> None:
    """Say so where pytest-xdist did not take the groups (it marks a grouped test's id with ``@group``): every
    worker would then build the shared fixtures of its own."""
    if session.config.getoption("dist", None) == "loadgroup" and any(
            item.get_closest_marker("xdist_group") and "@" not in item.nodeid for item in session.items):
        import warnings

        warnings.warn(pytest.PytestWarning(
            "pytest-xdist ignored the xdist_group marks (see requirements-dev.txt): shared fixtures are built on "
            "every worker"), stacklevel=1)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A tiny phantom data set in the competition layout: 4 train IDs (8 images), 2 test IDs, 256 px, seed 0."""
    from handseg.phantom import PhantomSpec, generate_dataset

    root = tmp_path_factory.mktemp("phantom") / "data"
    generate_dataset(root, PhantomSpec(train_ids=4, test_ids=2, size=256, seed=0), preview=False, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_run(phantom_root, tmp_path_factory):
    """The shared tiny training run on ``phantom_root`` (:class:`tests.trainer.helpers.TinyRun`): ``.stage1``,
    ``.stage2`` and ``.cascade`` are output folders, each trained by the training command on first use."""
    from tests.trainer.helpers import TinyRun

    return TinyRun(phantom_root, tmp_path_factory.mktemp("tiny_run"))


@pytest.fixture()
def tiny_segformer_cfg():
    from handseg.model.presets import ModelConfig

    return ModelConfig(arch="segformer", preset="test")


@pytest.fixture()
def tiny_upernet_cfg():
    from handseg.model.presets import ModelConfig

    return ModelConfig(arch="upernet", preset="test")
