"""Fixtures: an emulated Kubernetes API and the real operator running against it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from emulated_cluster import NAMESPACE, NAMESPACES, STREAMCONFIGS, Cluster, OperatorThread, StartOperator
from pulsestream_operator.crd import KIND
from pulsestream_operator.settings import OperatorSettings


@pytest.fixture()
def cluster(kmock: Cluster) -> Cluster:
    """The emulated API with the built-in resources, the CRD's resource and a namespace."""
    kmock.resources.load_bundled()
    kmock.resources[STREAMCONFIGS] = kmock.ResourceInfo(
        kind=KIND,
        namespaced=True,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        subresources={"status"},
    )
    kmock.objects[NAMESPACES, None, NAMESPACE] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "uid": "namespace-uid", "resourceVersion": "0"},
    }
    return kmock


@pytest.fixture()
async def start_operator(cluster: Cluster) -> AsyncIterator[StartOperator]:
    """Start the operator against ``cluster`` (watching NAMESPACE); stopped and joined at teardown."""
    started: list[OperatorThread] = []

    async def start(**overrides: str) -> OperatorThread:
        env = {
            "OPERATOR_SERVER": str(cluster.url),
            "OPERATOR_NAMESPACES": NAMESPACE,
            "OPERATOR_LIVENESS_PORT": "0",
            **overrides,
        }
        operator = OperatorThread(OperatorSettings.from_env(env))
        started.append(operator)
        await asyncio.to_thread(operator.start)
        return operator

    yield start
    for operator in started:
        await asyncio.to_thread(operator.join)
        assert operator.error is None, f"operator crashed: {operator.error!r}"
