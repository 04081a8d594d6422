"""Neural network architectures and the model-folder store."""
