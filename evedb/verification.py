"""Verification policies: given the tokens known for a batch, decide what happens to it.

Three policies today: the synchronous primary-backup pair (execute-verify), a standalone
unreplicated node, and passive (Remus-like) replication, where the backup applies the
primary's changesets and the pair compares state roots.  The asynchronous configuration
(2u+1 execution replicas, verifiers agreeing on tokens) will be another class with the same
`verdict` method, so the replica's pipeline does not change.  Pure.
"""

from __future__ import annotations

import enum


class Verdict(enum.Enum):
    WAIT = "wait"  # a token the policy needs is missing
    AGREE = "agree"  # commit, release replies
    DIVERGE = "diverge"  # roll back and re-execute sequentially
    # Alone, nothing checks a parallel execution, and the mixer is only a hint: roll back and
    # re-execute sequentially (no divergence was seen; the sequential result is final).
    REEXECUTE = "reexecute"
    TAKE_PRIMARY = "take_primary"  # still different after sequential re-execution: primary wins


class PrimaryBackupVerification:
    def verdict(self, local: bytes | None, remote: bytes | None, backup_synced: bool, sequential: bool) -> Verdict:
        if local is None:
            return Verdict.WAIT
        if not backup_synced:
            # Alone: only a sequential execution is final without a second opinion.
            return Verdict.AGREE if sequential else Verdict.REEXECUTE
        if remote is None:
            return Verdict.WAIT
        if local == remote:
            return Verdict.AGREE
        return Verdict.TAKE_PRIMARY if sequential else Verdict.DIVERGE


class UnreplicatedVerification:
    """A node without a peer (the benchmarks' `unreplicated` mode): every execution is final,
    parallel ones included, as in any single-node database.  Nothing checks it."""

    def verdict(self, local: bytes | None, remote: bytes | None, backup_synced: bool, sequential: bool) -> Verdict:
        return Verdict.WAIT if local is None else Verdict.AGREE


class PassiveVerification:
    """Passive (Remus-like) replication: the primary executes, the backup applies its
    changesets, and `local` / `remote` are the two state roots after the batch.

    Nothing re-executes: a wrong parallel execution on the primary is simply copied.  Equal
    roots commit; different roots mean the backup's state is not the primary's, and the backup
    repairs itself by state transfer (TAKE_PRIMARY).  Alone, every execution is final, parallel
    ones included: there is nothing to compare them with."""

    def verdict(self, local: bytes | None, remote: bytes | None, backup_synced: bool, sequential: bool) -> Verdict:
        if local is None:
            return Verdict.WAIT
        if not backup_synced:
            return Verdict.AGREE
        if remote is None:
            return Verdict.WAIT
        return Verdict.AGREE if local == remote else Verdict.TAKE_PRIMARY
