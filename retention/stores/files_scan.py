"""Trees of files: a local folder, or any fsspec filesystem (s3://, gs://, az://, memory://).

A tree is rooted at a folder and never reaches outside it:

- paths are relative, '/'-separated, and a path with an empty, '.' or '..' part is refused;
- on a local disk, a symbolic link whose target lies outside the root is reported and
  skipped, a link to a folder is never descended into (an alias would slip past holds
  scoped by path), and every change walks from the root one folder at a time with
  ``O_NOFOLLOW`` and acts relative to that folder's descriptor, so a folder swapped for
  a link between the scan and the change is refused, not followed;
- on other filesystems, a listed name outside the root is refused, and entries the
  filesystem reports as links are skipped.

`Tree.remove` re-reads a file and asks the caller whether it may still go right
before unlinking it (time-of-check to time-of-use), so a file that changed or came
under a hold in the meantime is kept.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from retention.errors import StoreError
from retention.policy import FilesStore

__all__ = [
    "FileEntry",
    "FsspecTree",
    "LocalTree",
    "MissingRoot",
    "Removal",
    "Skipped",
    "Tree",
    "check_relative",
    "open_tree",
]


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A file in a tree: its path relative to the root, size and modification time (UTC)."""

    path: str
    size: int
    #: None when the filesystem reports no modification time.
    mtime: datetime | None
    #: True for a symbolic link (inside the root) to a file; removing it removes the link.
    link: bool = False

    @property
    def base_name(self) -> str:
        """The last part of the path."""
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class Skipped:
    """An entry the scan did not follow, and why."""

    path: str
    reason: str
    #: True for a folder (or a link to one): it may hide any number of matches.
    folder: bool = False


@dataclass(frozen=True, slots=True)
class Removal:
    """What `Tree.remove` did to one file."""

    status: Literal["removed", "gone", "kept"]
    entry: FileEntry | None = None
    reason: str | None = None


class MissingRoot(StoreError):
    """The root of a tree does not exist (so it holds no files)."""


#: Decides, on the file as it is right now, whether it may go: None, or why not.
Check = Callable[[FileEntry], str | None]


