"""Training application: two-stage training under Hugging Face Accelerate."""
