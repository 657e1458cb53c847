"""The CLI's HTTP client for the API (httpx), turning problem documents into clear messages.

Its credentials: `--token` or `$MESHLOG_TOKEN`; else, for the API that the data dir's
`up.json` (`meshlog up`) or `api.json` (`meshlog api`) names, the admin token that API keeps
in `<data dir>/admin-token` (`admin_token_file`). The data dir's token is never sent to
another address. `meshlog up` and `meshlog api` remove their file when they stop, and one a
crash left is ignored, with a note, when the process it names is gone or its pid is another
process's now (services.runtime.up_file.judge). A file this host cannot check (written on
another host or in a container sharing the data dir, or by an older release) is taken at its
word, with a note; should it name an API that is now another control plane's, that one
refuses the token, and the 401 says so. That API renews
the token when the user-token signing key changes; a request refused (401) with the token
read before the renewal is sent once more with the file's new token (a 401 comes before any
route runs, so nothing was done twice).
"""

from __future__ import annotations

import json
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx

from events.identity import InvalidToken, read_header
from services.errors import ConfigError
from services.runtime.config import ADMIN_TOKEN_FILE, API_FILE
from services.runtime.up_file import judge

__all__ = ["CA_FLAG", "ApiClient", "ApiError", "admin_token_file", "api_of", "api_trust",
           "read_named"]

CA_FLAG = "--ca-cert-file"
_CA_ENV = "MESHLOG_API_CA_CERT_FILE"

_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_NAMING_FILES = ("up.json", API_FILE)
"""The files of a data dir that name the API it belongs to (`meshlog up`, `meshlog api`)."""


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def admin_token_file(api: str, data_dir: Path) -> Path | None:
    """The admin token file of `data_dir` when `api` is the API its up.json or api.json
    names; else None (a token sent to an API that did not make it would be refused, 401, and
    it is not another API's to see)."""
    path = data_dir / ADMIN_TOKEN_FILE
    if not path.is_file() or not any(_same_api(api, data_dir / name) for name in _NAMING_FILES):
        return None
    return path


def read_named(named_in: Path) -> dict[str, Any]:
    """up.json or api.json, or {} when there is none to read, or when the process that wrote
    it is gone (one a crash left: `services.runtime.up_file.judge`). A file whose writer
    cannot be checked from here (another host or PID namespace, an older release's) is taken
    at its word. Either is said once on stderr (`_say_once`)."""
    try:
        doc = json.loads(named_in.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    writer = judge(doc)
    if writer.state == "gone":
        _say_once(f"note: ignoring {named_in}: {writer.why}; a crash left it (remove it)")
        return {}
    if writer.state == "unchecked":
        _say_once(f"note: {named_in}: {writer.why}; taking it at its word that its API runs "
                  f"at {doc.get('api')} (remove the file if that control plane has stopped)")
    return doc


_said: set[str] = set()


def _say_once(note: str) -> None:
    """`note` on stderr, once per CLI command (its files are read more than once)."""
    if note not in _said:
        _said.add(note)
        print(note, file=sys.stderr)


def _same_api(api: str, named_in: Path) -> bool:
    named = read_named(named_in).get("api")
    return isinstance(named, str) and named.rstrip("/") == api.rstrip("/")


def api_of(api: str | None, default: str, data_dir: Path) -> str:
    """The API to talk to: `api` when given (--api, $MESHLOG_API); else `default`, or the data
    dir's https API at the same host and port (module docstring)."""
    if api:
        return api
    plain = httpx.URL(default)
    for name in _NAMING_FILES:
        named = read_named(data_dir / name).get("api")
        if isinstance(named, str) and named.startswith("https://"):
            url = httpx.URL(named)
            if plain.scheme == "http" and (url.host, url.port) == (plain.host, plain.port):
                return named
    return default


def api_trust(api: str, data_dir: Path, ca_cert_file: str | None) -> ssl.SSLContext | bool:
    """What the CLI trusts for `api` (module docstring): an SSLContext with one CA, or True
    (the system's). A CA file that cannot be read or is no PEM certificate is a ConfigError
    naming it and where it was named."""
    if ca_cert_file:
        return _trusting(Path(ca_cert_file), f"{CA_FLAG} ({_CA_ENV})")
    if not api.startswith("https://") or not _same_api(api, data_dir / "up.json"):
        return True
    named = read_named(data_dir / "up.json").get("api_ca_cert")
    if not isinstance(named, str):
        return True  # files of the operator's (api_tls_cert): their CA is theirs to give
    return _trusting(Path(named), f"api_ca_cert of {data_dir / 'up.json'}")


def _trusting(path: Path, named_by: str) -> ssl.SSLContext:
    try:
        pem = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise ConfigError(f"{named_by} {path}: cannot read it ({reason})") from None
    try:
        return ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError):
        raise ConfigError(f"{named_by} {path}: not a PEM certificate (expected -----BEGIN "
                          f"CERTIFICATE-----)") from None


