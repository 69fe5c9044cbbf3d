"""A small Kubernetes API client for the objects the operator owns.

kopf talks to the API for the ``StreamConfig`` itself (watching, status,
events) but has no public client for other kinds. This one covers exactly
what the operator needs (get/create/patch/delete ConfigMaps, list and patch
Deployments) over ``aiohttp``, which kopf already depends on, and uses the
very credentials kopf's login produced (a :class:`kopf.ConnectionInfo`:
service account, kubeconfig, or an explicit server), so the operator has one
notion of "who am I". A 401 (a rotated service-account token) re-runs the
login once and retries.

Errors come back as :class:`KubeError` with the API's status code, reason
and message; a missing object on ``get`` is ``None``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

logger = logging.getLogger(__name__)

Login = Callable[[], Awaitable[kopf.ConnectionInfo | None]]

#: How the API server's audit log names this client (kopf's own calls say ``kopf/<version>``).
USER_AGENT = "pulsestream-operator"

#: Bound on one API call; kopf retries the reconcile on a timeout.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)


class KubeError(Exception):
    """The API answered with an error status (or could not be reached: status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class KubeClient:
    """Calls the Kubernetes API with the current credentials; one session per credential set."""

    def __init__(self, login: Login) -> None:
        self._login = login
        self._info: kopf.ConnectionInfo | None = None
        self._session: aiohttp.ClientSession | None = None

    async def use(self, info: kopf.ConnectionInfo) -> None:
        """Switch to new credentials (kopf's login handler calls this on every (re-)login)."""
        if info != self._info:
            await self.close()
            self._info = info

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _open(self) -> tuple[aiohttp.ClientSession, kopf.ConnectionInfo]:
        if self._info is None:
            raise KubeError(0, "NotLoggedIn", "no Kubernetes credentials yet")
        if self._session is None or self._session.closed:
            info = self._info
            ssl = info.as_ssl_context() if info.server.startswith("https") else False
            self._session = aiohttp.ClientSession(
                base_url=info.server.rstrip("/") + "/",
                headers={"User-Agent": USER_AGENT, **info.as_http_headers()},
                connector=aiohttp.TCPConnector(ssl=ssl),
                timeout=REQUEST_TIMEOUT,
                trust_env=info.trust_env,
            )
        return self._session, self._info

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One API call; returns the response object. Retries once after re-login on 401."""
        for attempt in (1, 2):
            session, info = self._open()
            try:
                async with session.request(
                    method,
                    path.lstrip("/"),
                    json=body,
                    params=params,
                    headers={"Content-Type": content_type} if body is not None else None,
                    proxy=info.proxy_url,
                ) as response:
                    status = response.status
                    text = await response.text() if response.content_length != 0 else ""
                try:
                    payload: Any = json.loads(text) if text.strip() else {}
                except ValueError:
                    # Not JSON: a proxy's HTML error page, a plain-text 401. Keep its start for the message.
                    payload = {"reason": response.reason or "", "message": text[:200]} if status >= 400 else {}
            except (aiohttp.ClientError, TimeoutError) as error:
                raise KubeError(0, type(error).__name__, f"{method} {path}: {error}") from error
            if status == 401 and attempt == 1:
                fresh = await self._login()
                if fresh is not None:
                    logger.info("kubernetes credentials refreshed after 401", extra={"path": path})
                    await self.use(fresh)
                    continue
            if status >= 400:
                body_ = payload if isinstance(payload, dict) else {}
                raise KubeError(status, str(body_.get("reason", "")), str(body_.get("message", payload)))
            logger.debug("%s %s -> %s", method, path, status)
            return payload if isinstance(payload, dict) else {}
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at ``path``, or ``None`` if it does not exist."""
        try:
            return await self.request("GET", path)
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    # -- the objects the operator touches -------------------------------------------------------

    @staticmethod
    def configmap_path(namespace: str, name: str = "") -> str:
        base = f"/api/v1/namespaces/{quote(namespace)}/configmaps"
        return f"{base}/{quote(name)}" if name else base

    @staticmethod
    def deployment_path(namespace: str, name: str = "") -> str:
        base = f"/apis/apps/v1/namespaces/{quote(namespace)}/deployments"
        return f"{base}/{quote(name)}" if name else base

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get(self.configmap_path(namespace, name))

    async def create_configmap(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", self.configmap_path(namespace), body=body)

    async def patch_configmap(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request(
            "PATCH", self.configmap_path(namespace, name), body=patch, content_type="application/merge-patch+json"
        )

    async def delete_configmap(self, namespace: str, name: str) -> None:
        try:
            await self.request("DELETE", self.configmap_path(namespace, name))
        except KubeError as error:
            if error.status != 404:
                raise

    async def list_deployments(self, namespace: str, label: str, value: str) -> list[dict[str, Any]]:
        """Deployments whose ``label`` is ``value`` (filtered here too, in case a server ignores selectors)."""
        listing = await self.request(
            "GET", self.deployment_path(namespace), params={"labelSelector": f"{label}={value}"}
        )
        items = listing.get("items") or []
        return [item for item in items if (item.get("metadata", {}).get("labels") or {}).get(label) == value]

    async def patch_deployment(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request(
            "PATCH", self.deployment_path(namespace, name), body=patch, content_type="application/merge-patch+json"
        )
