"""Training on PyTorch Lightning: stage modules, data loaders, callbacks, resume checkpoints."""
