"""Phantom hand X-rays: a deterministic generator of data sets in the competition layout.

``render_hand`` draws one image with its 29 exact bone outlines; ``generate_dataset`` writes the whole data set a
``PhantomSpec`` defines (train and test images, annotations, meta data, a sample submission and held-out test
labels).

Modules: ``shapes`` (outline primitives), ``anatomy`` (skeleton in mm), ``placement`` (mm -> pixels,
annotation polygons), ``soft_tissue``, ``extras`` (rings, implants, marker), ``render`` (the X-ray),
``dataset`` (the layout on disk), ``preview`` (contact sheets).
"""

from handseg.phantom.dataset import PhantomSpec, generate_dataset, is_complete
from handseg.phantom.render import render_hand

__all__ = ["PhantomSpec", "generate_dataset", "is_complete", "render_hand"]
