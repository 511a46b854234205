"""NVIDIA DALI adapter: reconstructed UIH batches fed to PyTorch through a DALI pipeline.

    pipe = uih_pipeline(rec, thin_source, batch_size=1024)   # runs where rec runs (device_id="auto")
    for batch in UIHIterator(pipe):                                          # dict of torch tensors
        ...
"""

from ._options import PipelineOptions
from ._pipeline import UIHPipeline, uih_pipeline, use_dali_host_pool
from .pytorch import UIHIterator

__all__ = ["uih_pipeline", "UIHIterator", "UIHPipeline", "PipelineOptions", "use_dali_host_pool"]
