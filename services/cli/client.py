"""The CLI's HTTP client for the API (httpx), turning problem documents into clear messages."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["ApiClient", "ApiError"]

_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class ApiClient:
    def __init__(self, base_url: str) -> None:
        self._base = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self._base, timeout=_TIMEOUT)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, json: Any = None,
                params: dict[str, Any] | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=json, params=params)
        except httpx.TransportError as exc:
            raise ApiError(0, f"cannot reach the meshlog API at {self._base}: {exc}. "
                              "Is `meshlog up` running? (--api / MESHLOG_API)") from exc
        if response.status_code >= 400:
            raise ApiError(response.status_code, _problem_text(response))
        return response.json()

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
    return f"{detail}" if "invalid_parameters" in doc else f"HTTP {response.status_code}: {detail}"
