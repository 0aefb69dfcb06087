"""The asyncio runtime of an evedb node (replication: to come)."""
