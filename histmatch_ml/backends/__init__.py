"""Optional kernels over the learned state dicts, for other array libraries."""
