"""Evaluator: ahead-of-time compiled engines, tiled inference, validation, submission and efficiency."""
