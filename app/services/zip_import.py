"""Import a zip of photos in `species/image.jpg` layout (one wrapping folder is allowed too).

A zip comes from outside, so it is checked before a single byte is extracted:

- every entry must stay inside the extraction folder: an absolute name (`/etc/x`, `C:\\x`), a
  `..` step, or a symbolic link refuses the **whole** zip, with a message that names the entry
  (a zip built to escape is not a zip to take photos from); nothing is imported;
- the entry count and the total uncompressed size are bounded (zip bombs), and the bound on the
  size is enforced on the bytes actually written, not only on what the zip's header claims;
- encrypted entries are refused; `__MACOSX/` and Finder/Explorer litter are skipped.

The photos are then imported with `import_folder(..., atomic=True)`: bad files are reported,
and any failure (or a cancel) leaves nothing imported. The extraction folder lives under
`<data dir>/uploads/` and is always removed afterwards.
"""

from __future__ import annotations

import re
import shutil
import stat
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlmodel import Session

from app.services.imports import ImportFailed, ImportReport, import_folder
from app.services.uploads import human_size

UPLOADS_DIR = "uploads"
# What an upload is called in <data dir>/uploads (and in an import job's parameters).
UPLOAD_NAME = r"^[0-9a-f]{32}\.zip$"
CHUNK = 1 << 20
# Folders and files that zip tools add on their own; never photos.
JUNK_FOLDERS = frozenset({"__MACOSX"})
JUNK_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int = 100_000
    max_bytes: int = 8 * 1024**3  # uncompressed, all entries together


class ZipRefused(ImportFailed):
    """The zip as a whole is refused (unsafe entry, too big, not a zip); nothing was imported."""


def uploads_dir(data_dir: Path) -> Path:
    return data_dir / UPLOADS_DIR


def import_folder_path(text: str) -> Path:
    """A curator's folder path, checked: absolute and an existing folder; else ImportFailed."""
    text = text.strip()
    if not text:
        raise ImportFailed("give the path of a folder to import")
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise ImportFailed(f"give the folder as an absolute path (like /srv/photos), not {text!r}")
    if not path.is_dir():
        raise ImportFailed(f"there is no folder at {text} (it must exist where the workers run)")
    return path


def _is_junk(parts: tuple[str, ...]) -> bool:
    return parts[0] in JUNK_FOLDERS or parts[-1] in JUNK_FILES


def entry_path(info: zipfile.ZipInfo, dest: Path) -> Path | None:
    """Where `info` would be extracted under `dest`; None for litter to skip.

    Raises ZipRefused, naming the entry, when it would land outside `dest`.
    """
    raw = info.filename
    name = raw.replace("\\", "/")  # zips made on Windows may use backslashes
    mode = info.external_attr >> 16
    if "\x00" in name:
        raise ZipRefused(f"the zip entry {raw!r} has a NUL character in its name")
    if name.startswith("/") or _DRIVE.match(name):
        raise ZipRefused(f"the zip entry {raw!r} is an absolute path")
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if ".." in parts:
        raise ZipRefused(f"the zip entry {raw!r} points outside the zip's folder (it has '..')")
    if stat.S_ISLNK(mode):
        raise ZipRefused(f"the zip entry {raw!r} is a symbolic link")
    if not parts or _is_junk(parts):
        return None
    target = dest.joinpath(*parts)
    # Belt and braces: whatever the checks above missed, the resolved path must stay inside.
    if not target.resolve().is_relative_to(dest.resolve()):
        raise ZipRefused(f"the zip entry {raw!r} points outside the zip's folder")
    return target


