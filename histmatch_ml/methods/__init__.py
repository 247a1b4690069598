"""Matching methods, one module each, behind :class:`~._base.MatchingMethod`.

Importing this package registers every method; adding a method means adding a
module here and naming it in the import below.
"""

from . import exact, lab, per_channel  # noqa: F401  (importing registers them)
from ._base import MatchingMethod, available_methods, get_method, register

__all__ = ["MatchingMethod", "available_methods", "get_method", "register"]
