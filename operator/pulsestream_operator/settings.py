"""The operator's process settings: ``OPERATOR_*`` environment variables.

Built once in the entry point and handed to the handlers through kopf's
``memo``. The names here are a contract with the deployment manifests (the
Helm chart and ``k8s/``): the ConfigMap name pattern and the settings key
must match what the generator and streamer pods mount.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from pulsestream.envsettings import EnvSettings
from pulsestream.spec import StreamSpec

#: The spec fields (camelCase, as in the ``StreamConfig``) an operator may be told to roll pods for:
#: every live setting (``target`` is not one; a target change always rolls).
ROLLABLE_FIELDS = tuple(info.alias or name for name, info in StreamSpec.model_fields.items() if name != "target")


class OperatorSettings(EnvSettings):
    """Settings of ``pulsestream-operator``."""

    env_prefix = "OPERATOR_"

    namespaces: list[str] = Field(
        default_factory=list,
        description=(
            "Comma-separated namespaces whose StreamConfigs the operator reconciles; empty = all namespaces "
            "(needs a ClusterRole; with a list, Roles in those namespaces are enough)."
        ),
    )
    configmap_name: str = Field(
        default="{target}-settings",
        description=(
            "Name of the ConfigMap the operator writes, a pattern with {target} (spec.target, else the "
            "StreamConfig's name) and {name} (the StreamConfig's name); the pods mount this ConfigMap."
        ),
    )
    settings_key: str = Field(
        default="settings.yaml",
        pattern=r"^[-._a-zA-Z0-9]+$",
        description=(
            "Key of the settings file inside the ConfigMap, i.e. the file name the pods see "
            "(PULSESTREAM_SETTINGS_FILE=<mount>/<key>)."
        ),
    )
    target_label: str = Field(
        default="app.kubernetes.io/instance",
        description=(
            "Label whose value is the target name on the Deployments the operator rolls "
            "(Helm sets app.kubernetes.io/instance to the release name)."
        ),
    )
    roll_on: list[str] = Field(
        default_factory=list,
        description=(
            "Comma-separated spec fields (camelCase) whose change rolls the target's Deployments instead of "
            "relying on live reload; empty = every field applies live. A target change always rolls."
        ),
    )
    liveness_port: int = Field(
        default=8081,
        ge=0,
        le=65535,
        description="Port of kopf's liveness endpoint (GET /healthz), on all interfaces; 0 turns it off.",
    )
    peering_name: str = Field(
        default="",
        description=(
            "Name of the KopfPeering object replicas coordinate through; empty = standalone (run ONE replica). "
            "Peering needs the KopfPeering CRDs (operator/peering.yaml) and their RBAC rules."
        ),
    )
    server: str = Field(
        default="",
        description=(
            "Kubernetes API URL to use without credentials (tests, or `kubectl proxy` at http://127.0.0.1:8001); "
            "empty = the pod's service account, else the kubeconfig (KUBECONFIG or ~/.kube/config)."
        ),
    )

    @field_validator("configmap_name")
    @classmethod
    def _pattern(cls, value: str) -> str:
        sample = value.replace("{target}", "t").replace("{name}", "n")
        if "{" in sample or "}" in sample:
            raise ValueError("only {target} and {name} may appear in braces")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", sample):
            raise ValueError("must give a DNS-1123 name (lowercase letters, digits, '-', '.')")
        return value

    @field_validator("roll_on")
    @classmethod
    def _rollable(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(ROLLABLE_FIELDS))
        if unknown:
            raise ValueError(f"unknown spec fields {', '.join(unknown)}; choose from {', '.join(ROLLABLE_FIELDS)}")
        return value

    @property
    def namespace_list(self) -> list[str]:
        """The namespaces to watch; empty means all (cluster-wide)."""
        return list(self.namespaces)

    @property
    def rolling_fields(self) -> frozenset[str]:
        """Spec fields whose change rolls the target's Deployments."""
        return frozenset(self.roll_on)

    def configmap_for(self, name: str, target: str | None) -> str:
        """The ConfigMap name for a StreamConfig ``name`` driving ``target`` (``None``: its own name)."""
        return self.configmap_name.replace("{target}", target or name).replace("{name}", name)
