"""The monitoring database: schema, writes and read-only queries."""

from executor.store.database import Store
from executor.store.paths import Locations, locate

__all__ = ["Locations", "Store", "locate"]
