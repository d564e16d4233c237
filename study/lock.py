"""One driver per study: a study holds an exclusive lock while its driver runs.

On a file-system storage (local or NFS) the lock is ``fcntl.flock`` on ``<storage>/<study id>/driver.lock``:
the kernel releases it when the driver exits or is killed, so the next ``--resume`` takes over at once.
On object storage (S3, GCS) a file lock cannot live there; the lock is then taken on the driver's host,
``<results dir>/locks/<study id>.lock``, which stops two drivers of one study on one host, not on two
(docs/cluster.md says so).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from study.errors import StudyError

LOCK_FILE = "driver.lock"


def lock_path(storage: str, study_id: str, results_dir: Path) -> Path:
    if "://" in storage:
        return results_dir / "locks" / f"{study_id}.lock"
    return Path(storage) / study_id / LOCK_FILE


class StudyLock:
    """``with StudyLock(path, study_id):`` — a second driver of the same study gets a StudyError naming the first."""

    def __init__(self, path: Path, study_id: str) -> None:
        self.path, self.study_id, self.fd = path, study_id, -1

    def __enter__(self) -> StudyLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StudyError(f"study {self.study_id} is already running (driver pid {holder}); wait for it to end, "
                             "or pause it (Ctrl-C or SIGTERM) before --resume") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing releases the flock
            self.fd = -1