def check_zip(path: Path, limits: ZipLimits) -> list[tuple[zipfile.ZipInfo, Path]]:
    """Read the zip's directory and refuse it if any entry is unsafe or it is too big.

    Returns (entry, relative target) for the entries to extract. Nothing is extracted.
    """
    placeholder = Path("/nonexistent-extraction-root")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ZipRefused(f"the upload is not a readable zip file ({exc})") from None
    if len(infos) > limits.max_entries:
        raise ZipRefused(
            f"the zip has {len(infos):,} entries; at most {limits.max_entries:,} are accepted"
        )
    total = sum(info.file_size for info in infos)
    if total > limits.max_bytes:
        raise ZipRefused(
            f"the zip would unpack to {human_size(total)}; at most {human_size(limits.max_bytes)} "
            "are accepted"
        )
    members: list[tuple[zipfile.ZipInfo, Path]] = []
    seen: set[Path] = set()
    for info in infos:
        target = entry_path(info, placeholder)
        if target is None:
            continue
        relative = target.relative_to(placeholder)
        if info.flag_bits & 0x1:
            raise ZipRefused(f"the zip entry {info.filename!r} is encrypted")
        if relative in seen and not info.is_dir():
            raise ZipRefused(f"the zip entry {info.filename!r} appears twice")
        seen.add(relative)
        members.append((info, relative))
    return members


def extract_zip(
    path: Path,
    dest: Path,
    limits: ZipLimits,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Check, then extract `path` into the new folder `dest`; returns the folder to import.

    On any refusal `dest` is left as it was found (removed if this call created it).
    """
    members = check_zip(path, limits)
    dest.mkdir(parents=True, exist_ok=False)
    written = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for done, (info, relative) in enumerate(members, start=1):
                target = dest / relative
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                entry_bytes = 0
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(info) as src, target.open("xb") as out:
                        while chunk := src.read(CHUNK):
                            entry_bytes += len(chunk)
                            written += len(chunk)
                            if entry_bytes > info.file_size or written > limits.max_bytes:
                                raise ZipRefused(
                                    f"the zip entry {info.filename!r} unpacks to more than its "
                                    "header says; the zip is refused"
                                )
                            out.write(chunk)
                except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
                    raise ZipRefused(
                        f"the zip entry {info.filename!r} is damaged ({exc})"
                    ) from None
                except NotImplementedError as exc:  # an unsupported compression method
                    raise ZipRefused(f"the zip entry {info.filename!r}: {exc}") from None
                except OSError as exc:  # e.g. a file and a folder of the same name; disk full
                    raise ZipRefused(
                        f"the zip entry {info.filename!r} cannot be extracted ({exc.strerror})"
                    ) from None
                if progress is not None:
                    progress(done, len(members))
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return find_root(dest)


def find_root(folder: Path) -> Path:
    """The folder holding the species folders: `folder` itself, or the one folder wrapping them.

    `photos.zip` often unpacks to `photos/<species>/<image>`; a single top-level folder with no
    files of its own but folders inside is taken as such a wrapper.
    """
    visible = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(visible) == 1 and visible[0].is_dir():
        inner = [p for p in visible[0].iterdir() if not p.name.startswith(".")]
        if (
            inner
            and any(p.is_dir() for p in inner)
            and not any(p.is_file() and p.name != "manifest.csv" for p in inner)
        ):
            return visible[0]
    return folder


def import_zip(
    session: Session,
    path: Path,
    data_dir: Path,
    *,
    label: str,
    limits: ZipLimits,
    progress: Callable[[str, int, int], None] | None = None,
) -> ImportReport:
    """Extract `path` safely and import it all-or-nothing; the extracted copy is removed.

    `progress(stage, done, total)` is called with stage "extracting" and then "importing".
    """
    work = uploads_dir(data_dir) / f".extract-{uuid.uuid4().hex}"
    try:
        root = extract_zip(
            path, work, limits,
            progress=(lambda d, t: progress("extracting", d, t)) if progress else None,
        )  # fmt: skip
        if not any(
            f.is_file() for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
            for f in d.iterdir()
        ):  # fmt: skip
            raise ZipRefused(
                "the zip has no species folders with images (expected species/image.jpg, "
                "or one folder holding such species folders)"
            )
        return import_folder(
            session, root, data_dir, label=label, atomic=True,
            progress=(lambda d, t: progress("importing", d, t)) if progress else None,
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
