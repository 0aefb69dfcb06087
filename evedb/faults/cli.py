"""`evedb torture`: run a campaign, print its table and checks, end with `violations: N`."""

from __future__ import annotations

from .campaign import CampaignSettings, run_campaign, write_json
from .scheduler import KINDS


def run_torture(*, duration: float, seed: int, clients: int, workers: int, peer_timeout_ms: int,
                kinds: str | None, data_dir: str | None, json_path: str | None, echo=print) -> int:
    """The exit status: 0 when the pair recovered from every fault and no check failed."""
    chosen = KINDS if not kinds else tuple(kind.strip() for kind in kinds.split(",") if kind.strip())
    unknown = [kind for kind in chosen if kind not in KINDS]
    if unknown:
        echo(f"unknown fault kinds: {', '.join(unknown)} (known: {', '.join(KINDS)})")
        return 2
    settings = CampaignSettings(seed=seed, duration_s=duration, clients=clients, workers=workers,
                                peer_timeout_ms=peer_timeout_ms, kinds=chosen, data_dir=data_dir)
    report = run_campaign(settings, echo=echo)
    if json_path:
        write_json(report, json_path)
    for line in report.lines():
        echo(line)
    return 0 if report.ok else 1
