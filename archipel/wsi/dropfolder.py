"""The drop folder: a slide scanner writes its files into a folder, Archipel takes each one once it is complete.

Layout, inside the folder named by ``wsi_drop_folder``::

    DROP/                 the scanner writes here
    DROP/processing/      taken, being converted (a ``NAME.slide`` file names the slide)
    DROP/done/            converted and indexed
    DROP/failed/          refused or failed, with ``NAME.reason.txt`` saying why

A file is taken only when it is *stable*: its size and modification time have not changed for
``wsi_drop_stable_seconds``. Its metadata come from a sidecar JSON (``NAME.json`` or ``STEM.json``, the same
fields as the upload's ``metadata`` part), else from its name:
``ISSUER__PATIENTID__ACCESSION[__CONTAINER[__STAIN]].ext`` (double underscores). Write the sidecar before the
slide. To retry a failed slide, fix it and move it back into ``DROP/``. Taking a file is an atomic rename into
``processing/``, so several workers may watch the same folder.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from archipel.platform import audit
from archipel.platform.authn import Principal
from archipel.platform.runtime import Runtime
from archipel.wsi.intake import (
    SlideMetadata,
    SlideMetadataError,
    UnsupportedSlide,
    check_issuer,
    parse_metadata,
    sniff_container,
)
from archipel.wsi.models import FAILED, READY, Slide
from archipel.wsi.slides import SourceSpool, register_slide

log = logging.getLogger("archipel.wsi.drop")

PROCESSING, DONE, FAILED_DIR = "processing", "done", "failed"
#: Names a scanner uses while it is still writing, never taken.
_TEMPORARY = (".part", ".partial", ".tmp", ".crdownload", ".json", ".slide", ".txt")
#: The account the drop folder acts as, in the audit trail and on its jobs.
DROP_SUBJECT = "drop-folder"


class DropRefused(ValueError):
    """A dropped file cannot become a slide; the message is written to its reason file."""


def metadata_for(path: Path) -> SlideMetadata:
    """The metadata of a dropped file: its sidecar JSON, else its name; raises :class:`DropRefused`."""
    for sidecar in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if sidecar.is_file():
            try:
                return parse_metadata(sidecar.read_bytes())
            except SlideMetadataError as exc:
                raise DropRefused(f"{sidecar.name}: {exc}") from exc
    parts = path.stem.split("__")
    if len(parts) < 3:
        raise DropRefused(
            "no metadata: add a sidecar NAME.json, or name the file ISSUER__PATIENTID__ACCESSION[__CONTAINER[__STAIN]]"
        )
    fields = dict(zip(("issuer", "patient_id", "accession", "container_id", "stain"), parts, strict=False))
    try:
        return parse_metadata(fields)
    except SlideMetadataError as exc:
        raise DropRefused(f"file name: {exc}") from exc


def _sidecars(path: Path) -> list[Path]:
    return [p for p in (path.with_name(path.name + ".json"), path.with_suffix(".json")) if p.is_file()]


def _move(path: Path, folder: Path) -> Path:
    """Move ``path`` into ``folder``, not overwriting an earlier file of the same name."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists():
        target = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{path.name}"
    shutil.move(str(path), target)
    return target


