"""Shared core of the hand-bone segmentation project, in subpackages whose names are the map.

Imports run one way, from the bottom up; a package never imports one above it (``tests/test_layers.py``):

=============  ====================================================================  ==========================
package        job                                                                   may import
=============  ====================================================================  ==========================
``runtime``    atomic writes, locks, launching, typed configs, one-line errors       (nothing of handseg)
``format``     the contract with the outside world: classes, annotation JSON,        runtime
               polygons, rasterisation, RLE, submission CSV, Dice, result files
``data``       finding images and labels, person-grouped folds, image I/O, the       runtime, format
               ``data:`` config section
``phantom``    the phantom data generator                                            runtime, format, data
``model``      the model factory, input spec and normalisation, checkpoints, cards   runtime, format, data
``inference``  the one inference path: engines, resize or tiles, blending,           runtime, format, data,
               thresholds, post-processing, hand normalisation, scoring              model
=============  ====================================================================  ==========================

Nothing in ``handseg`` imports ``trainer`` or ``evaluator``: what only training uses lives in ``trainer/``, what
only evaluation uses in ``evaluator/``.
"""

__version__ = "0.1.0"
