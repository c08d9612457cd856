"""Keep-last-N retention of checkpoints.

Only complete checkpoints count and only complete checkpoints are removed:
a damaged or incomplete step-NNNNNNN directory stays for the user to inspect,
and resume skips it with a warning. A removed checkpoint is first renamed to
a `.tmp-*` name, so a process killed while deleting it leaves no
half-deleted step-NNNNNNN directory behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

from distgan.checkpoint import TEMP_PREFIX, check_checkpoint, list_checkpoints
from distgan.errors import CheckpointError

logger = logging.getLogger(__name__)


def prune_checkpoints(run_dir: Path, keep: int, protected: Path | None = None) -> list[Path]:
    """Delete the complete checkpoints of a run beyond the `keep` newest ones; return the deleted paths.

    `keep` 0 keeps every checkpoint. The newest complete checkpoint always
    stays (keep is at least 1 when anything is deleted), and so does
    `protected`, the checkpoint the run resumed from.
    """
    if keep <= 0:
        return []
    complete = []
    for step, path in list_checkpoints(run_dir):
        try:
            check_checkpoint(path, verify_hashes=False)
        except CheckpointError:
            continue
        complete.append(path)
    keep_resolved = protected.resolve() if protected is not None else None
    removed = []
    for path in complete[:-keep]:
        if path.resolve() == keep_resolved:
            continue
        trash = path.with_name(f"{TEMP_PREFIX}removed-{path.name}-{uuid.uuid4().hex[:8]}")
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        logger.info("removed checkpoint %s: --keep-checkpoints %d keeps only the newest", path, keep)
        removed.append(path)
    return removed
