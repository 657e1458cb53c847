"""The CLI's HTTP client for the API (httpx), turning problem documents into clear messages.

Its credentials (`api_token`): `--token` or `$MESHLOG_TOKEN`; else, for the API a `meshlog up`
of the data dir runs (its up.json names it), the admin token that `meshlog up` wrote there.
The data dir's token is never sent to another API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from services.runtime.config import ADMIN_TOKEN_FILE

__all__ = ["ApiClient", "ApiError", "api_token"]

_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def api_token(api: str, *, token: str | None, data_dir: Path) -> str | None:
    """The user token to send to `api`: `token` if given; else the admin token in `data_dir`
    when `api` is the API its up.json names. (A data dir of `meshlog api` has no up.json:
    its loopback clients are admin anyway, others pass `--token`; a token sent to an API that
    did not make it would be refused, 401.)"""
    if token:
        return token.strip()
    path = data_dir / ADMIN_TOKEN_FILE
    if not path.is_file() or not _same_api(api, data_dir / "up.json"):
        return None
    try:
        return path.read_text().strip() or None
    except OSError:
        return None  # not ours to read: the API answers what an anonymous caller gets


def _same_api(api: str, up: Path) -> bool:
    try:
        named = json.loads(up.read_text()).get("api")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(named, str) and named.rstrip("/") == api.rstrip("/")


class ApiClient:
    def __init__(self, base_url: str, token: str | None = None) -> None:
        self._base = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self._base, timeout=_TIMEOUT, headers=headers)

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
        try:
            response = self._http.request(method, path, json=json, params=params)
        except httpx.TransportError as exc:
            raise ApiError(0, f"cannot reach the meshlog API at {self._base}: {exc}. "
                              "Is `meshlog up` running? (--api / MESHLOG_API)") from exc
        if response.status_code >= 400:
            raise ApiError(response.status_code, _problem_text(response))
        return response

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


def _problem_text(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:500]}"
    detail = doc.get("detail") or doc.get("title") or str(doc)
    if response.status_code == 401:
        detail += (" (a user token goes in --token or MESHLOG_TOKEN; `meshlog up` keeps an "
                   "admin token in <data dir>/admin-token)")
    return f"{detail}" if "invalid_parameters" in doc else f"HTTP {response.status_code}: {detail}"
