"""bench.echo_ceiling's do-nothing server speaks enough of the protocol for the real driver."""

from bench import echo_ceiling


def test_driver_clients_get_answers_from_the_echo_server_on_both_loops():
    for loop_kind in ("uvloop", "asyncio"):
        outcome = echo_ceiling.measure(loop_kind, clients=2, processes=1, seconds=0.5, seed=1)
        assert outcome["loop"] == loop_kind
        assert outcome["ops_per_s"] > 50
        assert outcome["client_cpu_us_per_op"] > 0
