"""The real operator against the emulated API: StreamConfig in, ConfigMap and status out."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from emulated_cluster import (
    CONFIGMAPS,
    DEPLOYMENTS,
    EVENTS,
    NAMESPACE,
    NAMESPACES,
    STREAMCONFIGS,
    Cluster,
    StartOperator,
    eventually,
)
from pulsestream_operator import handlers
from pulsestream_operator.crd import GROUP, PLURAL, VERSION

from pulsestream.spec import load_spec, parse_spec

pytestmark = pytest.mark.kmock(cls=Cluster)

PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}"


def streamconfig(name: str = "demo", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "StreamConfig",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


async def create(cluster: Cluster, body: dict[str, Any]) -> dict[str, Any]:
    async with cluster.post(PATH, json=body) as response:
        assert response.status < 300, await response.text()
        result: dict[str, Any] = await response.json()
        return result


async def patch_spec(cluster: Cluster, name: str, spec: dict[str, Any]) -> None:
    headers = {"Content-Type": "application/merge-patch+json"}
    async with cluster.patch(f"{PATH}/{name}", json={"spec": spec}, headers=headers) as response:
        assert response.status < 300, await response.text()


def status(cluster: Cluster, name: str = "demo") -> dict[str, Any]:
    obj = cluster.objects[STREAMCONFIGS, NAMESPACE, name]
    return dict(obj.raw.get("status") or {})


def ready(cluster: Cluster, name: str = "demo") -> dict[str, Any]:
    for condition in status(cluster, name).get("conditions", []):
        if condition["type"] == "Ready":
            return dict(condition)
    return {}


def configmap(cluster: Cluster, name: str = "pulsestream-settings") -> dict[str, Any]:
    return dict(cluster.objects[CONFIGMAPS, NAMESPACE, name].raw)


def events(cluster: Cluster, reason: str) -> list[dict[str, Any]]:
    found = []
    for (resource, _, _), obj in cluster.objects.items():
        if resource == EVENTS and not obj.deleted and obj.raw.get("reason") == reason:
            found.append(dict(obj.raw))
    return found


async def test_a_new_streamconfig_gets_an_owned_configmap_and_ready_status(
    cluster: Cluster, start_operator: StartOperator
) -> None:
    await start_operator()
    created = await create(
        cluster,
        streamconfig(target="pulsestream", frequency="250ms", rateLimit={"requestsPerSecond": 5, "burst": 10}),
    )

    condition = await eventually(lambda: ready(cluster).get("status") == "True" and ready(cluster), what="Ready=True")
    assert condition["reason"] == "Applied"
    assert condition["lastTransitionTime"]
    cm = configmap(cluster)
    text = cm["data"]["settings.yaml"]
    assert "frequency: 250ms\n" in text, text  # as written, not 0.25s
    assert "requestsPerSecond: 5\n" in text, text  # an integer stays an integer
    expected = parse_spec(created["spec"])
    assert load_spec(text) == expected
    owners = cm["metadata"]["ownerReferences"]
    assert owners == [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "StreamConfig",
            "name": "demo",
            "uid": created["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    current = status(cluster)
    assert current["observedGeneration"] == 1
    assert current["configMap"] == "pulsestream-settings"
    assert current["settingsHash"] == expected.version()
    assert cm["metadata"]["annotations"]["pulsestream.io/settings-hash"] == expected.version()


async def test_a_spec_change_updates_the_configmap_and_the_status(
    cluster: Cluster, start_operator: StartOperator
) -> None:
    await start_operator()
    await create(cluster, streamconfig(target="pulsestream", frequency="100ms"))
    first = await eventually(lambda: status(cluster).get("settingsHash"), what="first settingsHash")
    became_ready = ready(cluster)["lastTransitionTime"]

    await patch_spec(cluster, "demo", {"frequency": "1s", "rateLimit": {"requestsPerSecond": 2, "burst": 4}})

    await eventually(lambda: status(cluster).get("observedGeneration") == 2, what="observedGeneration 2")
    text = configmap(cluster)["data"]["settings.yaml"]
    spec = load_spec(text)
    assert (spec.frequency, spec.rate_limit.requests_per_second, spec.rate_limit.burst) == ("1s", 2.0, 4)
    assert status(cluster)["settingsHash"] == spec.version() != first
    condition = ready(cluster)
    assert condition["status"] == "True"
    assert condition["observedGeneration"] == 2
    assert condition["lastTransitionTime"] == became_ready  # still ready: no transition
    applied = await eventually(lambda: len(events(cluster, "SettingsApplied")) == 2, what="two applied events")
    assert applied
    messages = sorted(event["message"] for event in events(cluster, "SettingsApplied"))
    assert [m.rsplit("(", 1)[1] for m in messages] == ["created)", "patched)"], messages


async def test_an_invalid_spec_is_reported_not_applied_and_not_retried(
    cluster: Cluster, start_operator: StartOperator
) -> None:
    await start_operator()
    await create(cluster, streamconfig(target="pulsestream", rateLimit={"requestsPerSecond": 5, "burst": 10}))
    good = await eventually(lambda: status(cluster).get("settingsHash"), what="first settingsHash")
    good_text = configmap(cluster)["data"]["settings.yaml"]

    await patch_spec(cluster, "demo", {"rateLimit": {"requestsPerSecond": 50, "burst": 10}})

    condition = await eventually(lambda: ready(cluster).get("status") == "False" and ready(cluster), what="Ready=False")
    assert condition["reason"] == "BurstBelowRate"
    assert "rateLimit.burst (10) must be at least rateLimit.requestsPerSecond (50)" in condition["message"]
    assert status(cluster)["observedGeneration"] == 2
    warnings = await eventually(lambda: events(cluster, "BurstBelowRate"), what="a Warning event")
    assert warnings[0]["type"] == "Warning"
    assert warnings[0]["involvedObject"]["name"] == "demo"
    # The pods keep the last good settings.
    assert configmap(cluster)["data"]["settings.yaml"] == good_text
    assert status(cluster)["settingsHash"] == good

    # Not a retry loop: kopf records generation 2 as handled (no pending retry in its progress annotations).
    def handled() -> bool:
        annotations = cluster.objects[STREAMCONFIGS, NAMESPACE, "demo"].raw["metadata"].get("annotations", {})
        last = annotations.get("pulsestream.io/last-handled-configuration", "")
        pending = [key for key in annotations if key.startswith("pulsestream.io/reconcile")]
        return '"requestsPerSecond":50' in last.replace(" ", "") and not pending

    await eventually(handled, what="kopf to record the rejected spec as handled")

    # Fixing the spec makes it Ready again, with a new transition time.
    await patch_spec(cluster, "demo", {"rateLimit": {"requestsPerSecond": 50, "burst": 100}})
    fixed = await eventually(lambda: ready(cluster).get("status") == "True" and ready(cluster), what="Ready again")
    assert fixed["reason"] == "Applied"
    assert fixed["lastTransitionTime"] >= condition["lastTransitionTime"]
    assert load_spec(configmap(cluster)["data"]["settings.yaml"]).rate_limit.burst == 100


async def test_a_spec_the_model_rejects_gets_ready_false_with_the_models_message(
    cluster: Cluster, start_operator: StartOperator
) -> None:
    await start_operator()
    await create(cluster, streamconfig(target="pulsestream", frequency="2h", series=["cpu", "cpu"]))

    condition = await eventually(lambda: ready(cluster).get("status") == "False" and ready(cluster), what="Ready=False")
    assert condition["reason"] == "InvalidSpec"
    assert "frequency" in condition["message"] and "series" in condition["message"]
    assert (CONFIGMAPS, NAMESPACE, "pulsestream-settings") not in cluster.objects
    assert await eventually(lambda: events(cluster, "InvalidSpec"), what="a Warning event")


async def test_deleting_the_streamconfig_leaves_only_objects_it_owns(
    cluster: Cluster, start_operator: StartOperator
) -> None:
    await start_operator()
    created = await create(cluster, streamconfig(target="pulsestream"))
    await eventually(lambda: status(cluster).get("configMap"), what="the ConfigMap")

    async with cluster.delete(f"{PATH}/demo") as response:
        assert response.status < 300

    await eventually(lambda: cluster.objects[STREAMCONFIGS, NAMESPACE, "demo"].deleted, what="deletion")
    # No finalizer held the delete up, and kmock has no garbage collector: every object the
    # operator created must be owned by the StreamConfig, so Kubernetes' collector removes it.
    leftovers = [
        (resource, name, obj.raw)
        for (resource, namespace, name), obj in cluster.objects.items()
        if not obj.deleted and resource not in (STREAMCONFIGS, EVENTS, NAMESPACES)
    ]
    assert leftovers, "the ConfigMap should still be there for the garbage collector"
    for resource, name, raw in leftovers:
        uids = [ref["uid"] for ref in raw["metadata"].get("ownerReferences", [])]
        assert uids == [created["metadata"]["uid"]], (resource, name)


@pytest.mark.fault
async def test_a_restarted_operator_changes_nothing_that_is_already_right(
    cluster: Cluster, start_operator: StartOperator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pulsestream_operator")
    first = await start_operator()
    await create(cluster, streamconfig(target="pulsestream", frequency="500ms"))
    await eventually(lambda: status(cluster).get("configMap"), what="the ConfigMap")
    await eventually(lambda: events(cluster, "SettingsApplied"), what="the applied event")
    created_log = [r for r in caplog.records if "(create)" in r.getMessage()]
    assert created_log and getattr(created_log[0], "outcome", None) == "created"
    assert "frequency None -> '500ms'" in created_log[0].getMessage()
    cm_versions = len(cluster.objects[CONFIGMAPS, NAMESPACE, "pulsestream-settings"].history)
    sc_versions = len(cluster.objects[STREAMCONFIGS, NAMESPACE, "demo"].history)
    await asyncio.to_thread(first.join)

    await start_operator()

    resumed = await eventually(
        lambda: [r for r in caplog.records if "(resume)" in r.getMessage()], what="the resumed reconcile"
    )
    assert getattr(resumed[0], "outcome", None) == "unchanged"
    assert getattr(resumed[0], "generation", None) == 1
    assert "changed nothing" in resumed[0].getMessage()
    assert len(cluster.objects[CONFIGMAPS, NAMESPACE, "pulsestream-settings"].history) == cm_versions
    assert len(cluster.objects[STREAMCONFIGS, NAMESPACE, "demo"].history) == sc_versions
    assert len(events(cluster, "SettingsApplied")) == 1


def deployment(name: str, instance: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/instance": instance}},
        "spec": {"template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": []}}},
    }


def rolled_to(cluster: Cluster, name: str) -> str | None:
    raw = cluster.objects[DEPLOYMENTS, NAMESPACE, name].raw
    annotations = raw["spec"]["template"]["metadata"].get("annotations") or {}
    return annotations.get("pulsestream.io/settings-hash")


async def test_only_changes_that_cannot_apply_live_roll_the_targets_deployments(
    cluster: Cluster, start_operator: StartOperator
) -> None:
    for name, instance in (("pulsestream-generator", "pulsestream"), ("pulsestream-streamer", "pulsestream")):
        async with cluster.post(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", json=deployment(name, instance)):
            pass
    async with cluster.post(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", json=deployment("other", "other")):
        pass
    await start_operator(OPERATOR_ROLL_ON="series")
    await create(cluster, streamconfig(target="pulsestream", series=["cpu", "memory"]))
    await eventually(lambda: status(cluster).get("settingsHash"), what="first settingsHash")

    # A live-tunable change: the ConfigMap changes, the pods stay.
    await patch_spec(cluster, "demo", {"frequency": "200ms"})
    await eventually(lambda: status(cluster).get("observedGeneration") == 2, what="generation 2")
    assert rolled_to(cluster, "pulsestream-generator") is None
    assert rolled_to(cluster, "pulsestream-streamer") is None

    # A field listed in OPERATOR_ROLL_ON: the target's Deployments roll to the new hash, others stay.
    await patch_spec(cluster, "demo", {"series": ["cpu"]})
    await eventually(lambda: status(cluster).get("observedGeneration") == 3, what="generation 3")
    new_hash = status(cluster)["settingsHash"]
    assert rolled_to(cluster, "pulsestream-generator") == new_hash
    assert rolled_to(cluster, "pulsestream-streamer") == new_hash
    assert rolled_to(cluster, "other") is None
    assert await eventually(lambda: events(cluster, "Rolled"), what="a Rolled event")

    # A new target: its own ConfigMap, the old one removed, the new target's pods rolled.
    await patch_spec(cluster, "demo", {"target": "other"})
    await eventually(lambda: status(cluster).get("configMap") == "other-settings", what="the new ConfigMap")
    assert cluster.objects[CONFIGMAPS, NAMESPACE, "pulsestream-settings"].deleted
    assert load_spec(configmap(cluster, "other-settings")["data"]["settings.yaml"]).target == "other"
    assert rolled_to(cluster, "other") == status(cluster)["settingsHash"]
    assert rolled_to(cluster, "pulsestream-generator") == new_hash


async def test_a_configmap_controlled_by_someone_else_is_not_overwritten(
    cluster: Cluster, start_operator: StartOperator
) -> None:
    foreign = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "pulsestream-settings",
            "namespace": NAMESPACE,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Thing", "name": "x", "uid": "someone-else", "controller": True}
            ],
        },
        "data": {"settings.yaml": "frequency: 1s\n"},
    }
    async with cluster.post(f"/api/v1/namespaces/{NAMESPACE}/configmaps", json=foreign):
        pass
    await start_operator()
    await create(cluster, streamconfig(target="pulsestream"))

    condition = await eventually(lambda: ready(cluster).get("status") == "False" and ready(cluster), what="Ready=False")
    assert condition["reason"] == "ConfigMapConflict"
    assert configmap(cluster)["data"] == {"settings.yaml": "frequency: 1s\n"}


@pytest.mark.fault
async def test_an_api_error_is_retried_until_the_reconcile_succeeds(
    cluster: Cluster, start_operator: StartOperator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(handlers, "RETRY_DELAY", 0.2)
    failure = {"kind": "Status", "code": 503, "reason": "ServiceUnavailable", "message": "etcd is away"}
    cluster[f"get /api/v1/namespaces/{NAMESPACE}/configmaps/pulsestream-settings"][:2] << 503 << failure
    await start_operator()
    await create(cluster, streamconfig(target="pulsestream"))

    condition = await eventually(lambda: ready(cluster).get("status") == "True" and ready(cluster), what="Ready")
    assert condition["reason"] == "Applied"
    retries = [r for r in caplog.records if "will retry" in r.getMessage()]
    assert len(retries) == 2 and "etcd is away" in retries[0].getMessage()


async def test_a_configmap_someone_made_by_hand_is_not_taken_over(
    cluster: Cluster, start_operator: StartOperator
) -> None:
    # Adopting it would make it owned by the StreamConfig, and garbage on the StreamConfig's deletion.
    by_hand = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "pulsestream-settings", "namespace": NAMESPACE},
        "data": {"settings.yaml": "frequency: 1s\n"},
    }
    async with cluster.post(f"/api/v1/namespaces/{NAMESPACE}/configmaps", json=by_hand):
        pass
    await start_operator()
    await create(cluster, streamconfig(target="pulsestream"))

    condition = await eventually(lambda: ready(cluster).get("status") == "False" and ready(cluster), what="Ready=False")
    assert condition["reason"] == "ConfigMapConflict"
    assert "not made by pulsestream-operator" in condition["message"]
    assert configmap(cluster)["data"] == {"settings.yaml": "frequency: 1s\n"}
    assert not configmap(cluster)["metadata"].get("ownerReferences")


@pytest.mark.fault
async def test_a_roll_that_failed_after_the_configmap_changed_is_finished_by_the_retry(
    cluster: Cluster, start_operator: StartOperator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers, "RETRY_DELAY", 0.2)
    for name in ("pulsestream-generator", "pulsestream-streamer"):
        async with cluster.post(
            f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", json=deployment(name, "pulsestream")
        ):
            pass
    await start_operator(OPERATOR_ROLL_ON="series")
    await create(cluster, streamconfig(target="pulsestream", series=["cpu", "memory"]))
    await eventually(lambda: status(cluster).get("observedGeneration") == 1, what="generation 1")

    # The ConfigMap patch goes through, then patching the Deployment fails once: on the retry the
    # ConfigMap already holds the new settings, and the roll must still happen.
    failure = {"kind": "Status", "code": 503, "reason": "ServiceUnavailable", "message": "apiserver busy"}
    cluster[f"patch /apis/apps/v1/namespaces/{NAMESPACE}/deployments/pulsestream-generator"][:1] << 503 << failure
    await patch_spec(cluster, "demo", {"series": ["cpu"]})
    await eventually(
        lambda: status(cluster).get("observedGeneration") == 2 and ready(cluster).get("status") == "True",
        what="generation 2 ready",
    )
    new_hash = status(cluster)["settingsHash"]
    await eventually(lambda: rolled_to(cluster, "pulsestream-generator") == new_hash, what="the generator rolled")
    assert rolled_to(cluster, "pulsestream-streamer") == new_hash


@pytest.mark.fault
async def test_a_non_json_error_page_is_an_api_error_retried_with_its_status(
    cluster: Cluster, start_operator: StartOperator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A proxy in front of the API server answers with HTML, not a Kubernetes Status object.
    monkeypatch.setattr(handlers, "RETRY_DELAY", 0.2)
    (
        cluster[f"get /api/v1/namespaces/{NAMESPACE}/configmaps/pulsestream-settings"][:1]
        << 502
        << b"<html>Bad Gateway</html>"
    )
    await start_operator()
    await create(cluster, streamconfig(target="pulsestream"))

    condition = await eventually(lambda: ready(cluster).get("status") == "True" and ready(cluster), what="Ready")
    assert condition["reason"] == "Applied"
    retries = [r.getMessage() for r in caplog.records if "will retry" in r.getMessage()]
    assert len(retries) == 1 and "502" in retries[0] and "Bad Gateway" in retries[0], retries
