"""Running many seeds and saying what happened, for the CLI and for people.

Owns the text of a run's summary.  A failing seed is always named first, so it can be
replayed with `evedb sim --seed N`.
"""

from __future__ import annotations

from .cluster import SimConfig, SimResult, run_seed


def format_result(result: SimResult, *, verbose: bool = False, trace_lines: int = 40,
                  max_violations: int = 20) -> list[str]:
    stats = result.stats
    profile = stats["profile"]
    link = profile["link"]
    lines = []
    if not result.ok:
        lines.append(f"seed {result.seed}: FAILED with {len(result.violations)} violation(s)")
    lines.append(
        f"seed {result.seed}: {'ok' if result.ok else 'FAILED'}  committed {stats['committed_seq']} batches, "
        f"{stats['divergences']} divergences ({stats['forced_divergences']} forced), "
        f"{stats['view_changes']} view changes, {stats['state_transfers']} state transfers, "
        f"{stats['crashes']} crashes, {stats['acknowledged']} requests acknowledged "
        f"({stats['acknowledged_writes']} writes)"
        + (f", {stats['snapshot_reads']} reads on the committed snapshot" if stats.get("snapshot_reads") else "")
    )
    if verbose or not result.ok:
        lines.append(
            f"  faults: loss {link.loss}, duplicate {link.duplicate}, delay {link.min_delay_ms}-{link.max_delay_ms} ms, "
            f"divergence {profile['diverge_prob']}, crashes {list(profile['crashes'])}; "
            f"{stats['messages']} messages ({stats['lost']} lost, {stats['duplicated']} duplicated), "
            f"{stats['events']} events, final primary {stats['final_primary']} of view {stats['final_view']}"
        )
    for violation in result.violations[:max_violations]:
        lines.append(f"  violation: {violation}")
    if len(result.violations) > max_violations:
        lines.append(f"  ... and {len(result.violations) - max_violations} more violations")
    if verbose:
        lines.extend("  " + line for line in result.history.format_trace())
    elif not result.ok:
        lines.append(f"  last {trace_lines} trace lines:")
        lines.extend("  " + line for line in result.history.format_trace(trace_lines))
    return lines


def run_seeds(first: int, count: int, config: SimConfig | None = None, *, echo=None, verbose: bool = False) -> list[SimResult]:
    """Run seeds first .. first+count-1; `echo` receives each summary line as it is ready."""
    results = []
    for seed in range(first, first + count):
        result = run_seed(seed, config)
        results.append(result)
        if echo is not None:
            for line in format_result(result, verbose=verbose):
                echo(line)
    return results


def run_cli(first: int, count: int, *, duration_ms: int, verbose: bool, echo,
            committed_snapshot_reads: bool = False) -> int:
    """What `evedb sim` does: run the seeds, print each summary, return the exit status."""
    config = SimConfig(duration_ms=duration_ms, committed_snapshot_reads=committed_snapshot_reads)
    failed = [result.seed for result in run_seeds(first, count, config, echo=echo, verbose=verbose) if not result.ok]
    if count > 1:
        echo(f"{count} seeds, {len(failed)} failed" + (f": {failed}" if failed else ""))
    return 1 if failed else 0