@dataclass
class DropFolder:
    """Watches one drop folder; :meth:`scan` does one pass, :meth:`start` runs passes in a thread."""

    rt: Runtime
    root: Path
    stable_seconds: float = 5.0
    interval: float = 2.0
    _seen: dict[str, tuple[int, int]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        for sub in (PROCESSING, DONE, FAILED_DIR):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def scan(self) -> int:
        """Take every stable file, and file away those whose conversion ended; return how many were taken."""
        taken = 0
        for path in sorted(self.root.iterdir()):
            if not path.is_file() or path.name.startswith(".") or path.name.lower().endswith(_TEMPORARY):
                continue
            if self._stable(path):
                taken += self._take(path)
        self._settle()
        return taken

    def _stable(self, path: Path) -> bool:
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        now = (st.st_size, st.st_mtime_ns)
        before = self._seen.get(path.name)
        self._seen[path.name] = now
        quiet = time.time() - st.st_mtime >= self.stable_seconds
        # Seen unchanged on two passes, and untouched for the stable time: the scanner is done with it.
        return quiet and (before == now or self.stable_seconds == 0)

    def _take(self, path: Path) -> int:
        processing = self.root / PROCESSING
        claimed = processing / path.name
        try:
            path.rename(claimed)  # atomic: only one watcher wins
        except FileNotFoundError:
            return 0
        self._seen.pop(path.name, None)
        sidecars = [_move(p, processing) for p in _sidecars(path)]
        try:
            meta = metadata_for(claimed)
            check_issuer(self.rt.db, meta)
            with claimed.open("rb") as f:
                sniff_container(f.read(132))
            registered = self._register(claimed, meta)
        except (DropRefused, SlideMetadataError, UnsupportedSlide) as exc:
            self._file_away(claimed, sidecars, FAILED_DIR, str(exc))
            log.warning("event=drop_refused file=%s reason=%s", path.name, exc)
            return 0
        (processing / f"{claimed.name}.slide").write_text(registered)
        audit.record(
            self.rt.db,
            Principal(subject=DROP_SUBJECT, role="technician", kind="node"),
            audit.IMPORT,
            "slide-dropped",
            patient=f"{meta.issuer}/{meta.patient_id}",
            obj=f"slide:{registered}",
            source=str(self.root),
        )
        log.info("event=drop_taken file=%s slide=%s", path.name, registered)
        return 1

    def _register(self, path: Path, meta: SlideMetadata) -> str:
        with SourceSpool(self.rt.settings) as spool, path.open("rb") as f:
            while chunk := f.read(1 << 20):
                spool.write(chunk)
            spool.finish()
            registered = register_slide(
                self.rt,
                spool.path,
                spool.sha256,
                spool.size,
                meta,
                filename=path.name,
                origin="drop",
                created_by=DROP_SUBJECT,
                role="technician",
            )
        return registered.slide_id

    def _settle(self) -> None:
        """Move files whose slide is ready to ``done/``, failed ones to ``failed/`` with the reason."""
        processing = self.root / PROCESSING
        for marker in sorted(processing.glob("*.slide")):
            slide_id = marker.read_text().strip()
            with self.rt.db.sessions() as s:
                slide = s.get(Slide, slide_id)
            if slide is None or slide.status not in (READY, FAILED):
                continue
            name = marker.name.removesuffix(".slide")
            source = processing / name
            sidecars = [
                p for p in (processing / f"{name}.json", processing / f"{Path(name).stem}.json") if p.exists()
            ]
            if slide.status == READY:
                self._file_away(source, sidecars, DONE, "")
            else:
                self._file_away(source, sidecars, FAILED_DIR, f"slide {slide_id}: {slide.error}")
            marker.unlink(missing_ok=True)

    def _file_away(self, source: Path, sidecars: list[Path], where: str, reason: str) -> None:
        folder = self.root / where
        moved = _move(source, folder) if source.exists() else folder / source.name
        for sidecar in sidecars:
            if sidecar.exists():
                _move(sidecar, folder)
        if reason:
            moved.with_name(moved.name + ".reason.txt").write_text(reason + "\n")

    def start(self) -> threading.Thread:
        """Scan every ``interval`` seconds in a daemon thread until :meth:`stop`."""

        def loop() -> None:
            log.info("event=drop_folder_watching folder=%s", self.root)
            while not self._stop.is_set():
                try:
                    self.scan()
                except Exception:
                    log.exception("event=drop_scan_failed")
                self._stop.wait(self.interval)

        thread = threading.Thread(target=loop, name="drop-folder", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """End the watching thread after its current pass."""
        self._stop.set()


def start_drop_folder(rt: Runtime) -> DropFolder | None:
    """Watch ``wsi_drop_folder`` when it is set; ``None`` otherwise."""
    if not rt.settings.wsi_drop_folder:
        return None
    watcher = DropFolder(rt, Path(rt.settings.wsi_drop_folder), rt.settings.wsi_drop_stable_seconds)
    watcher.start()
    return watcher
