"""Matching methods, one module each, behind :class:`~._base.MatchingMethod`.

Importing this package registers the built-in methods. A method is one module
that subclasses :class:`MatchingMethod`, declares the parameters it reads
(:class:`Param`) and decorates the class with :func:`register`; the
estimators, their docstrings and the command line pick it up from there.
"""

from . import per_channel, exact, lab, landmarks, luminance  # noqa: F401, I001  (importing registers them, in this order)
from ._base import (
    N_QUANTILES,
    MatchingMethod,
    Param,
    available_methods,
    declared_names,
    declared_params,
    get_method,
    on_register,
    register,
    unregister,
)

__all__ = [
    "N_QUANTILES",
    "MatchingMethod",
    "Param",
    "available_methods",
    "declared_names",
    "declared_params",
    "get_method",
    "on_register",
    "register",
    "unregister",
]
