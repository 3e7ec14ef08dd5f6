"""Bulk enrollment of identity folders (``facerec enroll --from-dir``).

LFW has 2-3 photos per identity, so detecting and embedding one identity at a time
would run MTCNN and the model on tiny batches. Here the photos of consecutive
identities share batches of ``batch_size``; an identity is committed, in its own
transaction, as soon as its last photo is prepared. A process killed mid-run loses
at most the identities still in flight; the index is written once at the end (a
reader rebuilds a stale one from the database meanwhile).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from facerec.data.datasets import group_by_identity, read_identity_folder
from facerec.errors import FacerecError
from facerec.gallery.records import check_name

if TYPE_CHECKING:
    from facerec.gallery.recognizer import EnrollResult, Prepared


def identity_folders(root: str | Path, limit: int | None = None) -> list[tuple[str, list[Path]]]:
    """``root/<identity>/*`` as (identity, photos), by name; the first ``limit`` identities only."""
    groups = group_by_identity(read_identity_folder(root))
    names = sorted(groups)[:limit]
    if not names:
        raise FacerecError(f"{root} holds no identity folders with images")
    return [(check_name(name), [record.path for record in groups[name]]) for name in names]


class FolderEnrollment:
    """One run of bulk enrollment: batches across identities, one commit per identity.

    ``prepare(paths)`` reads, detects and embeds photos (``FaceRecognizer.prepare``);
    ``commit(name, prepared)`` stores one identity in one transaction, its index update
    deferred; ``flush()`` writes the index once.
    """

    def __init__(
        self,
        prepare: Callable[[list[Path]], list[Prepared]],
        commit: Callable[[str, list[Prepared]], EnrollResult],
        flush: Callable[[], None],
        batch_size: int,
        skip_errors: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.prepare, self.commit, self.flush = prepare, commit, flush
        self.batch_size = max(int(batch_size), 1)
        self.skip_errors = skip_errors
        self.progress = progress
        self.results: list[EnrollResult] = []
        self.failed: list[dict[str, str]] = []

    def run(self, folders: list[tuple[str, list[Path]]]) -> tuple[list[EnrollResult], list[dict[str, str]]]:
        """Enroll every (identity, photos); returns the per-identity results and the skipped photos.

        A bad photo stops the run (identities committed before it stay) unless ``skip_errors``:
        then it is skipped and reported, and the rest of its identity is enrolled.
        """
        queue = [(name, path) for name, paths in folders for path in paths]
        remaining = {name: len(paths) for name, paths in folders}
        pending: dict[str, list[Prepared]] = defaultdict(list)
        for start in range(0, len(queue), self.batch_size):
            chunk = queue[start : start + self.batch_size]
            for (name, _), item in zip(chunk, self.prepare([path for _, path in chunk])):
                if item.error is not None:
                    self._bad_photo(name, item)
                else:
                    pending[name].append(item)
                remaining[name] -= 1
                if remaining[name] == 0 and pending[name]:  # its last photo: commit it now, alone
                    self.results.append(self.commit(name, pending.pop(name)))
            if self.progress:
                self.progress(len(chunk))
        self.flush()
        return self.results, self.failed

    def _bad_photo(self, name: str, item: Prepared) -> None:
        if self.skip_errors:
            self.failed.append({"image": str(item.path), "identity": name, "error": str(item.error)})
            return
        self.flush()  # keep the identities finished so far, then stop
        raise type(item.error)(
            f"{item.error} (stopped; {len(self.results)} identities enrolled before it; --skip-errors skips bad photos)"
        )
