"""Model folders written by training carry their model card."""

from __future__ import annotations

import torch
from huggingface_hub import ModelCard

from handseg.classes import CLASSES
from handseg.config_schema import to_dict
from handseg.model_io import InputSpec
from handseg.models import build_model
from tests.trainer.helpers import tiny_config, write_yaml
from trainer.checkpointing import RunRecord, TrainProgress, save_models
from trainer.config import load_train_config


def test_save_models_writes_the_model_card(tmp_path, phantom_root, tiny_segformer_cfg):
    cfg = load_train_config(write_yaml(tmp_path / "train.yaml", tiny_config(phantom_root, tmp_path / "run")))
    per_class = {name: 0.5 for name in CLASSES}
    record = RunRecord(config=to_dict(cfg), model=to_dict(cfg.model),
                       input=to_dict(InputSpec(mode="resize", image_size=128, tile_size=128)), stage=1,
                       data_fingerprint="abc", validation={"threshold": 0.5, "n_images": 2})
    info = record.info(TrainProgress(epoch=1, step=3), per_class, 0.5)
    torch.manual_seed(0)
    save_models(build_model(tiny_segformer_cfg), tmp_path / "run", info, best=True)
    assert (tmp_path / "run" / "last" / "README.md").is_file()
    card = ModelCard.load(tmp_path / "run" / "best" / "README.md")
    assert card.data.pipeline_tag == "image-segmentation" and card.data.eval_results[0].metric_value == 0.5
    assert "# tiny_stage1: hand-bone X-ray segmentation" in card.text
