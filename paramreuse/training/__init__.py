"""The one training loop and a training run that writes and resumes a model."""
