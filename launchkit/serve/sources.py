"""Where ``POST /models?url=`` may load an archive from, and fetching it.

An archive is code (its handler runs in a worker), so registering one from an arbitrary place is
remote code execution, and fetching an arbitrary URL is a request forgery (CVE-2023-43654, where
TorchServe's ``allowed_urls`` allowed any URL by default). Here the default is the model store
only:

* a name or relative path is looked up in the model store, and must stay inside it once
  symlinks and ``..`` are resolved;
* anything else (an absolute path, ``file://``, ``http(s)://``) must match one of the
  ``allowed_urls`` regular expressions (whole-string match); redirects are checked the same way;
* an optional sha256 pins the archive's content, checked before anything is extracted.

The checks are pure functions of the URL and the policy; :func:`fetch` does the I/O.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import unquote, urlparse

from launchkit.core.errors import SourceError, SourceMissing, SourceRefused

MAX_DOWNLOAD_BYTES = 4 * 2**30
DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SourcePolicy:
    model_store: Path | None
    allowed_urls: tuple[str, ...] = ()

    def allows(self, url: str) -> bool:
        return any(re.fullmatch(pattern, url) for pattern in self.allowed_urls)


class SourceKind(StrEnum):
    FILE = "file"  # in the model store, or a path allowed_urls matches: used in place
    HTTP = "http"  # http(s): downloaded first


@dataclass(frozen=True)
class ResolvedSource:
    kind: SourceKind
    path: Path | None = None
    url: str = ""


def resolve(url: str, policy: SourcePolicy) -> ResolvedSource:
    """Decide where ``url`` points and whether it may be used; raises SourceRefused / SourceError."""
    if not url or not url.strip():
        raise SourceError("url= is empty: give the name of a .mar in the model store, e.g. url=tiny.mar")
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        if not policy.allows(url):
            raise SourceRefused(
                f"url={url} refused: remote URLs are off unless allowed_urls (config.properties, a comma-separated "
                "list of regular expressions) matches them. Put the archive in the model store, or allow its "
                r"origin, e.g. allowed_urls=https://models\.example\.com/.*"
            )
        return ResolvedSource(SourceKind.HTTP, url=url)
    if scheme == "file":
        return _local(Path(unquote(parsed.path)), url, policy)
    if scheme and len(scheme) > 1:  # one letter would be a Windows drive; everything else is a scheme
        raise SourceError(f"url={url}: scheme {scheme}:// is not supported; use a model-store name, file:// or "
                          "http(s)://")
    path = Path(url)
    if path.is_absolute():
        return _local(path, url, policy)
    if policy.model_store is None:
        raise SourceError(f"url={url} is a model-store name but the server has no model store: start it with "
                          "--model-store DIR (or model_store= in config.properties)")
    return _local(policy.model_store / path, url, policy)


def _local(path: Path, url: str, policy: SourcePolicy) -> ResolvedSource:
    real = path.resolve()
    store = policy.model_store.resolve() if policy.model_store is not None else None
    inside_store = store is not None and real.is_relative_to(store)
    if not inside_store and not policy.allows(url) and not policy.allows(f"file://{real}"):
        where = f"the model store ({store})" if store is not None else "a model store (none is configured)"
        raise SourceRefused(
            f"url={url} refused: only archives inside {where} may be registered, unless allowed_urls (config.properties, "
            "regular expressions) matches the path's file:// URL"
        )
    if not real.is_file() and not (real / "MAR-INF" / "MANIFEST.json").is_file():  # a .mar, or a no-archive folder
        raise SourceMissing(f"url={url}: no such archive ({real})")
    return ResolvedSource(SourceKind.FILE, path=real, url=url)


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to a URL the policy allows (else an allowed URL could bounce anywhere)."""

    def __init__(self, policy: SourcePolicy) -> None:
        self.policy = policy

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201 - urllib's signature
        if not self.policy.allows(newurl):
            raise SourceRefused(f"{req.full_url} redirects to {newurl}, which allowed_urls does not match; refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(source: ResolvedSource, policy: SourcePolicy, folder: Path) -> Path:
    """The archive as a local file: the model-store file itself, or a download into ``folder``. Blocking."""
    if source.kind is SourceKind.FILE:
        assert source.path is not None
        return source.path
    name = Path(urlparse(source.url).path).name or "model.mar"
    target = folder / f"download-{secrets.token_hex(4)}-{name}"  # two registrations of one URL do not collide
    opener = urllib.request.build_opener(_CheckedRedirects(policy))
    try:
        with opener.open(source.url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(target, "wb") as out:
            copied = 0
            while chunk := response.read(1 << 20):
                copied += len(chunk)
                if copied > MAX_DOWNLOAD_BYTES:
                    raise SourceError(f"url={source.url}: the archive is larger than {MAX_DOWNLOAD_BYTES >> 30} GiB")
                out.write(chunk)
    except urllib.error.HTTPError as error:
        target.unlink(missing_ok=True)
        raise SourceError(f"url={source.url}: download failed with HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        target.unlink(missing_ok=True)
        reason = getattr(error, "reason", error)
        raise SourceError(f"url={source.url}: download failed ({reason})") from None
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


def check_sha256(path: Path, *expected: str) -> None:
    """The file at ``path`` must have one of the ``expected`` digests; checked before anything reads it further."""
    wanted = [digest.strip().lower() for digest in expected]
    for given, digest in zip(expected, wanted):
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise SourceError(f"sha256={given!r} is not a sha256 digest (64 hex digits)")
    if path.is_dir():
        raise SourceError(f"{path.name}: a folder cannot be pinned to a sha256; pin a .mar file")
    hashed = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            hashed.update(chunk)
    if hashed.hexdigest() not in wanted:
        raise SourceError(f"{path.name}: sha256 is {hashed.hexdigest()}, but the archive was pinned to "
                          f"{' or '.join(wanted)}; refusing to load it (a different or altered archive)")

