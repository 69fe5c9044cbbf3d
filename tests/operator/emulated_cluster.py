"""The real operator against kmock's Kubernetes API emulator: the pieces the tests share.

The operator runs exactly as in its container: :func:`running.operate`
(``kopf.run`` with our settings and handlers) in its own thread and event
loop, started and stopped from async fixtures through ``asyncio.to_thread``
so kmock's server keeps serving on the test's loop.

:class:`Cluster` closes the kmock 0.8 gaps the operator meets (see
``../shared/TOOLBOX.md``): it stamps ``uid``, ``resourceVersion``,
``generation`` (bumped on spec changes only), ``creationTimestamp`` and the
namespace from the URL on create, gives ``generateName`` objects (kopf's
Events) a name, and answers a failed JSON-patch ``test`` with 422. (kmock 0.8 also misparses
``/api/v1/namespaces``; the operator never lists namespaces, see operator/rbac.yaml.)
It has no garbage collector: deletion tests assert owner references.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import threading
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import jsonpatch
import kmock
import kopf
from kmock._internal import dicts, enums, rendering
from pulsestream_operator import running
from pulsestream_operator.crd import GROUP, PLURAL, VERSION
from pulsestream_operator.settings import OperatorSettings

NAMESPACE = "demo"
STREAMCONFIGS = kmock.resource(GROUP, VERSION, PLURAL)
CONFIGMAPS = kmock.resource("", "v1", "configmaps")
EVENTS = kmock.resource("", "v1", "events")
DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
NAMESPACES = kmock.resource("", "v1", "namespaces")


@attrs.define(kw_only=True)
class Cluster(kmock.KubernetesEmulator):
    """kmock's emulator plus the object metadata an API server maintains."""

    _versions: Any = attrs.field(factory=lambda: itertools.count(1), init=False)

    async def _handle(self, request: rendering.Request) -> Any:
        if request.resource is not None and isinstance(request.data, dict):
            if request.action == enums.action.CREATE:
                self._stamp_create(request)
            elif request.action == enums.action.UPDATE and request.name is not None:
                self._stamp_update(request)
        if request.resource is not None and request.action == enums.action.UPDATE and isinstance(request.data, list):
            key = (request.resource, request.namespace, request.name)
            if key in self.objects and not self.objects[key].deleted:
                try:
                    jsonpatch.apply_patch(copy.deepcopy(self.objects[key].raw), request.data)
                except jsonpatch.JsonPatchConflict as error:  # includes a failed "test"
                    raise kmock.KubernetesError(status=422, reason="Invalid", message=str(error)) from None
        return await super()._handle(request)

    def _stamp_create(self, request: rendering.Request) -> None:
        meta = request.data.setdefault("metadata", {})
        if request.namespace and not meta.get("namespace"):
            meta["namespace"] = request.namespace
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(next(self._versions))
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def _stamp_update(self, request: rendering.Request) -> None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return
        old = self.objects[key].raw
        new = dicts.patch_dict(copy.deepcopy(old), request.data)
        stamp: dict[str, Any] = {"resourceVersion": str(next(self._versions))}
        if request.subresource is None and new.get("spec") != old.get("spec"):
            stamp["generation"] = int(old.get("metadata", {}).get("generation", 1)) + 1
        request.data.setdefault("metadata", {}).update(stamp)


async def eventually(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns a truthy value (or stops raising ``AssertionError``/``KeyError``)."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except (AssertionError, KeyError, ValueError) as error:
            last = error
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {last!r}") from last
        await asyncio.sleep(0.02)


class OperatorThread:
    """The operator, run by the production entry function in its own thread."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        kopf_settings = kopf.OperatorSettings()
        kopf_settings.watching.reconnect_backoff = 0.1
        kopf_settings.posting.level = 20  # INFO: our Normal events too
        self.thread = threading.Thread(target=self._run, args=(kopf_settings,), name="operator", daemon=True)

    def _run(self, kopf_settings: kopf.OperatorSettings) -> None:
        try:
            running.operate(self.settings, kopf_settings=kopf_settings, stop_flag=self.stop, ready_flag=self.ready)
        except BaseException as error:
            self.error = error

    def start(self) -> None:
        self.thread.start()
        if not self.ready.wait(timeout=30):
            raise RuntimeError(f"operator did not become ready: {self.error!r}")

    def join(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        if self.thread.is_alive():
            raise RuntimeError("operator did not stop")


StartOperator = Callable[..., Awaitable[OperatorThread]]
