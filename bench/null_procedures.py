"""A procedure that does nothing, for measuring the pair's own ceiling (bench/pair_bench.py).

`evedb_null(db, *args)` runs no SQL of its own: a call still goes through batching, the
mixer, a worker's transaction with its savepoint and the reply-cache write, the Merkle
update, the token exchange with the backup and the reply.
"""

import evedb


@evedb.procedure
def evedb_null(db, *args):
    return None


@evedb.procedure
def evedb_null_table(db, *args):
    return None
