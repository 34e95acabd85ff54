"""The run's trackers (TensorBoard, wandb): which ones a config asks for, its hyper-parameters in the flat form they
take, and a context that starts and ends them."""

from __future__ import annotations

import contextlib
from pathlib import Path

from accelerate import Accelerator

from handseg.runtime.errors import ConfigError
from trainer.config import TrainConfig


def check_trackers(cfg: TrainConfig, cfg_path: Path) -> list[str]:
    """Tracker names for Accelerate; wandb asked for but not installed is a config error."""
    if "wandb" in cfg.logging.trackers:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError(cfg_path, "logging.trackers", "wandb is not installed (pip install wandb, "
                                                            "or use tensorboard)") from None
    return list(dict.fromkeys(cfg.logging.trackers))


def flat_hparams(data: dict, prefix: str = "") -> dict:
    """Nested config -> flat {dotted.key: scalar} (TensorBoard hparams accept only scalars and strings)."""
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


@contextlib.contextmanager
def tracking(accelerator: Accelerator, cfg: TrainConfig, trackers: list[str], config: dict):
    """TensorBoard / wandb for the run (``logging.project``, run ``run_name``), ended on every way out (which also
    ends the process group: collectives belong inside)."""
    if trackers:
        accelerator.init_trackers(cfg.logging.project, config=flat_hparams(config),
                                  init_kwargs={"wandb": {"name": cfg.run_name}})
    try:
        yield
    finally:
        if trackers:
            accelerator.end_training()
