"""Delete tombstones: a record, per region, of every delete and its rank.

See :mod:`replicator.tombstones.model` for what a tombstone is and
:mod:`replicator.tombstones.table` for the table that keeps them.
"""

from replicator.tombstones.model import TOMBSTONE_FIELDS, Ranking, Tombstone
from replicator.tombstones.table import TombstoneTable

__all__ = ["TOMBSTONE_FIELDS", "Ranking", "Tombstone", "TombstoneTable"]
