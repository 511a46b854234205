"""Device code: each CUDA kernel beside its ``numba.njit`` CPU twin, with one contract for both."""