def _read_token(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None  # not ours to read: the API answers what an anonymous caller gets


class ApiClient:
    def __init__(self, base_url: str, token: str | None = None, *,
                 token_file: Path | None = None, verify: ssl.SSLContext | bool = True) -> None:
        """`token`: the user token to send; else the one in `token_file` (the data dir's
        admin token, read again when it is refused). `verify`: `api_trust`'s."""
        self._base = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self._base, timeout=_TIMEOUT, verify=verify)
        self._token_file = token_file if not token else None
        token = token.strip() if token else None
        self._use(token if token or token_file is None else _read_token(token_file))

    def _use(self, token: str | None) -> None:
        self._token = token
        if token:
            self._http.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, json: Any = None,
                params: dict[str, Any] | None = None) -> Any:
        return self._send(method, path, json=json, params=params).json()

    def request_text(self, method: str, path: str, *, json: Any = None) -> str:
        """A request whose answer is text (a token)."""
        return self._send(method, path, json=json).text.strip()

    def _send(self, method: str, path: str, *, json: Any = None,
              params: dict[str, Any] | None = None) -> httpx.Response:
        response = self._request(method, path, json=json, params=params)
        if response.status_code == 401 and self._token_file is not None and self._token:
            renewed = _read_token(self._token_file)
            if renewed and renewed != self._token:  # renewed by its API since it was read
                self._use(renewed)
                response = self._request(method, path, json=json, params=params)
        if response.status_code >= 400:
            refused = (None if self._token_file is None or not self._token
                       else _refused_admin_token(self._token_file, self._token, self._base))
            raise ApiError(response.status_code, _problem_text(response, refused))
        return response

    def _request(self, method: str, path: str, *, json: Any,
                 params: dict[str, Any] | None) -> httpx.Response:
        try:
            return self._http.request(method, path, json=json, params=params)
        except httpx.TransportError as exc:
            raise ApiError(0, f"cannot reach the meshlog API at {self._base}: "
                              f"{str(exc).rstrip('.')}. {_hint(self._base, exc)}") from exc

    def put(self, path: str, doc: dict[str, Any]) -> Any:
        return self.request("PUT", path, json=doc)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def list_all(self, path: str, labels: dict[str, str] | None = None
                 ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        offset = 0
        filters = {f"filter[labels.{k}]": v for k, v in (labels or {}).items()}
        while True:
            page = self.get(path, size=1000, offset=offset, **filters)
            items.extend(page["items"])
            if not page.get("next"):
                return items
            offset += len(page["items"])


def _hint(base: str, exc: httpx.TransportError) -> str:
    """What to check when the API could not be reached."""
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return (f"Its certificate is not one the CLI trusts: give the CA that issued it with "
                f"{CA_FLAG} or {_CA_ENV} (`meshlog up --api-tls` keeps its CA in "
                f"<data dir>/api-tls/ca.crt)")
    if base.startswith("http://") and isinstance(exc, httpx.RemoteProtocolError):
        return ("If it serves HTTPS (--api-tls, --api-tls-cert-file), use https:// in --api / "
                "MESHLOG_API")
    return "Is `meshlog up` running? (--api / MESHLOG_API)"


def _refused_admin_token(path: Path, token: str, base: str) -> str:
    """What to do when the data dir's admin token is refused by the API at `base`: its API
    writes a new one at start, and while it runs whenever the user-token key changes; or
    `base` is another control plane's now (a file of the data dir that names it was left by a
    process that is gone: a `meshlog api`, or a `meshlog up` whose pid another process has now)."""
    try:
        signed = f" (signed with {read_header(token)})"
    except InvalidToken:
        signed = ""
    data_dir = path.parent
    return (f". The admin token in {path}{signed} was refused. The API of that data dir "
            f"writes a new one when it starts and, while it runs, when the user-token signing "
            f"key changes; if it has not (its log says why), restart it (`meshlog api "
            f"--data-dir {data_dir} ...` or `meshlog up --data-dir {data_dir}`), or pass "
            f"another admin's user token with --token (`meshlog generate user-token --name "
            f"NAME --group mesh-system:admin`). If the API at {base} is another control "
            f"plane's (the data dir's up.json or api.json names {base}, left by a process that "
            f"is gone), set MESHLOG_DATA_DIR to that control plane's data dir")


def _problem_text(response: httpx.Response, refused_admin_token: str | None = None) -> str:
    """The problem document's words; on a 401 what to do (`refused_admin_token`: when the
    data dir's admin token was sent)."""
    try:
        doc = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:500]}"
    detail = doc.get("detail") or doc.get("title") or str(doc)
    if response.status_code == 401:
        detail += refused_admin_token or (
            " (a user token goes in --token or MESHLOG_TOKEN; `meshlog up` and `meshlog api` "
            "keep an admin token in <data dir>/admin-token)")
    return f"{detail}" if "invalid_parameters" in doc else f"HTTP {response.status_code}: {detail}"
