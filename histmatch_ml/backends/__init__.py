"""Optional execution backends over the same learned state dicts as the in-memory code.

:mod:`histmatch_ml.backends.dask`
    Fit on a ``dask.array.Array`` or ``dask.bag.Bag`` as a tree of merges
    (the method's ``learn`` per block, its ``merge`` as the combine step) and
    transform a dask array lazily, block by block. ``HistogramMatcher`` calls
    it when it is given a dask collection; dask is imported only then.
:mod:`histmatch_ml.backends.torch`
    Torch kernels matching whole ``(N, C, H, W)`` tensor batches on their
    device (a GPU); ``HistogramMatcher`` and ``RandomHistogramMatching`` call
    them for such tensors.
"""
