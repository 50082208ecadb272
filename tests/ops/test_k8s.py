"""The Kubernetes manifests (deploy/k8s, docs/KUBERNETES.md): what `kubectl kustomize` builds from them.

Each build (overlays/dev, overlays/prod, and broker on its own) is made once with `kubectl kustomize`, then:
Kubernetes' own kinds are validated with kubernetes-validate (strict: an unknown field fails) against the oldest
and the newest Kubernetes release named below; the operators' kinds (RabbitMQ Cluster and Messaging Topology
operators, KEDA) are validated against schemas written here from their API types, with the core types they
embed (resources, affinity, HPA behaviour) checked against Kubernetes' own definitions; and the deployment
rules are asserted: probes, limits, non-root, read-only root filesystem, shutdown grace, no literal secret,
a Deployment, a migration and a queue-driven autoscaler for every service, and network isolation.

Skipped, each with its reason: everything when `kubectl` is missing or bundles a kustomize older than v5 (it
builds the overlays; the machine image has kubectl 1.32 with kustomize 5.5), schema validation when
kubernetes-validate is missing (requirements-dev.txt), and the operators' full CRD schemas (not vendored here:
see test_operator_crds_full_schema).
"""

import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

try:
    import kubernetes_validate
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
except ImportError:  # pragma: no cover - said in the skip reason of the tests that need it
    kubernetes_validate = None

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K8S_DIR = os.path.join(ROOT, "deploy", "k8s")
BUILDS = {
    "dev": os.path.join(K8S_DIR, "overlays", "dev"),
    "prod": os.path.join(K8S_DIR, "overlays", "prod"),
    "broker": os.path.join(K8S_DIR, "broker"),
}
OVERLAYS = ["dev", "prod"]
DEV_SECRETS_SCRIPT = os.path.join(BUILDS["dev"], "make_secrets.py")
DOC = os.path.join(ROOT, "docs", "KUBERNETES.md")

# The oldest Kubernetes minor the manifests promise to work on, and kubernetes-validate's newest.
OLDEST_KUBERNETES = "1.31"

BROKER_NAME = "cartmesh-broker"
# The labels the RabbitMQ Cluster Operator gives every node pod (its internal/metadata/label.go).
BROKER_POD_LABELS = {"app.kubernetes.io/name": BROKER_NAME, "app.kubernetes.io/component": "rabbitmq"}
AMQP_PORT, DB_PORT, DNS_PORT, GATEWAY_PORT, MANAGEMENT_PORT = 5672, 5432, 53, 8000, 15672
# Each service's probe server (services/common/probes.py): METRICS_PORT in the ConfigMap, port `metrics`.
METRICS_PORT = 9100
# Who may scrape /metrics: Prometheus's pods in the namespace `monitoring`.
PROMETHEUS_NAMESPACE = "monitoring"
PROMETHEUS_POD_LABELS = {"app.kubernetes.io/name": "prometheus"}


