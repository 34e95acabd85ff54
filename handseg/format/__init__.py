"""The competition's formats, as pure functions: the 29 classes (``classes``), annotation JSON
(``annotations``), polygons from masks (``polygons``), rasterisation (``rasterize``), masks kept in per-class
boxes (``class_masks``), RLE (``rle``), the submission CSV (``submission``), Dice (``metrics``), areas in mm^2
(``areas``), polygon clipping (``geometry``) and the project's own result files (``result_files``).

May import: ``handseg.runtime``.
"""

from handseg.format.annotations import read_annotation, write_annotation
from handseg.format.classes import CLASSES, NUM_CLASSES
from handseg.format.metrics import dice_score
from handseg.format.rasterize import rasterize
from handseg.format.rle import rle_decode, rle_encode
from handseg.format.submission import read_submission, write_submission

__all__ = ["CLASSES", "NUM_CLASSES", "dice_score", "rasterize", "read_annotation", "read_submission", "rle_decode",
           "rle_encode", "write_annotation", "write_submission"]
