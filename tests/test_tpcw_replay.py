"""Recorded TPC-W batches replay to the same state on a parallel and a sequential engine.

bench.tpcw_scaling records batches of emulated browsers' procedure calls on one engine and
replays them on two others; its measurement is only meaningful if the replay is exact. This
checks it on a small database: both engines end at the recorder's state root and give the
same replies, call for call, with writes (carts, orders) among the reads.
"""

from __future__ import annotations

import shutil

from bench.tpcw_scaling import PROCEDURES, CallTimes, record_batches
from evedb.engine import ExecutionEngine
from mixer_rules import load_rules
from tpcw.populate import populate


def test_recorded_browsing_batches_replay_exactly_in_parallel_and_in_sequence(tmp_path):
    golden = tmp_path / "golden.db"
    populate(str(golden), 1000, 1, seed=3)
    for name in ("recorder.db", "parallel.db", "sequential.db"):
        shutil.copyfile(golden, tmp_path / name)
    batches, recorded_root = record_batches(tmp_path / "recorder.db", mix="shopping", browsers=8, count=24,
                                            items=1000, ebs=1, seed=3)
    assert len(batches) == 24 and all(len(batch.requests) == 8 for batch in batches)
    procedures = {request.procedure for batch in batches for request in batch.requests}
    assert "tpcw_cart_create" in procedures  # the shopping mix writes as well as reads
    options = {"procedure_modules": PROCEDURES, "rules": load_rules("tpcw")}
    parallel = ExecutionEngine(str(tmp_path / "parallel.db"), workers=2, **options)
    sequential = ExecutionEngine(str(tmp_path / "sequential.db"), workers=1, **options)
    try:
        for batch in batches:
            a = parallel.execute(batch, commit=True)
            b = sequential.execute(batch, commit=True)
            assert a.token == b.token
            assert [reply.results for reply in a.replies] == [reply.results for reply in b.replies]
        assert parallel.state_root_hex() == sequential.state_root_hex() == recorded_root
    finally:
        parallel.close()
        sequential.close()


def test_granularity_ceiling_deals_each_batch_longest_first():
    times = CallTimes()
    assert times.granularity_ceiling() is None
    times.sequential_batches[1] = [4.0, 1.0, 1.0]  # one long call: makespan 4 of 6
    assert times.granularity_ceiling() == 6.0 / 4.0
    times.sequential_batches[2] = [3.0, 3.0, 2.0, 2.0]  # 5 and 5: makespan 5 of 10
    assert times.granularity_ceiling() == 16.0 / 9.0
