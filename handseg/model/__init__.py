"""The networks and their artefacts: the one model factory (``factory``: SegFormer and UperNet with 29 sigmoid
outputs, the cascade's refiner; ``pretrained``: starting from hub or local weights), how an image becomes model
input and logits become output (``io``: the input spec, normalisation, upsampling; ``intensity``: the per-image
intensity standardisation), checkpoints as Hugging Face folders (``checkpoint``) and their model cards (``card``).

May import: ``handseg.runtime``, ``handseg.format``, ``handseg.data``.
"""

from handseg.model.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
from handseg.model.factory import build_model
from handseg.model.io import InputSpec
from handseg.model.presets import ModelConfig

__all__ = ["InputSpec", "LoadedCheckpoint", "ModelConfig", "build_model", "load_checkpoint", "save_checkpoint"]