def check_relative(path: str) -> list[str]:
    """The parts of a relative path; ValueError for anything that could leave the root."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"refusing path {path!r}: not a plain path inside the root")
    return parts


class Tree(Protocol):
    """A folder of files that the rules of one 'files' store act on."""

    #: Printable location of the root (never holds credentials).
    where: str

    def ready(self) -> None:
        """Raise StoreError unless files can be written below the root (a local root must
        exist: an unmounted disk's mount point is not a place to archive to)."""
        ...

    def check_access(self, *, target: bool = False) -> None:
        """Raise MissingRoot when the root is missing, StoreError when this process could
        not list the root or remove files from it, or (`target`: files are archived into
        it) write files into it as `ready` demands. Read-only: nothing is written."""
        ...

    def scan(self, base: str = "") -> tuple[list[FileEntry], list[Skipped]]:
        """Every file below folder `base` (relative; '' for the root), and what was skipped.

        A missing `base` gives nothing; a missing root raises MissingRoot, an unreadable
        one StoreError."""
        ...

    def stat(self, path: str) -> FileEntry | None:
        """The file at `path` as it is now, or None when it is not there."""
        ...

    def remove(self, path: str, check: Check) -> Removal:
        """Re-read the file at `path`, ask `check`, and delete it when it says nothing."""
        ...

    def open_read(self, path: str) -> Any:
        """A context manager giving the binary content of the file at `path`."""
        ...

    def write(self, path: str, source: IO[bytes], mtime: datetime | None) -> None:
        """Create or replace the file at `path` with the content of `source`."""
        ...


def _instant(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str):
        try:
            return _instant(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def _inside(target: str, root: str) -> bool:
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


# --- the local disk -----------------------------------------------------------------


class LocalTree:
    """A folder on the local disk. Changes go through folder descriptors (Linux, macOS)."""

    def __init__(self, root: Path) -> None:
        self.where = str(root)
        self._root = root

    @property
    def real_root(self) -> str:
        """The root with every symbolic link resolved (checked to be a folder)."""
        real = os.path.realpath(self._root)
        if not os.path.exists(real):
            raise MissingRoot(f"files store root {self.where} does not exist")
        if not os.path.isdir(real):
            raise StoreError(f"files store root {self.where} is not a folder")
        return real

    def ready(self) -> None:
        _ = self.real_root

    def check_access(self, *, target: bool = False) -> None:
        real = self.real_root
        # Effective ids: what the kernel checks when this process lists and unlinks.
        effective = os.access in os.supports_effective_ids
        if not os.access(real, os.R_OK | os.X_OK, effective_ids=effective):
            raise StoreError(f"files store root {self.where} cannot be listed by this process")
        if not os.access(real, os.W_OK | os.X_OK, effective_ids=effective):
            raise StoreError(
                f"files store root {self.where} is not writable by this process "
                "(files could not be removed from it or archived into it)"
            )

    def scan(self, base: str = "") -> tuple[list[FileEntry], list[Skipped]]:
        root = self.real_root
        entries: list[FileEntry] = []
        skipped: list[Skipped] = []
        start = root
        if base:
            check_relative(base)
            start = os.path.join(root, *base.split("/"))
            if not os.path.lexists(start):
                return entries, skipped
            if os.path.realpath(start) != start:
                skipped.append(Skipped(base, "a symbolic link on this path: not followed", True))
                return entries, skipped
            if not os.path.isdir(start):
                return entries, skipped
        stack = [(start, base)]
        while stack:
            folder, rel_folder = stack.pop()
            try:
                with os.scandir(folder) as listing:
                    items = sorted(listing, key=lambda e: e.name)
            except OSError as exc:
                skipped.append(Skipped(rel_folder or ".", f"cannot list: {exc.strerror}", True))
                continue
            for item in items:
                rel = f"{rel_folder}/{item.name}" if rel_folder else item.name
                try:
                    if item.is_symlink():
                        found = self._link(item.path, rel, root)
                        if isinstance(found, Skipped):
                            skipped.append(found)
                        elif found is not None:
                            entries.append(found)
                    elif item.is_dir(follow_symlinks=False):
                        stack.append((item.path, rel))
                    elif item.is_file(follow_symlinks=False):
                        info = item.stat(follow_symlinks=False)
                        entries.append(FileEntry(rel, info.st_size, _mtime(info)))
                except OSError as exc:  # vanished or unreadable while listing
                    skipped.append(Skipped(rel, f"cannot read: {exc.strerror}"))
        entries.sort(key=lambda e: e.path)
        return entries, skipped

    @staticmethod
    def _link(full: str, rel: str, root: str) -> FileEntry | Skipped | None:
        target = os.path.realpath(full)
        if not _inside(target, root):
            return Skipped(
                rel,
                f"symbolic link to {target}, outside the root: not followed",
                os.path.isdir(target),
            )
        if os.path.isdir(target):
            return Skipped(rel, "symbolic link to a folder: not followed", True)
        if not os.path.isfile(target):
            return Skipped(rel, "symbolic link to nothing: skipped")
        info = os.stat(target)
        return FileEntry(rel, info.st_size, _mtime(info), link=True)

    @contextmanager
    def _parent(self, path: str, create: bool = False) -> Iterator[tuple[int, str] | None]:
        """The descriptor of `path`'s folder, reached from the root without following links
        (None when a folder on the way is missing), and the file's name in it."""
        parts = check_relative(path)
        fd = os.open(self.real_root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in parts[:-1]:
                if create:
                    with suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                try:
                    next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except FileNotFoundError:
                    yield None
                    return
                except OSError as exc:  # ELOOP / ENOTDIR: a link or a file in the way
                    raise StoreError(
                        f"refusing {path}: {part!r} on its path is not a plain folder "
                        f"({exc.strerror}); links are not followed"
                    ) from None
                os.close(fd)
                fd = next_fd
            yield fd, parts[-1]
        finally:
            os.close(fd)

    def _stat_at(self, fd: int, name: str, path: str) -> FileEntry | None:
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISREG(info.st_mode):
            return FileEntry(path, info.st_size, _mtime(info))
        if stat.S_ISLNK(info.st_mode):
            found = self._link(os.path.join(self.real_root, *path.split("/")), path, self.real_root)
            if isinstance(found, FileEntry):
                return found
            reason = found.reason if found else "not a file"
            raise StoreError(f"refusing {path}: {reason}")
        raise StoreError(f"refusing {path}: not a regular file")

    def stat(self, path: str) -> FileEntry | None:
        with self._parent(path) as parent:
            return None if parent is None else self._stat_at(*parent, path)

    def remove(self, path: str, check: Check) -> Removal:
        with self._parent(path) as parent:
            if parent is None:
                return Removal("gone")
            fd, name = parent
            entry = self._stat_at(fd, name, path)
            if entry is None:
                return Removal("gone")
            reason = check(entry)
            if reason is not None:
                return Removal("kept", entry, reason)
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                return Removal("gone")
            return Removal("removed", entry)

    @contextmanager
    def open_read(self, path: str) -> Iterator[IO[bytes]]:
        with self._parent(path) as parent:
            if parent is None:
                raise FileNotFoundError(path)
            fd, name = parent
            entry = self._stat_at(fd, name, path)
            if entry is None:
                raise FileNotFoundError(path)
            if entry.link:  # checked inside the root by _stat_at
                handle = os.open(os.path.realpath(os.path.join(self.real_root, path)), os.O_RDONLY)
            else:
                handle = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
        with os.fdopen(handle, "rb") as source:
            yield source

    def write(self, path: str, source: IO[bytes], mtime: datetime | None) -> None:
        with self._parent(path, create=True) as parent:
            assert parent is not None
            fd, name = parent
            temp = f".{name}.retention-partial"
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
            handle = os.open(temp, flags, 0o640, dir_fd=fd)
            try:
                with os.fdopen(handle, "wb") as out:
                    shutil.copyfileobj(source, out)
                    out.flush()
                    os.fsync(out.fileno())
                if mtime is not None:
                    stamp = mtime.timestamp()
                    os.utime(temp, (stamp, stamp), dir_fd=fd)
                os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
            except BaseException:
                with suppress(FileNotFoundError):
                    os.unlink(temp, dir_fd=fd)
                raise


def _mtime(info: os.stat_result) -> datetime:
    return datetime.fromtimestamp(info.st_mtime_ns / 1e9, UTC)


# --- any fsspec filesystem ---------------------------------------------------------------

_MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "mtime_ns")


class FsspecTree:
    """A folder on any fsspec filesystem; credentials come from the environment."""

    def __init__(self, url: str) -> None:
        import fsspec  # type: ignore[import-untyped]  # imported here: only stores that need it pay for it

        self.where = url.split("?", 1)[0]
        try:
            self.fs, path = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise StoreError(f"files store root {self.where}: {exc}") from None
        self.root = str(path).rstrip("/")

    def _full(self, path: str) -> str:
        check_relative(path)
        return f"{self.root}/{path}" if self.root else path

    def _relative(self, name: str) -> str | None:
        name = name.rstrip("/")
        prefix = f"{self.root}/" if self.root else ""
        if not name.startswith(prefix):
            return None
        rel = name[len(prefix) :]
        try:
            check_relative(rel)
        except ValueError:
            return None
        return rel

    def _entry(self, rel: str, full: str, info: dict[str, Any]) -> FileEntry:
        mtime = None
        for key in _MTIME_KEYS:
            mtime = _instant(info.get(key))
            if mtime is not None:
                break
        if mtime is None:
            try:
                mtime = _instant(self.fs.modified(full))
            except (NotImplementedError, OSError, ValueError, AttributeError):
                mtime = None
        return FileEntry(rel, int(info.get("size") or 0), mtime)

    def ready(self) -> None:
        """Object stores have no folders to create: any prefix takes files."""

    def check_access(self, *, target: bool = False) -> None:
        """The root of rules' files must exist (an archive target's prefix need not, as
        in `ready`); write permission cannot be known without writing."""
        if target:
            return
        try:
            exists = not self.root or self.fs.exists(self.root)
        except Exception as exc:  # any backend's error: credentials, network, bucket
            raise StoreError(f"files store root {self.where}: {exc}") from None
        if not exists:
            raise MissingRoot(f"files store root {self.where} does not exist")

    def scan(self, base: str = "") -> tuple[list[FileEntry], list[Skipped]]:
        start = self._full(base) if base else self.root
        if self.root and not self.fs.exists(self.root):
            raise MissingRoot(f"files store root {self.where} does not exist")
        try:
            found: dict[str, dict[str, Any]] = self.fs.find(start, withdirs=False, detail=True)
        except FileNotFoundError:
            return [], []
        entries: list[FileEntry] = []
        skipped: list[Skipped] = []
        for name, info in sorted(found.items()):
            rel = self._relative(name)
            if rel is None:
                skipped.append(Skipped(name, "listed outside the root: refused"))
                continue
            if info.get("islink"):
                skipped.append(Skipped(rel, "symbolic link: not followed"))
                continue
            if info.get("type", "file") != "file":
                continue
            entries.append(self._entry(rel, name, info))
        return entries, skipped

    def stat(self, path: str) -> FileEntry | None:
        full = self._full(path)
        self.fs.invalidate_cache(full)
        try:
            info = self.fs.info(full)
        except FileNotFoundError:
            return None
        if info.get("islink") or info.get("type", "file") != "file":
            raise StoreError(f"refusing {path}: not a regular file")
        return self._entry(path, full, info)

    def remove(self, path: str, check: Check) -> Removal:
        entry = self.stat(path)
        if entry is None:
            return Removal("gone")
        reason = check(entry)
        if reason is not None:
            return Removal("kept", entry, reason)
        try:
            self.fs.rm_file(self._full(path))
        except FileNotFoundError:
            return Removal("gone")
        self.fs.invalidate_cache(self._full(path))
        return Removal("removed", entry)

    @contextmanager
    def open_read(self, path: str) -> Iterator[IO[bytes]]:
        with self.fs.open(self._full(path), "rb") as source:
            yield source

    def write(self, path: str, source: IO[bytes], mtime: datetime | None) -> None:
        full = self._full(path)
        parent = full.rsplit("/", 1)[0]
        if parent and parent != full:
            self.fs.makedirs(parent, exist_ok=True)
        with self.fs.open(full, "wb") as out:
            shutil.copyfileobj(source, out)
        self.fs.invalidate_cache(full)


def open_tree(store: FilesStore, base_dir: Path | None) -> Tree:
    """The tree at `store.root`: a local folder (relative to `base_dir`) or an fsspec URL."""
    root = store.root
    if root.startswith("file://"):
        root = root.removeprefix("file://")
    elif "://" in root or root.startswith("memory:"):
        return FsspecTree(root)
    path = Path(root).expanduser()
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    return LocalTree(path)
