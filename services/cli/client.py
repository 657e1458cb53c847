"""The CLI's HTTP client for the API (httpx), turning problem documents into clear messages.

Its credentials: `--token` or `$MESHLOG_TOKEN`; else, for the API that the data dir's
`up.json` (`meshlog up`) or `api.json` (`meshlog api`) names, the admin token that API keeps
in `<data dir>/admin-token` (`admin_token_file`). The data dir's token is never sent to
another API. That API renews the token when the user-token signing key changes; a request
refused (401) with the token read before the renewal is sent once more with the file's new
token (a 401 comes before any route runs, so nothing was done twice).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from events.identity import InvalidToken, read_header
from services.runtime.config import ADMIN_TOKEN_FILE, API_FILE

__all__ = ["ApiClient", "ApiError", "admin_token_file"]

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


def _same_api(api: str, named_in: Path) -> bool:
    try:
        named = json.loads(named_in.read_text()).get("api")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(named, str) and named.rstrip("/") == api.rstrip("/")


def _read_token(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None  # not ours to read: the API answers what an anonymous caller gets


class ApiClient:
    def __init__(self, base_url: str, token: str | None = None, *,
                 token_file: Path | None = None) -> None:
        """`token`: the user token to send; else the one in `token_file` (the data dir's
        admin token, read again when it is refused)."""
        self._base = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self._base, timeout=_TIMEOUT)
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
                       else _refused_admin_token(self._token_file, self._token))
            raise ApiError(response.status_code, _problem_text(response, refused))
        return response

    def _request(self, method: str, path: str, *, json: Any,
                 params: dict[str, Any] | None) -> httpx.Response:
        try:
            return self._http.request(method, path, json=json, params=params)
        except httpx.TransportError as exc:
            raise ApiError(0, f"cannot reach the meshlog API at {self._base}: {exc}. "
                              "Is `meshlog up` running? (--api / MESHLOG_API)") from exc

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


def _refused_admin_token(path: Path, token: str) -> str:
    """What to do when the data dir's admin token is refused: its API writes a new one at
    start, and while it runs whenever the user-token key changes."""
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
            f"NAME --group mesh-system:admin`)")


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
