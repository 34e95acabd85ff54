"""A data root in the competition layout: its images and labels grouped by person (``dataset_index``: the index,
group K-fold, the one validation split), the optional per-person table in English or Korean (``meta_data``),
image I/O (``image_io``) and the ``data:`` section of a training config (``data_config``), which checkpoints
record so that evaluation rebuilds the same split.

May import: ``handseg.runtime``, ``handseg.format``.
"""

from handseg.data.data_config import DataConfig
from handseg.data.dataset_index import DataSplit, Sample, index_split, load_split
from handseg.data.image_io import read_image, write_png

__all__ = ["DataConfig", "DataSplit", "Sample", "index_split", "load_split", "read_image", "write_png"]
