"""Pretrained weights fetched with consent: only when asked (``--download``, the app's button), from the public
host or ``$PROTOLIB_WEIGHTS_MIRROR``, checked, and written atomically into the standard caches.

- torchvision: the file's name carries the first hex digits of its sha256 (``resnet18-f37072fd.pth``), checked
  as ``torch.hub``'s ``check_hash`` does; it goes to the torch hub cache (``$TORCH_HOME/hub/checkpoints``).
- timm: the sha256 the Hugging Face hub reports for the file (its LFS etag), or, from a mirror, the sidecar
  ``<file>.sha256`` the mirror serves beside it; it goes to the Hugging Face hub cache.

A file that does not match is refused and nothing is left in the cache: it is written to a temporary file in
the cache's folder and renamed into place only once checked.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from . import torchvision_models
from .base import BackboneError, download_url
from .registry import backbone_spec, split_name
from .timm_models import LITE_FAMILY, TIMM_PREFIX, cached_hub_file, hub_cache, hub_weights

#: progress(bytes done, bytes in all or 0 when unknown)
ByteProgress = Callable[[int, int], None]
CHUNK = 1 << 20
TIMEOUT_S = 30


class DownloadRefused(BackboneError):
    """A download failed or did not match its checksum; nothing was kept."""


@dataclass(frozen=True)
class WeightsFile:
    """One pretrained file: where it comes from, what it must hash to, and where it goes."""

    backbone: str
    public_url: str
    mirror_name: str  # appended to $PROTOLIB_WEIGHTS_MIRROR
    dest: Path  # timm: the repo's folder in the hub cache until the file is there
    size_mb: float | None = None  # announced on the button, when the registry knows it
    sha256_prefix: str | None = None  # torchvision: from the file name
    hf_repo: str | None = None  # timm: (repo, file) on the Hugging Face hub

    @property
    def url(self) -> str:
        return download_url(self.public_url, self.mirror_name)

    def present(self) -> bool:
        if self.hf_repo:
            return cached_hub_file(split_name(self.backbone)[1]) is not None
        return self.dest.is_file()


def weights_file(name: str) -> WeightsFile:
    """The pretrained file behind backbone ``name`` (a torchvision model, VGG included, or ``timm:<arch>``)."""
    prefix, arch = split_name(name)
    if prefix == TIMM_PREFIX:
        repo, filename = hub_weights(arch)
        dest = cached_hub_file(arch) or hub_cache() / f"models--{repo.replace('/', '--')}"
        return WeightsFile(name, f"https://huggingface.co/{repo}/resolve/main/{filename}", f"{repo}/{filename}", dest, hf_repo=repo)
    if name in LITE_FAMILY:
        raise BackboneError(f"{name}'s weights ship with a Python package; there is nothing to download")
    try:
        url = torchvision_models.weights_url(name)
    except ValueError:
        backbone_spec(name)  # an unknown name: the registry's message lists the known ones
        raise BackboneError(f"{name} has no pretrained weights to download") from None
    from torchvision import models

    file = Path(url).name
    found = re.search(r"-([a-f0-9]{6,})\.", file)  # torch.hub's HASH_REGEX, at least 6 hex digits
    size = models.get_model_weights(name).DEFAULT.meta.get("_file_size")
    return WeightsFile(name, url, file, torchvision_models.pretrained_file(name), size, found and found.group(1))


def needs_download(name: str) -> bool:
    """True when ``name`` has pretrained weights on a host and they are not in the cache yet."""
    prefix, rest = split_name(name)
    if name in LITE_FAMILY or prefix not in ("", TIMM_PREFIX) or ":" in rest:  # embedded, probe:, parts_net:
        return False
    return not weights_file(name).present()


def fetch_weights(name: str, progress: ByteProgress | None = None) -> Path:
    """Download and check the pretrained weights of ``name`` unless they are already in the cache; their path.

    ``DownloadRefused`` (a ``BackboneError``) when the host cannot be reached or the file does not match.
    """
    wf = weights_file(name)
    if wf.present():
        return wf.dest
    if wf.hf_repo:
        return _fetch_hub(wf, progress)
    if not wf.sha256_prefix:  # never the case for torchvision's files; an unchecked file is never used
        raise DownloadRefused(f"{wf.url}: its name carries no sha256 prefix to check it against; refused")
    wf.dest.parent.mkdir(parents=True, exist_ok=True)
    path, digest = _download(wf.url, wf.dest.parent, progress)
    if not digest.startswith(wf.sha256_prefix):
        _refuse(
            path,
            f"{wf.url}: its sha256 begins {digest[: len(wf.sha256_prefix)]}, but the file's name says "
            f"{wf.sha256_prefix} (a corrupt or truncated download); nothing was kept in {wf.dest.parent}",
        )
    os.replace(path, wf.dest)
    return wf.dest


def _fetch_hub(wf: WeightsFile, progress: ByteProgress | None) -> Path:
    """A timm file into the Hugging Face cache layout: blobs/<sha256>, snapshots/<revision>/<file>, refs/main."""
    assert wf.hf_repo, "only called for files on the hub"
    repo, filename = wf.hf_repo, wf.mirror_name.rsplit("/", 1)[-1]
    expected, revision = _expected_hub_sha256(wf)
    folder = hub_cache() / f"models--{repo.replace('/', '--')}"
    blobs = folder / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    path, digest = _download(wf.url, blobs, progress)
    if digest != expected:
        _refuse(
            path,
            f"{wf.url}: its sha256 is {digest[:16]}..., expected {expected[:16]}... (a corrupt or "
            f"truncated download); nothing was kept in {folder}",
        )
    os.replace(path, blobs / digest)
    refs = folder / "refs" / "main"
    revision = refs.read_text().strip() if refs.is_file() else revision
    link = folder / "snapshots" / revision / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{filename}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(blobs / digest, link.parent), tmp)
    os.replace(tmp, link)
    if not refs.is_file():
        refs.parent.mkdir(exist_ok=True)
        _write_text(refs, revision)
    return link


def _expected_hub_sha256(wf: WeightsFile) -> tuple[str, str]:
    """(sha256, revision): from a mirror's ``<file>.sha256`` sidecar, else the hub's metadata for the file.

    A mirror has no revisions; its files are kept under a revision named after their sha256."""
    if wf.url != wf.public_url:
        sidecar = wf.url + ".sha256"
        try:
            with urllib.request.urlopen(sidecar, timeout=TIMEOUT_S) as response:
                expected = response.read(200).decode("ascii", "replace").split()[0].lower()
        except (OSError, IndexError, http.client.HTTPException) as exc:
            raise DownloadRefused(
                f"the mirror serves no checksum at {sidecar} ({_reason(exc)}): refused, since an unchecked file is never used"
            ) from exc
        revision = expected[:40]
    else:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        repo, filename = wf.mirror_name.rsplit("/", 1)
        try:
            meta = get_hf_file_metadata(hf_hub_url(repo, filename))
        except Exception as exc:  # the hub client raises many kinds of errors for one cause: no answer
            raise DownloadRefused(
                f"could not reach the Hugging Face hub for {wf.url} ({_reason(exc)}); "
                "set $PROTOLIB_WEIGHTS_MIRROR, or fetch it by hand"
            ) from exc
        expected, revision = (meta.etag or "").lower(), meta.commit_hash or (meta.etag or "")[:40]
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise DownloadRefused(f"no sha256 for {wf.url} (got {expected[:70]!r}): refused, an unchecked file is never used")
    return expected, revision


def _download(url: str, folder: Path, progress: ByteProgress | None) -> tuple[Path, str]:
    """``url`` into a temporary file in ``folder``: (its path, its sha256). A short read is refused."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".download-", suffix=".part")
    path, digest, done = Path(name), hashlib.sha256(), 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "protoscope"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0)
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        if total and done != total:
            raise DownloadRefused(f"{url}: the download stopped after {done} of {total} bytes")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        path.unlink(missing_ok=True)
        if isinstance(exc, DownloadRefused):
            raise
        raise DownloadRefused(f"could not download {url} ({_reason(exc)}); nothing was kept") from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, digest.hexdigest()


def _refuse(path: Path, message: str) -> NoReturn:
    path.unlink(missing_ok=True)
    raise DownloadRefused(message)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _write_text(path: Path, text: str) -> None:
    from ..files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)
