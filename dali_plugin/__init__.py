"""NVIDIA DALI adapter: feeds reconstructed UIH batches to PyTorch through a DALI pipeline."""
