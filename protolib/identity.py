"""Who a visitor is, without accounts: a private link, or the user a team's proxy names.

- **A private link.** A new visitor gets a token of 256 random bits (``new_token``) that the app keeps in
  the page's address. Whoever has the address has the workspace: it is a capability, like a shared-document
  link, and the page says so. A reload, a second tab or the next day finds the same workspace again.
- **The proxy's user.** When the operator names a header (``config.user_header``, e.g. ``X-Forwarded-User``
  set by Caddy or nginx after they authenticated the person), the workspace is that user's, on any device.
  Without that setting the header is never read: anyone could send it.

Folder names never reveal a token or a user name: each is an HMAC-SHA256 of it under a secret of the
server (``server_secret``: 256 random bits in the runs folder, readable by the server's account only), so
a folder name cannot be turned back into a link, and knowing a user's name does not give their folder.
The private runs folder and the upload folder get two independent names. Nothing here imports Streamlit
or writes a token anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

from .workspace import Workspace

TOKEN_BYTES = 32  # 256 random bits: 43 characters of base64url
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_USER = 256  # characters of a user name from the proxy
SECRET_FILE = ".workspace-secret"  # in the runs folder (dot: never listed as a run)
ISSUED = ".issued"  # in a private runs folder made for a link: the link is one the server gave out
_SECRETS: dict[Path, bytes] = {}  # per process: the secret is read once per runs folder


class IdentityError(RuntimeError):
    """The server's secret is unreadable or malformed: an operator's problem, never a visitor's."""


def new_token() -> str:
    """A private link's token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def valid_token(text: object) -> TypeGuard[str]:
    """Whether ``text`` has the exact shape of a token (43 base64url characters); nothing else is looked at."""
    return isinstance(text, str) and TOKEN_PATTERN.fullmatch(text) is not None


def valid_user(text: object) -> TypeGuard[str]:
    """Whether a proxy's user header is a usable name: 1 to 256 printable characters, not only spaces."""
    return isinstance(text, str) and 0 < len(text) <= MAX_USER and text.isprintable() and bool(text.strip())


# -- the server's secret ------------------------------------------------------------------------------
def server_secret(runs_root: str | Path) -> bytes:
    """The secret that names workspace folders, made once per runs folder: 32 random bytes written to a
    0600 file and linked into place in one step (two processes starting together agree on one)."""
    path = Path(runs_root) / SECRET_FILE
    if path in _SECRETS:
        return _SECRETS[path]
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".secret.", suffix=".tmp", dir=path.parent)  # mode 0600
        try:
            os.write(fd, secrets.token_hex(32).encode())
            os.fsync(fd)
            os.close(fd)
            try:
                os.link(tmp, path)  # fails when another process was first: theirs is the secret
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise IdentityError(f"the server's workspace secret {path} cannot be read ({exc.strerror})") from exc
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise IdentityError(
            f"the server's workspace secret {path} is malformed: remove it to make a new one "
            "(every private link then starts a new workspace)"
        )
    _SECRETS[path] = bytes.fromhex(text)
    return _SECRETS[path]


def folder_names(secret: bytes, kind: str, value: str) -> tuple[str, str]:
    """(private runs folder, upload folder) of the identity ``kind`` ("link" or "user") ``value``: two
    independent 128-bit HMACs, so neither folder name tells the other or the value."""

    def mac(purpose: str) -> str:
        return hmac.new(secret, f"{purpose}\0{kind}\0{value}".encode(), hashlib.sha256).hexdigest()[:32]

    return mac("runs"), mac("uploads")


# -- who this is -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """A visitor's workspace and how it was found: ``token`` is the private link to keep in the address
    (None when the proxy's user decides), ``fresh`` whether the workspace was made just now."""

    workspace: Workspace
    token: str | None
    fresh: bool

    @property
    def by_proxy(self) -> bool:
        return self.token is None


def workspace_for(runs_root: Path, uploads_root: Path, kind: str, value: str) -> Workspace:
    runs_name, upload_name = folder_names(server_secret(runs_root), kind, value)
    return Workspace(runs_name, upload_name, Path(runs_root), Path(uploads_root))


def is_issued(workspace: Workspace) -> bool:
    """Whether the workspace's link was given out by this server and not forgotten (or cleaned up) since."""
    return (workspace.private_runs / ISSUED).is_file()


def identify(
    runs_root: str | Path,
    uploads_root: str | Path,
    token: str | None = None,
    user: str | None = None,
    user_header: str | None = None,
) -> Identity:
    """The workspace of a visitor who brings ``token`` (from the address) and ``user`` (the value of the header
    ``user_header``, when the operator named one). The proxy's user wins when the header is configured and
    holds a usable name; otherwise a token this server gave out finds its workspace again, and anything else
    (no token, a malformed one, an unknown or forgotten one) gets a new link and an empty workspace."""
    runs_root, uploads_root = Path(runs_root), Path(uploads_root)
    if user_header and valid_user(user):
        workspace = workspace_for(runs_root, uploads_root, "user", user.strip())
        fresh = not workspace.private_runs.is_dir()
        workspace.private_runs.mkdir(parents=True, exist_ok=True)
        return Identity(workspace, None, fresh)
    if valid_token(token):
        workspace = workspace_for(runs_root, uploads_root, "link", token)
        if is_issued(workspace):
            return Identity(workspace, token, False)
    return issue(runs_root, uploads_root)


def issue(runs_root: str | Path, uploads_root: str | Path) -> Identity:
    """A new private link and its empty workspace (marked as issued)."""
    token = new_token()
    workspace = workspace_for(Path(runs_root), Path(uploads_root), "link", token)
    workspace.private_runs.mkdir(parents=True, exist_ok=True)
    (workspace.private_runs / ISSUED).touch()
    return Identity(workspace, token, True)
