"""PyTorch adapter: reconstructed UIH batches for ``torch.utils.data.DataLoader`` and TorchRec.

    ds = UIHDataset("uih_store", "thin/", proj, batch_size=1024, order="shuffle", seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for batch in loader: ...                      # {"item_id": [B, L], ..., "lengths", "label"}
    kjt = to_kjt(batch)                               # a jagged batch as TorchRec's KeyedJaggedTensor

TorchRec is optional (``pip install 'uih-latemat[torchrec]'``, or ``make test-torchrec`` on the CPU path)
and imported lazily; ``engine`` never imports this package.
"""

from ._dataset import UIHDataset
from ._kjt import to_kjt

__all__ = ["UIHDataset", "to_kjt"]
