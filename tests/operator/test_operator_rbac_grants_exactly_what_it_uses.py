"""The RBAC rules shipped for the operator grant exactly what it uses against the API.

Every request the operator made during a full scenario (kopf's and our client's,
told apart from the test's by User-Agent) must be allowed by the rules; and,
for the cluster-wide ClusterRole, every rule must have been needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from emulated_cluster import CONFIGMAPS, NAMESPACE, STREAMCONFIGS, Cluster, StartOperator, eventually
from kmock._internal import enums
from pulsestream_operator.crd import GROUP, PLURAL, VERSION

from pulsestream.spec import parse_spec

pytestmark = pytest.mark.kmock(cls=Cluster)

ROOT = Path(__file__).resolve().parents[2]
PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}"
VERBS = {
    enums.action.LIST: "list",
    enums.action.WATCH: "watch",
    enums.action.FETCH: "get",
    enums.action.CREATE: "create",
    enums.action.DELETE: "delete",
}

Grant = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


def rules_of(path: Path, kind: str) -> set[Grant]:
    grants: set[Grant] = set()
    for document in yaml.safe_load_all(path.read_text()):
        if document and document["kind"] == kind:
            for rule in document["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        grants.update((group, resource, verb) for verb in rule["verbs"])
    return grants


def used_by_operator(cluster: Cluster) -> tuple[set[Grant], list[str]]:
    used: set[Grant] = set()
    cluster_wide: list[str] = []
    for request in list(cluster):
        agent = request.headers.get("User-Agent", "")
        if not agent.startswith(("kopf/", "pulsestream-operator")) or request.resource is None:
            continue
        if request.resource.plural is None:  # discovery (/api, /apis/GROUP/VERSION): open to every user
            continue
        if request.action == enums.action.UPDATE:
            verb = "patch" if request.method == "PATCH" else "update"
        else:
            verb = VERBS[request.action]
        resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        used.add((request.resource.group, resource, verb))
        if request.namespace is None:
            cluster_wide.append(f"{verb} {resource}")
    return used, cluster_wide


async def scenario(cluster: Cluster, start_operator: StartOperator, namespaces: str) -> None:
    """Everything the operator does: create, roll, retarget, reject, delete."""
    for name in ("pulsestream-generator", "other-generator"):
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/instance": name.split("-")[0]}},
            "spec": {"template": {"metadata": {}, "spec": {"containers": []}}},
        }
        async with cluster.post(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", json=body):
            pass
    await start_operator(OPERATOR_NAMESPACES=namespaces, OPERATOR_ROLL_ON="series")
    spec: dict[str, Any] = {"target": "pulsestream"}
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "StreamConfig", "metadata": {"name": "demo"}, "spec": spec}
    async with cluster.post(PATH, json=body):
        pass

    def state() -> dict[str, Any]:
        return dict(cluster.objects[STREAMCONFIGS, NAMESPACE, "demo"].raw.get("status") or {})

    await eventually(lambda: state().get("observedGeneration") == 1, what="generation 1")
    merge = {"Content-Type": "application/merge-patch+json"}
    for generation, change in enumerate(
        ({"series": ["cpu"]}, {"target": "other"}, {"rateLimit": {"requestsPerSecond": 9, "burst": 1}}), start=2
    ):
        async with cluster.patch(f"{PATH}/demo", json={"spec": change}, headers=merge):
            pass
        await eventually(lambda g=generation: state().get("observedGeneration") == g, what=f"generation {generation}")
    assert cluster.objects[CONFIGMAPS, NAMESPACE, "pulsestream-settings"].deleted
    async with cluster.delete(f"{PATH}/demo"):
        pass
    await eventually(lambda: cluster.objects[STREAMCONFIGS, NAMESPACE, "demo"].deleted, what="deletion")
    parse_spec(spec)


async def test_the_cluster_role_grants_exactly_what_the_operator_uses_cluster_wide(
    cluster: Cluster, start_operator: StartOperator
) -> None:
    await scenario(cluster, start_operator, namespaces="")
    used, _ = used_by_operator(cluster)
    granted = rules_of(ROOT / "operator" / "rbac.yaml", "ClusterRole")
    assert used - granted == set(), "requests the ClusterRole does not allow"
    assert granted - used == set(), "rules the operator never needed"


async def test_the_namespaced_role_of_the_manifests_is_enough_for_one_namespace(
    cluster: Cluster, start_operator: StartOperator
) -> None:
    await scenario(cluster, start_operator, namespaces=NAMESPACE)
    used, cluster_wide = used_by_operator(cluster)
    assert cluster_wide == [], "a namespaced operator must not need cluster-wide rights"
    granted = rules_of(ROOT / "k8s" / "operator.yaml", "Role")
    assert used - granted == set(), "requests the Role in k8s/operator.yaml does not allow"
