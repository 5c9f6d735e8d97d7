"""Writing a whole file at once and durably: the one home of the
"temporary file, fsync, rename, fsync the directory" sequence.

`write_atomic` is for the small files mailyard keeps beside its store
(Sieve scripts and their records, private keys and certificates, MTA-STS
policies, pending webmail sends, the mail client's settings). A reader of
the file sees the old content or the new one, never a part of either, and
once the call returns the new content survives a crash:

* the data goes to a temporary file in the same directory (a rename is
  atomic only within one file system), under a name `tempfile.mkstemp`
  makes unique (``O_EXCL``), so writers in threads or other processes
  never share one;
* the file has the requested mode before it holds a byte (mkstemp creates
  it 0600 and `os.fchmod` sets the mode before the write): a private key is
  never readable by others, not even for a moment;
* the data is flushed and fsynced, then the file takes the final name
  (`os.replace`, or `os.link` when the name must not exist yet), and the
  directory is fsynced so the new name itself is on disk (rename(2) is
  atomic, not durable);
* on any failure, the temporary file is removed and the file under the
  final name is left as it was.

The calls block on the disk: code on the event loop runs them in a thread.
A crash during a write can leave a ``.NAME.XXXXXXXX.tmp`` file behind;
nothing reads those names.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

# What link(2) answers on a file system without hard links (FAT, some FUSE
# and network file systems).
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}
# What fsync(2) of a directory answers where directories cannot be synced;
# the rename is then as durable as that file system makes it.
_NO_DIRECTORY_SYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF}


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600, exclusive: bool = False,
                 sync_directory: bool = True) -> None:
    """Make ``path`` hold ``data``, at once and durably (module docstring).

    ``mode`` is the file's permission bits, exactly (the umask does not
    apply). With ``exclusive`` the file is only created: if ``path`` exists
    already, `FileExistsError` is raised and the existing file is kept (for
    a secret that several processes may make at once, the first one wins,
    and for a key that must never be overwritten); on a file system without
    hard links it is created in place with ``O_EXCL`` (a crash may then
    leave it partly written). ``sync_directory=False`` leaves the new name
    to the file system's own time, for records a crash may lose at little
    cost (it saves a directory fsync, a quarter of a millisecond or more).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    renamed = False
    try:
        with open(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, path)  # fails if the name exists: never replaces it
            except OSError as exc:
                if exc.errno not in _NO_LINKS:
                    raise
                _create_in_place(path, data, mode)
        else:
            os.replace(tmp, path)
            renamed = True
    finally:
        if not renamed:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    if sync_directory:
        _fsync_directory(path.parent)


def _create_in_place(path: Path, data: bytes, mode: int) -> None:
    """``exclusive`` where links are not to be had: O_EXCL on the final name."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with open(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` (a rename, a link) durable. The file
    is in place by now, so a file system that cannot sync a directory is
    not an error."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIRECTORY_SYNC:
            raise
    finally:
        os.close(fd)
