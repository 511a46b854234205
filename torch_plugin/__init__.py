"""PyTorch adapter: reconstructed UIH batches for ``torch.utils.data.DataLoader`` and TorchRec.

    ds = UIHDataset("uih_store", "thin/", proj, batch_size=1024, order="shuffle", seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for batch in loader: ...                      # {"item_id": [B, L], ..., "lengths", "label"}
"""

from ._dataset import UIHDataset

__all__ = ["UIHDataset"]
