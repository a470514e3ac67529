"""Training a classifier: the model, the training loop and step, K seeds at once,
evaluation and training metrics."""