def kustomize_problem():
    """Why this machine's kubectl cannot build the overlays, or None when it can."""
    if shutil.which("kubectl") is None:
        return (
            "kubectl is not installed: it builds the overlays (`kubectl kustomize`); install a current "
            "kubectl (the machine image ships one) to run these checks"
        )
    result = subprocess.run(
        ["kubectl", "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30
    )
    version = json.loads(result.stdout or "{}").get("kustomizeVersion", "") if result.returncode == 0 else ""
    major = re.match(r"v(\d+)\.", version)
    if not major or int(major.group(1)) < 5:
        # Debian's kubernetes-client (1.20) bundles a kustomize without `labels` or targeted patches.
        return f"kubectl's bundled kustomize is {version or 'unknown'}; the overlays need kustomize v5"
    return None


KUSTOMIZE_PROBLEM = kustomize_problem()
pytestmark = pytest.mark.skipif(KUSTOMIZE_PROBLEM is not None, reason=str(KUSTOMIZE_PROBLEM))

needs_validator = pytest.mark.skipif(
    kubernetes_validate is None,
    reason="kubernetes-validate is not installed (it is in requirements-dev.txt: run `make install`)",
)


# ---------------------------------------------------------------------------------------------------------------
# Building and looking things up


@functools.cache
def build(target):
    """The manifests `kubectl kustomize` makes of `target` (a key of BUILDS), as a tuple of dicts."""
    result = subprocess.run(["kubectl", "kustomize", BUILDS[target]], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {BUILDS[target]} failed:\n{result.stderr}"
    documents = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
    assert documents, f"{target} builds to nothing"
    return documents


def of_kind(documents, kind):
    return [doc for doc in documents if doc["kind"] == kind]


def named(documents, kind, name):
    found = [doc for doc in of_kind(documents, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def workloads(documents):
    return of_kind(documents, "Deployment") + of_kind(documents, "StatefulSet")


def app_deployments(documents):
    """Cartmesh's own Deployments: {name: deployment} (services and gateway)."""
    return {
        doc["metadata"]["name"]: doc
        for doc in of_kind(documents, "Deployment")
        if doc["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") in ("service", "gateway")
    }


def service_names_in_repo():
    """Every service package under services/ (a directory with __init__.py), shared code aside."""
    services_dir = os.path.join(ROOT, "services")
    return sorted(
        name
        for name in os.listdir(services_dir)
        if name != "common" and os.path.isfile(os.path.join(services_dir, name, "__init__.py"))
    )


def selector_matches(selector, labels):
    """Whether a Kubernetes label selector (matchLabels / matchExpressions) selects `labels`."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def pod_labels(workload):
    return workload["spec"]["template"]["metadata"]["labels"]


def config_map_values(documents, name="cartmesh-config"):
    return named(documents, "ConfigMap", name)["data"]


def all_containers(pod_spec):
    return list(pod_spec.get("initContainers") or []) + list(pod_spec["containers"])


def env_names(container, documents):
    """Every variable the container gets: its `env`, and the keys of the ConfigMaps in its `envFrom`."""
    names = {entry["name"] for entry in container.get("env") or []}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            names |= set(config_map_values(documents, source["configMapRef"]["name"]))
    return names


def secret_references(documents):
    """Every (Secret name, key) the build reads, with whether the reference is optional."""
    found = set()
    for workload in workloads(documents):
        for container in all_containers(workload["spec"]["template"]["spec"]):
            for entry in container.get("env") or []:
                ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    found.add((ref["name"], ref["key"], bool(ref.get("optional"))))
    for auth in of_kind(documents, "TriggerAuthentication"):
        for ref in auth["spec"].get("secretTargetRef") or []:
            found.add((ref["name"], ref["key"], False))
    for user in of_kind(documents, "User"):
        imported = user["spec"].get("importCredentialsSecret")
        if imported:
            found |= {(imported["name"], "username", False), (imported["name"], "password", False)}
    return found


def dev_secrets(namespace="cartmesh-dev"):
    """The Secrets deploy/k8s/overlays/dev/make_secrets.py makes ({name: stringData}), without any cluster."""
    result = subprocess.run(
        [sys.executable, DEV_SECRETS_SCRIPT, "--print", "--namespace", namespace],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return {item["metadata"]["name"]: item["stringData"] for item in json.loads(result.stdout)["items"]}


# ---------------------------------------------------------------------------------------------------------------
# Schemas of the operators' custom resources: the fields Cartmesh may use, from the operators' API types
# (rabbitmq/cluster-operator and rabbitmq/messaging-topology-operator api/v1beta1, KEDA's keda.sh/v1alpha1
# reference). Core Kubernetes types inside them are checked against Kubernetes' own definitions.

K8S_DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/"
STRING, INTEGER, BOOLEAN = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
ANY_OBJECT = {"type": "object"}


def core(name):
    return {"$ref": K8S_DEFS + name}


def obj(properties, required=()):
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def custom_resource(spec):
    return obj(
        {
            "apiVersion": STRING,
            "kind": STRING,
            "metadata": core("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "spec": spec,
        },
        ["apiVersion", "kind", "metadata", "spec"],
    )


CLUSTER_REFERENCE = {
    **obj({"name": STRING, "namespace": STRING, "connectionSecret": obj({"name": STRING}, ["name"])}),
    "anyOf": [{"required": ["name"]}, {"required": ["connectionSecret"]}],
}
LOCAL_REFERENCE = obj({"name": STRING}, ["name"])
RAW = ANY_OBJECT  # runtime.RawExtension: any object (policy definitions, queue arguments)
DELETION_POLICY = {"enum": ["delete", "retain"]}

CRD_SCHEMAS = {
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): custom_resource(
        obj(
            {
                "replicas": {"type": "integer", "minimum": 0},
                "image": STRING,
                "imagePullSecrets": {"type": "array", "items": core("io.k8s.api.core.v1.LocalObjectReference")},
                "service": obj(
                    {
                        "type": {"enum": ["ClusterIP", "LoadBalancer", "NodePort"]},
                        "annotations": {"type": "object", "additionalProperties": STRING},
                        "ipFamilyPolicy": STRING,
                    }
                ),
                "persistence": obj(
                    {"storageClassName": STRING, "storage": core("io.k8s.apimachinery.pkg.api.resource.Quantity")}
                ),
                "resources": core("io.k8s.api.core.v1.ResourceRequirements"),
                "affinity": core("io.k8s.api.core.v1.Affinity"),
                "tolerations": {"type": "array", "items": core("io.k8s.api.core.v1.Toleration")},
                "rabbitmq": obj(
                    {
                        "additionalPlugins": {
                            "type": "array",
                            "maxItems": 100,
                            "items": {"type": "string", "pattern": r"^\w+$"},
                        },
                        "additionalConfig": {"type": "string", "maxLength": 2000},
                        "advancedConfig": {"type": "string", "maxLength": 100000},
                        "envConfig": {"type": "string", "maxLength": 100000},
                        "erlangInetConfig": {"type": "string", "maxLength": 2000},
                    }
                ),
                "tls": ANY_OBJECT,
                "override": ANY_OBJECT,
                "secretBackend": ANY_OBJECT,
                "skipPostDeploySteps": BOOLEAN,
                "autoEnableAllFeatureFlags": BOOLEAN,
                "terminationGracePeriodSeconds": INTEGER,
                "delayStartSeconds": INTEGER,
            },
            ["replicas"],
        )
    ),
    ("rabbitmq.com/v1beta1", "Vhost"): custom_resource(
        obj(
            {
                "name": STRING,
                "tracing": BOOLEAN,
                "tags": {"type": "array", "items": STRING},
                "defaultQueueType": {"enum": ["quorum", "classic", "stream"]},
                "deletionPolicy": DELETION_POLICY,
                "rabbitmqClusterReference": CLUSTER_REFERENCE,
            },
            ["name", "rabbitmqClusterReference"],
        )
    ),
    ("rabbitmq.com/v1beta1", "User"): custom_resource(
        obj(
            {
                "tags": {
                    "type": "array",
                    "items": {"enum": ["management", "policymaker", "monitoring", "administrator"]},
                },
                "importCredentialsSecret": LOCAL_REFERENCE,
                "rabbitmqClusterReference": CLUSTER_REFERENCE,
            },
            ["rabbitmqClusterReference"],
        )
    ),
    ("rabbitmq.com/v1beta1", "Permission"): custom_resource(
        {
            **obj(
                {
                    "user": STRING,
                    "userReference": LOCAL_REFERENCE,
                    "vhost": STRING,
                    "permissions": obj({"configure": STRING, "write": STRING, "read": STRING}),
                    "rabbitmqClusterReference": CLUSTER_REFERENCE,
                },
                ["vhost", "permissions", "rabbitmqClusterReference"],
            ),
            "anyOf": [{"required": ["user"]}, {"required": ["userReference"]}],
        }
    ),
    ("rabbitmq.com/v1beta1", "Policy"): custom_resource(
        obj(
            {
                "name": STRING,
                "vhost": STRING,
                "pattern": STRING,
                "applyTo": {"enum": ["queues", "classic_queues", "quorum_queues", "streams", "exchanges", "all"]},
                "priority": INTEGER,
                "definition": RAW,
                "rabbitmqClusterReference": CLUSTER_REFERENCE,
            },
            ["name", "pattern", "definition", "rabbitmqClusterReference"],
        )
    ),
    ("rabbitmq.com/v1beta1", "Exchange"): custom_resource(
        obj(
            {
                "name": STRING,
                "vhost": STRING,
                "type": {"enum": ["direct", "fanout", "headers", "topic"]},
                "durable": BOOLEAN,
                "autoDelete": BOOLEAN,
                "arguments": RAW,
                "rabbitmqClusterReference": CLUSTER_REFERENCE,
            },
            ["name", "rabbitmqClusterReference"],
        )
    ),
    ("rabbitmq.com/v1beta1", "Queue"): custom_resource(
        obj(
            {
                "name": STRING,
                "vhost": STRING,
                "type": {"enum": ["quorum", "classic", "stream"]},
                "durable": BOOLEAN,
                "autoDelete": BOOLEAN,
                "deleteIfEmpty": BOOLEAN,
                "deleteIfUnused": BOOLEAN,
                "arguments": RAW,
                "rabbitmqClusterReference": CLUSTER_REFERENCE,
            },
            ["name", "rabbitmqClusterReference"],
        )
    ),
    ("rabbitmq.com/v1beta1", "Binding"): custom_resource(
        obj(
            {
                "vhost": STRING,
                "source": STRING,
                "destination": STRING,
                "destinationType": {"enum": ["exchange", "queue"]},
                "routingKey": STRING,
                "arguments": RAW,
                "rabbitmqClusterReference": CLUSTER_REFERENCE,
            },
            ["rabbitmqClusterReference"],
        )
    ),
    ("keda.sh/v1alpha1", "ScaledObject"): custom_resource(
        obj(
            {
                "scaleTargetRef": obj(
                    {"name": STRING, "apiVersion": STRING, "kind": STRING, "envSourceContainerName": STRING}, ["name"]
                ),
                "pollingInterval": INTEGER,
                "cooldownPeriod": INTEGER,
                "initialCooldownPeriod": INTEGER,
                "idleReplicaCount": INTEGER,
                "minReplicaCount": INTEGER,
                "maxReplicaCount": INTEGER,
                "fallback": ANY_OBJECT,
                "advanced": obj(
                    {
                        "restoreToOriginalReplicaCount": BOOLEAN,
                        "horizontalPodAutoscalerConfig": obj(
                            {
                                "name": STRING,
                                "behavior": core("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerBehavior"),
                            }
                        ),
                        "scalingModifiers": ANY_OBJECT,
                    }
                ),
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": obj(
                        {
                            "type": STRING,
                            "name": STRING,
                            "useCachedMetrics": BOOLEAN,
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            # map[string]string in KEDA's types: a number here is refused by the API server.
                            "metadata": {"type": "object", "additionalProperties": STRING},
                            "authenticationRef": obj(
                                {
                                    "name": STRING,
                                    "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
                                },
                                ["name"],
                            ),
                        },
                        ["type", "metadata"],
                    ),
                },
            },
            ["scaleTargetRef", "triggers"],
        )
    ),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): custom_resource(
        obj(
            {
                "secretTargetRef": {
                    "type": "array",
                    "items": obj({"parameter": STRING, "name": STRING, "key": STRING}, ["parameter", "name", "key"]),
                },
                "configMapTargetRef": {
                    "type": "array",
                    "items": obj({"parameter": STRING, "name": STRING, "key": STRING}, ["parameter", "name", "key"]),
                },
                "env": {"type": "array"},
                "podIdentity": ANY_OBJECT,
                "hashiCorpVault": ANY_OBJECT,
                "azureKeyVault": ANY_OBJECT,
                "awsSecretManager": ANY_OBJECT,
                "gcpSecretManager": ANY_OBJECT,
                "boundServiceAccountToken": {"type": "array"},
            }
        )
    ),
}

# The rabbitmq scaler's metadata keys (KEDA docs, scalers/rabbitmq-queue).
RABBITMQ_SCALER_KEYS = {
    "host",
    "protocol",
    "mode",
    "value",
    "activationValue",
    "queueName",
    "vhostName",
    "hostFromEnv",
    "usernameFromEnv",
    "passwordFromEnv",
    "unsafeSsl",
    "useRegex",
    "pageSize",
    "operation",
    "timeout",
    "excludeUnacknowledged",
    "queueLength",
}
# Policy keys quorum queues honour (RabbitMQ docs, quorum-queues: "Policy Support", leader placement, DLX).
QUORUM_POLICY_KEYS = {
    "max-length",
    "max-length-bytes",
    "overflow",
    "expires",
    "dead-letter-exchange",
    "dead-letter-routing-key",
    "dead-letter-strategy",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "delivery-limit",
    "queue-leader-locator",
    "message-ttl",
    "target-group-size",
}


@functools.cache
def k8s_registry(version):
    """A jsonschema registry holding Kubernetes' shared definitions for `version`."""
    from kubernetes_validate.utils import schema_contents

    schema_dir = f"v{version}-local-strict"
    definitions = schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", version)
    return Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))


def validate_custom_resource(document, version):
    """Raises jsonschema.ValidationError when `document` breaks its kind's schema above."""
    schema = CRD_SCHEMAS[(document["apiVersion"], document["kind"])]
    Draft202012Validator(schema, registry=k8s_registry(version)).validate(document)


def full_version(minor):
    return next(v for v in kubernetes_validate.utils.all_versions() if v.startswith(minor + "."))


# ---------------------------------------------------------------------------------------------------------------
# Builds and schemas


@pytest.mark.parametrize("target", sorted(BUILDS))
def test_every_build_makes_distinct_named_resources(target):
    documents = build(target)
    ids = [(doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) for doc in documents]
    assert len(ids) == len(set(ids)), f"{target}: duplicate resources"
    if target != "broker":
        namespaces = {doc["metadata"].get("namespace") for doc in documents if doc["kind"] != "Namespace"}
        assert len(namespaces) == 1 and None not in namespaces, f"{target}: one namespace for all, {namespaces}"
        assert [doc["metadata"]["name"] for doc in of_kind(documents, "Namespace")] == list(namespaces)


@needs_validator
@pytest.mark.parametrize("target", sorted(BUILDS))
def test_kubernetes_kinds_validate_strictly(target):
    newest = kubernetes_validate.latest_version()
    checked = 0
    for document in build(target):
        if (document["apiVersion"], document["kind"]) in CRD_SCHEMAS:
            continue
        for version in (full_version(OLDEST_KUBERNETES), newest):
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                pytest.fail(
                    f"{document['kind']} {document['apiVersion']} is neither a Kubernetes kind of "
                    f"{version} nor one of the custom resources checked here"
                )
            except kubernetes_validate.ValidationError as error:
                pytest.fail(
                    f"{target}: {document['kind']} {document['metadata']['name']} is invalid for "
                    f"Kubernetes {version} at {list(error.path)}: {error.message}"
                )
        checked += 1
    assert checked >= (2 if target == "broker" else 20)


@needs_validator
@pytest.mark.parametrize("target", sorted(BUILDS))
def test_custom_resources_validate(target):
    import jsonschema

    custom = [doc for doc in build(target) if (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS]
    assert custom, f"{target} has no custom resources at all"
    for document in custom:
        try:
            validate_custom_resource(document, kubernetes_validate.latest_version())
        except jsonschema.ValidationError as error:
            pytest.fail(
                f"{target}: {document['kind']} {document['metadata']['name']} at "
                f"{list(error.absolute_path)}: {error.message}"
            )
    for trigger in (t for so in of_kind(build(target), "ScaledObject") for t in so["spec"]["triggers"]):
        assert trigger["type"] == "rabbitmq"
        unknown = set(trigger["metadata"]) - RABBITMQ_SCALER_KEYS
        assert not unknown, f"not rabbitmq scaler parameters: {unknown}"
    for policy in of_kind(build(target), "Policy"):
        unknown = set(policy["spec"]["definition"]) - QUORUM_POLICY_KEYS
        assert not unknown, f"policy {policy['metadata']['name']}: keys quorum queues ignore: {unknown}"


@needs_validator
def test_the_validators_reject_what_the_api_server_would():
    """Guards the two checks above against passing vacuously: misspelt fields (in a Kubernetes kind, and in a core
    type inside a custom resource) and a numeric KEDA parameter."""
    import copy

    import jsonschema

    documents = build("prod")
    deployment = copy.deepcopy(named(documents, "Deployment", "carts"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)
    scaled = copy.deepcopy(named(documents, "ScaledObject", "carts"))
    scaled["spec"]["triggers"][0]["metadata"]["value"] = 8
    with pytest.raises(jsonschema.ValidationError):
        validate_custom_resource(scaled, kubernetes_validate.latest_version())
    cluster = copy.deepcopy(named(build("broker"), "RabbitmqCluster", BROKER_NAME))
    cluster["spec"]["affinity"]["podAntiAffinity"]["requiredDuringScheduling"] = []
    with pytest.raises(jsonschema.ValidationError):
        validate_custom_resource(cluster, kubernetes_validate.latest_version())


def test_operator_crds_full_schema():
    pytest.skip(
        "not checked: the operators' complete CRD OpenAPI schemas (third-party files, not vendored in "
        "this repo) and what only a running operator decides (a RabbitMQ image tag that exists, policy "
        "values RabbitMQ accepts, KEDA reaching the broker). Checked instead: every field Cartmesh "
        "uses, with required fields, types and enums from the operators' API types, core types "
        "against Kubernetes' definitions (test_custom_resources_validate)"
    )


# ---------------------------------------------------------------------------------------------------------------
# Workload rules


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_has_probes_limits_and_runs_locked_down(overlay):
    documents = build(overlay)
    assert workloads(documents)
    for workload in workloads(documents):
        name, pod = workload["metadata"]["name"], workload["spec"]["template"]["spec"]
        security = pod.get("securityContext") or {}
        assert pod.get("automountServiceAccountToken") is False, f"{name}: mounts an API token it never uses"
        # Service links would put e.g. GATEWAY_PORT=tcp://10.0.0.1:80 (from the Service `gateway`) into the
        # environment, where config/*.yml reads settings.
        assert pod.get("enableServiceLinks") is False, f"{name}: Service variables leak into its settings"
        for container in all_containers(pod):
            where = f"{overlay}: {name}/{container['name']}"
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound) or {}), f"{where}: no cpu/memory {bound}"
            context = container.get("securityContext") or {}
            run_as_non_root = context.get("runAsNonRoot", security.get("runAsNonRoot"))
            run_as_user = context.get("runAsUser", security.get("runAsUser"))
            assert run_as_non_root is True and run_as_user and run_as_user > 0, f"{where}: may run as root"
            assert context.get("readOnlyRootFilesystem") is True, f"{where}: writable root filesystem"
            assert context.get("allowPrivilegeEscalation") is False, f"{where}: may escalate privileges"
            assert "ALL" in ((context.get("capabilities") or {}).get("drop") or []), f"{where}: keeps caps"
        for container in pod["containers"]:
            for probe in ("livenessProbe", "readinessProbe"):
                assert container.get(probe), f"{overlay}: {name}/{container['name']} has no {probe}"


def probe_port(container, probe):
    """The container port number an httpGet probe targets (by name or number)."""
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container.get("ports") or [] if p["name"] == port]
    return number


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_are_probed_and_scraped_on_their_metrics_port(overlay):
    """Per pod, over HTTP: live = /health/live, started and ready = /health/ready (broker and database), so a pod
    whose database is unreachable leaves the Service without being restarted."""
    documents = build(overlay)
    settings = config_map_values(documents)
    assert settings["METRICS_PORT"] == str(METRICS_PORT) and settings["LOG_FORMAT"] == "json"
    for name, deployment in app_deployments(documents).items():
        template = deployment["spec"]["template"]
        [container] = template["spec"]["containers"]
        assert {"METRICS_PORT", "LOG_FORMAT"} <= env_names(container, documents), name
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_names(container, documents), f"{name}: tracing is opt-in"
        annotations = template["metadata"].get("annotations") or {}
        scrape_port = GATEWAY_PORT if name == "gateway" else METRICS_PORT
        assert annotations.get("prometheus.io/scrape") == "true", f"{name} is not scraped"
        assert annotations.get("prometheus.io/port") == str(scrape_port)
        assert annotations.get("prometheus.io/path") == "/metrics"
        ports = {port["containerPort"]: port for port in container.get("ports") or []}
        assert scrape_port in ports, f"{name} does not declare port {scrape_port}"
        if name == "gateway":
            continue
        assert ports[METRICS_PORT]["name"] == "metrics" and ports[METRICS_PORT]["protocol"] == "TCP"
        expected = {"startupProbe": "/health/ready", "readinessProbe": "/health/ready", "livenessProbe": "/health/live"}
        for kind, path in expected.items():
            probe = container.get(kind)
            assert probe and "httpGet" in probe and "exec" not in probe, f"{overlay}: {name} {kind} is not httpGet"
            assert probe["httpGet"]["path"] == path, f"{name} {kind}: {probe['httpGet']['path']}"
            assert probe_port(container, probe) == METRICS_PORT, f"{name} {kind} is not on the metrics port"
        # Liveness must be more patient than readiness: a pod out of the Service is recovered, a restarted one
        # loses its running workers.
        live, ready = container["livenessProbe"], container["readinessProbe"]
        assert live["periodSeconds"] * live["failureThreshold"] > ready["periodSeconds"] * ready["failureThreshold"], (
            name
        )


def test_the_gateway_reads_the_management_api_from_a_secret():
    for overlay in OVERLAYS:
        documents = build(overlay)
        [container] = named(documents, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"]
        env = {entry["name"]: entry for entry in container.get("env") or []}
        assert "RABBITMQ_API_URI" in env, f"{overlay}: the gateway would derive the management API from AMQP_URI"
        assert env["RABBITMQ_API_URI"]["valueFrom"]["secretKeyRef"]["name"] == "cartmesh-amqp"
    made = dev_secrets()["cartmesh-amqp"]
    assert made["management-api-uri"] == (
        f"http://{made['username']}:{made['password']}@{BROKER_NAME}.cartmesh-dev.svc:{MANAGEMENT_PORT}/api"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_the_graceful_shutdown(overlay):
    documents = build(overlay)
    grace = int(config_map_values(documents)["SHUTDOWN_GRACE_SECONDS"])
    for name, deployment in app_deployments(documents).items():
        pod = deployment["spec"]["template"]["spec"]
        pause = 0
        for container in pod["containers"]:
            command = ((container.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command")
            if command:
                assert command[0] == "sleep", f"{name}: preStop must be a bounded pause, got {command}"
                pause = max(pause, int(command[1]))
            assert "SHUTDOWN_GRACE_SECONDS" in env_names(container, documents), f"{name}: no shutdown grace"
        assert pod["terminationGracePeriodSeconds"] > pause + grace, (
            f"{name}: {pod['terminationGracePeriodSeconds']} s of grace do not cover a {pause} s preStop "
            f"pause plus SHUTDOWN_GRACE_SECONDS={grace}"
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_a_deployment_that_migrates_then_runs_it(overlay):
    deployments = app_deployments(build(overlay))
    in_repo = service_names_in_repo()
    assert in_repo, "no services found under services/"
    missing = set(in_repo) - set(deployments)
    assert not missing, f"services without a Deployment: {sorted(missing)}"
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        [main] = pod["containers"]
        if name == "gateway":
            assert main["command"] == ["nameko", "run", "--config", "config/gateway.yml", "gateway_http.service"]
            assert not pod.get("initContainers"), "the gateway has no database to migrate"
            continue
        assert main["command"] == ["nameko", "run", "--config", f"config/{name}.yml", f"services.{name}.service"]
        [migrate] = pod["initContainers"]
        assert migrate["command"] == ["python", "-m", "services.common.migrate", name]
        assert migrate["image"] == main["image"]
        assert f"{name.upper()}_DATABASE_URL" in env_names(migrate, build(overlay))


def test_the_containers_run_the_commands_make_run_uses():
    sys.path.insert(0, ROOT)
    try:
        from scripts import run
    finally:
        sys.path.remove(ROOT)
    deployments = app_deployments(build("prod"))
    assert deployments["gateway"]["spec"]["template"]["spec"]["containers"][0]["command"] == run.gateway_command()
    for name in run.SERVICES:
        pod = deployments[name]["spec"]["template"]["spec"]
        assert pod["containers"][0]["command"] == run.service_command(name)
        assert pod["initContainers"][0]["command"] == run.migrate_command(name)


CONFIG_VARIABLE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::([^}]*))?\}")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_setting_whose_default_is_wrong_in_a_cluster_is_set(overlay):
    """A config/*.yml default that is empty, local (localhost, SQLite) must be overridden by the Deployment."""
    documents = build(overlay)
    checked = 0
    for name, deployment in app_deployments(documents).items():
        config_path = os.path.join(ROOT, "config", f"{name}.yml")
        if not os.path.exists(config_path):
            continue  # a service still being built: its config arrives with it
        with open(config_path) as config_file:
            variables = CONFIG_VARIABLE.findall(config_file.read())
        given = env_names(deployment["spec"]["template"]["spec"]["containers"][0], documents)
        for variable, default in variables:
            if not default or "localhost" in default or default.startswith("sqlite"):
                assert variable in given, f"{overlay}: {name} leaves {variable} at its default {default!r}"
                checked += 1
    assert checked >= 8


# ---------------------------------------------------------------------------------------------------------------
# Secrets


@pytest.mark.parametrize("target", sorted(BUILDS))
def test_no_secret_value_is_in_the_manifests(target):
    documents = build(target)
    assert not of_kind(documents, "Secret"), f"{target} holds Secret objects: secrets are referenced only"
    credentials_in_url = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^@\s/]+@")
    text = yaml.safe_dump_all(documents)
    assert not credentials_in_url.search(text), f"{target}: a URL with a password"
    secret_like = re.compile(r"(PASSWORD|SECRET|TOKEN|KEY|_URL|_URI)$")
    for workload in workloads(documents):
        for container in all_containers(workload["spec"]["template"]["spec"]):
            for entry in container.get("env") or []:
                if secret_like.search(entry["name"]):
                    assert "value" not in entry, (
                        f"{target}: {workload['metadata']['name']} sets {entry['name']} literally"
                    )
                    assert "secretKeyRef" in entry["valueFrom"], f"{entry['name']} must come from a Secret"
    for config_map in of_kind(documents, "ConfigMap"):
        for key in config_map.get("data") or {}:
            assert not secret_like.search(key), f"{target}: ConfigMap {config_map['metadata']['name']} has {key}"


def test_the_dev_secrets_script_makes_every_secret_the_dev_overlay_reads():
    made = dev_secrets()
    for name, key, optional in secret_references(build("dev")):
        assert key in made.get(name, {}), f"make_secrets.py makes no {name}/{key} (optional={optional})"
    # The values point at what the dev overlay runs, under the names it runs them.
    dev = build("dev")
    vhost = named(dev, "Vhost", "cartmesh")["spec"]["name"]
    amqp = made["cartmesh-amqp"]
    assert amqp["uri"] == (f"amqp://{amqp['username']}:{amqp['password']}@{BROKER_NAME}.cartmesh-dev.svc:5672/{vhost}")
    assert amqp["management-uri"] == f"http://{BROKER_NAME}.cartmesh-dev.svc:15672/"
    named(dev, "Service", "postgres")
    for service in service_names_in_repo():
        password = made["cartmesh-postgres"][f"{service}-password"]
        assert made[f"cartmesh-{service}-db"]["url"] == (
            f"postgresql://{service}:{password}@postgres.cartmesh-dev.svc:5432/{service}"
        )
    # Fresh values every time, never the same value twice.
    again = dev_secrets()
    assert again["cartmesh-jwt"]["secret"] != made["cartmesh-jwt"]["secret"]
    values = [value for data in made.values() for key, value in data.items() if "password" in key]
    assert len(values) == len(set(values))


def test_the_dev_secrets_script_knows_every_service():
    spec = importlib.util.spec_from_file_location("make_secrets", DEV_SECRETS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    deployed = sorted(name for name in app_deployments(build("dev")) if name != "gateway")
    assert sorted(module.SERVICES) == deployed
    assert set(service_names_in_repo()) <= set(module.SERVICES)


def test_every_secret_prod_reads_is_documented():
    with open(DOC) as doc_file:
        rows = [line for line in doc_file if line.startswith("|")]
    for name, key, _ in secret_references(build("prod")):
        assert any(f"`{name}`" in row and f"`{key}`" in row for row in rows), (
            f"docs/KUBERNETES.md has no table row naming Secret `{name}` with key `{key}`"
        )


def test_dev_postgres_initialises_like_compose():
    with (
        open(os.path.join(BUILDS["dev"], "postgres-init.sh")) as copy,
        open(os.path.join(ROOT, "docker", "postgres-init.sh")) as original,
    ):
        assert copy.read() == original.read(), "deploy/k8s/overlays/dev/postgres-init.sh drifted from docker/"
    postgres = named(build("dev"), "StatefulSet", "postgres")
    env = {entry["name"]: entry for entry in postgres["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert sorted(env["CARTMESH_DATABASES"]["value"].split()) == sorted(
        name for name in app_deployments(build("dev")) if name != "gateway"
    )


# ---------------------------------------------------------------------------------------------------------------
# Scaling


def scaled_objects_by_target(documents):
    found = {}
    for scaled in of_kind(documents, "ScaledObject"):
        found.setdefault(scaled["spec"]["scaleTargetRef"]["name"], []).append(scaled)
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_scales_on_its_own_queues(overlay):
    from nameko.rpc import RPC_QUEUE_TEMPLATE, RPC_REPLY_QUEUE_TEMPLATE

    documents = build(overlay)
    by_target = scaled_objects_by_target(documents)
    auth_names = {doc["metadata"]["name"] for doc in of_kind(documents, "TriggerAuthentication")}
    vhost = named(build("broker"), "Vhost", "cartmesh")["spec"]["name"]
    services = [name for name in app_deployments(documents) if name != "gateway"]
    for name in services:
        [scaled] = by_target.get(name, [None])
        assert scaled is not None, f"{name} has no ScaledObject"
        spec = scaled["spec"]
        assert spec["minReplicaCount"] >= 1, f"{name}: a service with no consumer times every call out"
        assert spec["maxReplicaCount"] >= spec["minReplicaCount"]
        [trigger] = spec["triggers"]
        meta = trigger["metadata"]
        assert trigger["authenticationRef"]["name"] in auth_names
        assert meta["mode"] == "QueueLength" and float(meta["value"]) > 0
        # http: counts messages being worked on (unacknowledged) too, not only the ones waiting.
        assert meta["protocol"] == "http" and meta.get("excludeUnacknowledged", "false") == "false"
        assert meta["vhostName"] == vhost
        if meta.get("useRegex") == "true":
            assert meta["operation"] == "sum"
            pattern = re.compile(meta["queueName"])

            def matches(queue, pattern=pattern):
                return pattern.fullmatch(queue) is not None
        else:

            def matches(queue, name=meta["queueName"]):
                return queue == name

        assert matches(RPC_QUEUE_TEMPLATE.format(name)), f"{name}: its RPC queue is not counted"
        event_queue = f"evt-catalog-product_changed--{name}.on_product_changed"
        assert matches(event_queue), f"{name}: its event queues are not counted"
        # services/common/events.py: messages in .retry queues wait for a back-off, parked ones for a person.
        assert not matches(f"{event_queue}.retry") and not matches(f"parked-{name}")
        for other in services:
            if other != name:
                assert not matches(RPC_QUEUE_TEMPLATE.format(other)), f"{name} counts {other}'s queue"
                assert not matches(f"evt-catalog-product_changed--{other}.handle")
        assert not matches(RPC_REPLY_QUEUE_TEMPLATE.format(name, "0b5e2f3c")), f"{name} counts replies"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscalers_own_the_replica_counts(overlay):
    documents = build(overlay)
    by_target = scaled_objects_by_target(documents)
    hpas = {doc["spec"]["scaleTargetRef"]["name"]: doc for doc in of_kind(documents, "HorizontalPodAutoscaler")}
    for name, deployment in app_deployments(documents).items():
        # A fixed spec.replicas would be re-applied over the autoscaler's count on every `kubectl apply`.
        assert "replicas" not in deployment["spec"], f"{name}: replicas belong to its autoscaler"
        owners = len(by_target.get(name, [])) + (name in hpas)
        assert owners == 1, f"{name} has {owners} autoscalers"
    gateway = hpas["gateway"]["spec"]
    assert [metric["resource"]["name"] for metric in gateway["metrics"]] == ["cpu"]
    minimums = [gateway["minReplicas"]] + [
        scaled["spec"]["minReplicaCount"] for scaled in of_kind(documents, "ScaledObject")
    ]
    if overlay == "dev":
        assert set(minimums) == {1}, "dev runs one replica of each"
    else:
        assert min(minimums) >= 3, "prod keeps at least three of each, one per node"


def test_prod_runs_a_pinned_image():
    images = {
        container["image"]
        for deployment in app_deployments(build("prod")).values()
        for container in all_containers(deployment["spec"]["template"]["spec"])
    }
    assert len(images) == 1, images
    [image] = images
    assert "@sha256:" in image or re.search(r":[\w][\w.-]*$", image), f"{image} has no tag"
    assert not image.endswith((":latest", ":dev")), f"{image}: prod needs a fixed version"


# ---------------------------------------------------------------------------------------------------------------
# Availability and the network


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_has_a_disruption_budget(overlay):
    documents = build(overlay)
    budgets = of_kind(documents, "PodDisruptionBudget")
    for workload in workloads(documents):
        covering = [pdb for pdb in budgets if selector_matches(pdb["spec"]["selector"], pod_labels(workload))]
        assert len(covering) == 1, f"{workload['metadata']['name']}: {len(covering)} PodDisruptionBudgets"
        assert covering[0]["spec"].get("maxUnavailable") == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_is_exposed(overlay):
    documents = build(overlay)
    gateway = named(documents, "Deployment", "gateway")
    [container] = gateway["spec"]["template"]["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    services = [
        svc
        for svc in of_kind(documents, "Service")
        if any(
            selector_matches({"matchLabels": svc["spec"]["selector"]}, pod_labels(deployment))
            for deployment in app_deployments(documents).values()
        )
    ]
    assert [svc["metadata"]["name"] for svc in services] == ["gateway"]
    [service] = services
    assert service["spec"]["type"] == "ClusterIP"
    assert ports[service["spec"]["ports"][0]["targetPort"]] == GATEWAY_PORT
    [ingress] = of_kind(documents, "Ingress")
    backends = [path["backend"]["service"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    assert backends and all(
        b["name"] == "gateway" and b["port"]["name"] in {p["name"] for p in service["spec"]["ports"]} for b in backends
    )


def policies_for(documents, labels):
    return [
        policy
        for policy in of_kind(documents, "NetworkPolicy")
        if selector_matches(policy["spec"]["podSelector"], labels)
    ]


def allowed_egress(documents, labels):
    """[(peer, port)] the NetworkPolicies selecting pods with `labels` allow out (DNS aside)."""
    found = []
    for policy in policies_for(documents, labels):
        for rule in policy["spec"].get("egress") or []:
            ports = [port["port"] for port in rule.get("ports") or []]
            assert ports, f"{policy['metadata']['name']}: an egress rule open on every port"
            for peer in rule.get("to") or [None]:
                assert peer is not None, f"{policy['metadata']['name']}: an egress rule open to everyone"
                found += [(peer, port) for port in ports if port != DNS_PORT]
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_isolate_every_pod(overlay):
    documents = build(overlay)
    postgres_labels = pod_labels(named(documents, "StatefulSet", "postgres")) if overlay == "dev" else None
    deployments = app_deployments(documents)
    for name, deployment in deployments.items():
        labels = pod_labels(deployment)
        policies = policies_for(documents, labels)
        assert any(
            set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress")
            and not p["spec"].get("egress")
            for p in policies
        ), f"{name}: no default deny"
        ingress = [rule for p in policies for rule in p["spec"].get("ingress") or []]
        open_port = GATEWAY_PORT if name == "gateway" else METRICS_PORT
        assert all([port["port"] for port in rule.get("ports") or []] == [open_port] for rule in ingress), (
            f"{name} accepts connections on other ports than {open_port}"
        )
        peers = [peer for rule in ingress for peer in rule.get("from") or [None]]
        assert None not in peers, f"{name}: an ingress rule open to everyone"
        prometheus = [peer for peer in peers if "podSelector" in peer]
        assert prometheus, f"{name} cannot be scraped"
        for peer in prometheus:
            assert peer["podSelector"] == {"matchLabels": PROMETHEUS_POD_LABELS}
            assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": PROMETHEUS_NAMESPACE}}
        others = [peer for peer in peers if "podSelector" not in peer]
        if name == "gateway":
            assert others == [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
            ], others
        else:
            assert not others, f"{name} accepts connections from other than Prometheus"
        egress = allowed_egress(documents, labels)
        allowed_ports = {AMQP_PORT, MANAGEMENT_PORT} if name == "gateway" else {AMQP_PORT, DB_PORT}
        assert {port for _, port in egress} <= allowed_ports, f"{name}: egress to {egress}"
        if name == "gateway":
            management_peers = [peer for peer, port in egress if port == MANAGEMENT_PORT]
            assert management_peers and all(
                selector_matches(peer["podSelector"], BROKER_POD_LABELS) for peer in management_peers
            ), "GET /services needs 15672"
        broker_peers = [peer for peer, port in egress if port == AMQP_PORT]
        assert broker_peers and all(
            selector_matches(peer["podSelector"], BROKER_POD_LABELS) for peer in broker_peers
        ), f"{name}: AMQP only to the broker's pods"
        database_peers = [peer for peer, port in egress if port == DB_PORT]
        if name == "gateway":
            assert not database_peers, "the gateway reaches no database"
            continue
        by_label = [peer for peer in database_peers if "podSelector" in peer]
        assert by_label, f"{name} cannot reach its database"
        for peer in by_label:
            assert peer["podSelector"] == {"matchLabels": {f"db.cartmesh.io/{name}": "true"}}
            for other in deployments:
                if other not in (name, "gateway"):
                    assert not selector_matches(peer["podSelector"], {f"db.cartmesh.io/{other}": "true"})
        if postgres_labels:
            assert any(selector_matches(peer["podSelector"], postgres_labels) for peer in by_label)
        by_address = [peer for peer in database_peers if "ipBlock" in peer]
        assert (overlay == "prod") == bool(by_address), "managed databases (prod) are reached by address"


def test_the_broker_admits_the_app_and_its_operators_only():
    [policy] = of_kind(build("broker"), "NetworkPolicy")
    assert selector_matches(policy["spec"]["podSelector"], BROKER_POD_LABELS)
    service_labels = pod_labels(named(build("prod"), "Deployment", "carts"))
    amqp_rules = [
        rule for rule in policy["spec"]["ingress"] if [port["port"] for port in rule.get("ports") or []] == [AMQP_PORT]
    ]
    assert any(selector_matches(peer["podSelector"], service_labels) for rule in amqp_rules for peer in rule["from"])
    for rule in policy["spec"]["ingress"]:
        if not rule.get("ports"):  # every port: only the broker's own nodes
            assert all(
                selector_matches(peer["podSelector"], BROKER_POD_LABELS) and "namespaceSelector" not in peer
                for peer in rule["from"]
            )


# ---------------------------------------------------------------------------------------------------------------
# The broker


def test_the_broker_is_a_three_node_cluster_with_quorum_queues_by_default():
    documents = build("broker")
    cluster = named(documents, "RabbitmqCluster", BROKER_NAME)["spec"]
    assert cluster["replicas"] == 3
    anti = cluster["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert [term["topologyKey"] for term in anti] == ["kubernetes.io/hostname"]
    [vhost] = of_kind(documents, "Vhost")
    assert vhost["spec"]["defaultQueueType"] == "quorum"
    for kind in ("User", "Permission", "Policy", "Exchange", "Queue", "Binding"):
        for document in of_kind(documents, kind):
            assert document["spec"]["rabbitmqClusterReference"]["name"] == BROKER_NAME
            if "vhost" in document["spec"]:
                assert document["spec"]["vhost"] == vhost["spec"]["name"]
    budget = named(documents, "PodDisruptionBudget", BROKER_NAME)["spec"]
    assert budget["maxUnavailable"] == 1 and selector_matches(budget["selector"], BROKER_POD_LABELS)
    # The dev overlay shrinks it to one node; prod applies this build as it is.
    assert named(build("dev"), "RabbitmqCluster", BROKER_NAME)["spec"]["replicas"] == 1


def test_the_policies_cover_nameko_queues_by_their_names():
    from nameko.rpc import RPC_QUEUE_TEMPLATE, RPC_REPLY_QUEUE_TEMPLATE

    policies = {doc["metadata"]["name"]: doc["spec"] for doc in of_kind(build("broker"), "Policy")}
    rpc, events = policies["cartmesh-rpc"], policies["cartmesh-events"]

    def matching(queue):
        return [name for name, spec in policies.items() if re.search(spec["pattern"], queue)]

    for service in service_names_in_repo():
        event_queue = f"evt-catalog-product_changed--{service}.on_product_changed"
        assert matching(RPC_QUEUE_TEMPLATE.format(service)) == ["cartmesh-rpc"]
        assert matching(event_queue) == ["cartmesh-events"]
        assert matching(RPC_REPLY_QUEUE_TEMPLATE.format(service, "0b5e2f3c")) == []
        # The retry queue's own dead-letter arguments send messages back: no policy of ours on it.
        assert matching(f"{event_queue}.retry") == []
        # Parked events are never dropped by the broker (RabbitMQ 4 drops after 20 returns by default).
        assert matching(f"parked-{service}") == ["cartmesh-parked"]
    assert policies["cartmesh-parked"]["definition"]["delivery-limit"] == -1
    assert matching(policies["cartmesh-events"]["definition"]["dead-letter-exchange"]) == ["cartmesh-parked"]
    assert rpc["applyTo"] == events["applyTo"] == "quorum_queues"
    dead_letter = events["definition"]["dead-letter-exchange"]
    documents = build("broker")
    exchange = [doc for doc in of_kind(documents, "Exchange") if doc["spec"]["name"] == dead_letter]
    assert exchange, f"the dead-letter exchange {dead_letter} is not declared"
    [binding] = [doc for doc in of_kind(documents, "Binding") if doc["spec"]["source"] == dead_letter]
    queue = [doc for doc in of_kind(documents, "Queue") if doc["spec"]["name"] == binding["spec"]["destination"]]
    assert queue and queue[0]["spec"]["type"] == "quorum"
