"""Model folders written by training carry their model card."""

from __future__ import annotations

import torch
from huggingface_hub import ModelCard

from handseg.classes import CLASSES
from handseg.config_schema import to_dict
from handseg.models import InputSpec, build_model
from tests.trainer.helpers import tiny_config, write_yaml
from trainer.checkpointing import TrainProgress, run_record, save_model
from trainer.config import load_train_config


def test_save_model_writes_the_model_card(tmp_path, phantom_root, tiny_segformer_cfg):
    cfg = load_train_config(write_yaml(tmp_path / "train.yaml", tiny_config(phantom_root, tmp_path / "run")))
    per_class = {name: 0.5 for name in CLASSES}
    info = run_record(cfg_dict=to_dict(cfg), model_cfg=to_dict(cfg.model),
                      spec=to_dict(InputSpec(mode="resize", image_size=128, tile_size=128)), stage=1,
                      progress=TrainProgress(epoch=1, step=3), dice=per_class, mean_dice=0.5, fingerprint="abc",
                      val_settings={"threshold": 0.5, "n_images": 2})
    torch.manual_seed(0)
    save_model(build_model(tiny_segformer_cfg), tmp_path / "run" / "best", info)
    card = ModelCard.load(tmp_path / "run" / "best" / "README.md")
    assert card.data.pipeline_tag == "image-segmentation" and card.data.eval_results[0].metric_value == 0.5
    assert "# tiny_stage1: hand-bone X-ray segmentation" in card.text
