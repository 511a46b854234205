"""Ray adapter: reconstructed UIH examples as a Ray Dataset, and user shards for Ray Train workers.

    ds = uih_dataset("uih_store", "thin/", proj, batch_size=256)      # Ray Data tasks reconstruct, in
    for batch in ds.iter_batches(batch_size=256):                     # worker processes kept warm:
        ...                                                           # {"item_id": [B, L], ..., "label"}
    state = resume_state(ds, consumed=k)                              # order="shuffle": resume=state
    rec, mine = local_shard("uih_store", "thin/", proj)               # in a Ray Train worker: this rank's
    for batch in rec.iter_batches(mine, 256): ...                      # users, its own Reconstructor

Ray is imported lazily (``pip install 'uih-latemat[ray]'``); ``engine`` never imports this package.
"""

from ._dataset import resume_state, uih_dataset
from ._errors import engine_error
from ._train import local_shard

__all__ = ["uih_dataset", "resume_state", "local_shard", "engine_error"]
