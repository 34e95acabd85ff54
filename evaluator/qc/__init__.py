"""Quality control without labels: does each prediction deserve trust, per image and per bone?

A hand has 29 bones, each once, in fixed chains and neighbourhoods, with sizes that scale together; the model
says how sure it is and its two stages (and flip TTA) can be compared. From these alone QC predicts each
image's (and bone's) Dice, flags images for review and says why in words. Evaluation-only: it runs inside
``predict.py`` and the submission run, and never changes a mask.

``geometry`` (areas, centroids, pieces, overlaps, the hand's frame), ``reference`` (training's ranges, from the
training labels), ``probes`` (uncertain pixels, stage 1 against the cascade, flip TTA), ``signals`` (the
per-bone features and per-image findings' inputs), ``model`` (the predicted-Dice model and its file),
``findings`` (flags and reasons), ``assess`` (one prediction with its QC), ``files`` (``qc.csv``, JSON
attributes), ``fitting`` (the model fitted on validation predictions), ``evaluation`` (the QC report's
measures), ``report_section`` (the "flagged for review" section of ``report.html``).
"""
