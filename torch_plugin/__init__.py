"""PyTorch adapter: reconstructed batches as TorchRec's ``KeyedJaggedTensor``.

    rec = engine.Reconstructor(store, engine.Projection(["item_id", "action"], layout="jagged"))
    kjt = to_kjt(rec.reconstruct(thin))      # one key per projected column

TorchRec is optional (``pip install 'uih-latemat[torchrec]'``, or ``make test-torchrec`` on the CPU path)
and imported lazily; ``engine`` never imports this package.
"""

from ._kjt import to_kjt

__all__ = ["to_kjt"]
