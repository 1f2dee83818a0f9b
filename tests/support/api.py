"""An HTTP client for the daemons' APIs that checks every response against the OpenAPI document."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.openapi_check import check_response, declared_media_types
from tests.support import auth

_SERVICE = object()  # the default caller: a service token


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


class ApiClient:
    """Calls one daemon as one caller: by default a service (``token``); ``as_(token)`` for another.

    ``token=None`` calls anonymously. A request's own ``Authorization`` header wins.
    """

    def __init__(self, base_url: str, spec: dict[str, Any], session: aiohttp.ClientSession,
                 token: str | None | object = _SERVICE) -> None:
        self.base_url = base_url.rstrip("/")
        self.spec = spec
        self.session = session
        self.checked = 0
        self.token = auth.token() if token is _SERVICE else token

    def as_(self, token: str | None) -> "ApiClient":
        """The same daemon, called with ``token`` (None: anonymously)."""
        return ApiClient(self.base_url, self.spec, self.session, token)

    async def request(self, method: str, path: str, *, json_body: Any = None, data: bytes | None = None,
                      headers: dict[str, str] | None = None, timeout: float = 30) -> Reply:
        headers = dict(headers or {})
        if self.token is not None:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        kwargs: dict[str, Any] = {"headers": headers, "timeout": aiohttp.ClientTimeout(total=timeout)}
        if json_body is not None:
            kwargs["data"] = json.dumps(json_body)
            kwargs["headers"] = {"Content-Type": "application/json", **kwargs["headers"]}
        elif data is not None:
            kwargs["data"] = data
        async with self.session.request(method, self.base_url + path, **kwargs) as response:
            raw = await response.read()
            if response.content_type == "application/json":
                body = json.loads(raw) if raw else None
            else:  # only where the document declares that media type (GET /metrics: text/plain)
                body = raw.decode()
                assert response.content_type in declared_media_types(self.spec, method, path, response.status), \
                    f"{method} {path}: {response.content_type}"
            check_response(self.spec, method, path, response.status, body)
            self.checked += 1
            return Reply(response.status, body, dict(response.headers))

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.request("POST", path, json_body=body, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.request("DELETE", path, **kw)
