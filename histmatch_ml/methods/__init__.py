"""Matching methods, one module each, behind :class:`~._base.MatchingMethod`.

Importing this package registers every method; adding a method means adding a
module here and importing it below.
"""

from . import exact  # noqa: F401  (registers "exact")
from . import lab  # noqa: F401  (registers "lab")
from . import per_channel  # noqa: F401  (registers "per_channel")
from ._base import MatchingMethod, available_methods, get_method, register

__all__ = ["MatchingMethod", "available_methods", "get_method", "register"]
