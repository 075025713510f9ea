"""The deployment files (deploy/), checked offline since no container engine or cluster runs here: the
Compose file against the Compose Specification's JSON Schema, the Kubernetes manifests against the API's
schemas (kubernetes-validate) and the operators' (deploy/schemas/), and every file against the code it
deploys: the commands `make run` starts, the settings that exist, the routes the probes and the ingress
name, the topics, consumer groups and producers behind the Kafka ACLs."""

from __future__ import annotations

import copy
import inspect
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml

from services.audit.app import create_app as create_audit_app
from services.cli import stack
from services.gateway import asyncapi
from services.gateway.app import create_app as create_gateway_app
from services.platform.kafka import MAX_RECORD_BYTES, Topics, grants, principal
from services.platform.settings import Settings
from tests.support.fixtures import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"
SCHEMAS = DEPLOY / "schemas"
KUBERNETES_VERSION = "1.33"  # the oldest Kubernetes docs/deploy.md supports
OPERATOR_GROUPS = ("kafka.strimzi.io", "postgresql.cnpg.io")

# Each service as `make run` starts it (services/cli/stack.py), and the migration it runs first
# (services/platform/database.py upgrade: Alembic to "head").
SERVICE_COMMANDS = {name: ["python", "-m", f"services.{name}"] for name in stack.SERVICES}
MIGRATE_COMMAND = ["alembic", "upgrade", "head"]

# Settings the deployment files set before the code reads them: issue 14's metrics work adds ingest's
# metrics port. Remove each from here once its field exists.
PENDING_SETTINGS = {"DESKBRIDGE_INGEST_METRICS_PORT"}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = _yaml(DEPLOY / "compose.yaml")
    return compose


def _k8s_files() -> list[Path]:
    return [K8S / name for name in _yaml(K8S / "kustomization.yaml")["resources"]]


def _manifests() -> list[dict[str, Any]]:
    return [doc for path in _k8s_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in _manifests() if doc["kind"] == kind]


def _component(doc: dict[str, Any]) -> str:
    return str(doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"])


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = doc["spec"]["template"]["spec"]["containers"]
    return containers


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


# ---- Compose ------------------------------------------------------------------------------------------


def test_the_vendored_compose_schema_is_the_one_its_readme_names() -> None:
    readme = (SCHEMAS / "README.md").read_text()
    assert "compose-go/v2@v2.16.2" in readme
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    assert schema["title"] == "Compose Specification"


def test_compose_file_follows_the_compose_specification() -> None:
    _validator(json.loads((SCHEMAS / "compose-spec.json").read_text())).validate(_compose())


def test_the_compose_schema_refuses_what_compose_would() -> None:
    """The check has teeth: a misspelt key, or a value of the wrong type, is refused."""
    schema = _validator(json.loads((SCHEMAS / "compose-spec.json").read_text()))
    misspelt = _compose()
    misspelt["services"]["gateway"]["healthcheck"]["intervall"] = "10s"
    wrong_type = _compose()
    wrong_type["services"]["gateway"]["depends_on"]["kafka-setup"]["condition"] = "service_alive"
    for broken in (misspelt, wrong_type):
        assert list(schema.iter_errors(broken))


def test_compose_references_resolve() -> None:
    compose = _compose()
    secrets = compose["secrets"]
    for name, service in compose["services"].items():
        for secret in service.get("secrets", []):
            source = secret["source"] if isinstance(secret, dict) else secret
            assert source in secrets, f"{name} mounts an undeclared secret {source}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), f"{name} mounts a missing {source}"
            else:
                assert source in compose["volumes"]
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert context == REPO_ROOT
            assert (context / service["build"]["dockerfile"]).is_file()
    for secret in secrets.values():
        assert secret["file"].startswith("./secrets/"), "secrets live in deploy/secrets/, which git ignores"
    assert "secrets/" in (DEPLOY / ".gitignore").read_text().split()


def test_compose_secrets_that_are_settings_land_where_the_settings_point() -> None:
    """A secret whose target is a setting's name becomes that setting (deploy/entrypoint.sh); a key file
    lands at the path the service's settings name."""
    fields = {f"DESKBRIDGE_{name.upper()}" for name in Settings.model_fields}
    for name in ("gateway", "ingest", "audit", "migrate"):
        service = _compose()["services"][name]
        targets = [secret["target"] for secret in service["secrets"]]
        assert "DESKBRIDGE_DATABASE_URL" in targets
        for target in targets:
            assert target.startswith("/run/secrets/") or target in fields
        environment = service.get("environment", {})
        files = [target for target in targets if target.startswith("/")]
        for path in files:
            pointed = [
                value for value in environment.values() if str(value) in (path, str(Path(path).parent))
            ]
            assert pointed, f"{name}: nothing points at {path}"


def test_compose_gives_each_service_its_own_kafka_identity() -> None:
    """Each service mounts its own client certificate and the CA, nothing of another identity; the broker
    wants TLS with a client certificate everywhere, and only its own and the administrator's identities
    are super users; the topics and grants are made before any service starts."""
    services = _compose()["services"]
    for name in [*stack.SERVICES, "kafka-setup"]:
        identity = "admin" if name == "kafka-setup" else name
        kafka = {s["source"] for s in services[name]["secrets"] if s["source"].startswith("kafka_")}
        assert kafka == {"kafka_ca", f"kafka_{identity}_cert", f"kafka_{identity}_key"}, name
        assert services[name]["environment"]["DESKBRIDGE_KAFKA_SECURITY_PROTOCOL"] == "SSL"
    broker = services["kafka"]["environment"]
    assert set(broker["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")) == {"CLIENT:SSL", "CONTROLLER:SSL"}
    assert broker["KAFKA_SSL_CLIENT_AUTH"] == "required"
    assert broker["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert broker["KAFKA_SUPER_USERS"].split(";") == [principal("broker"), principal("admin")]
    assert services["kafka-setup"]["command"] == ["deskbridge", "kafka", "setup"]
    for name in stack.SERVICES:
        assert services[name]["depends_on"]["kafka-setup"]["condition"] == "service_completed_successfully"


def test_prometheus_scrapes_every_service_where_it_listens() -> None:
    compose = _compose()
    config = _yaml(DEPLOY / "prometheus" / "prometheus.yml")
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    environment = {name: compose["services"][name]["environment"] for name in stack.SERVICES}
    assert targets == {
        "gateway": [f"gateway:{environment['gateway']['DESKBRIDGE_GATEWAY_PORT']}"],
        "ingest": [f"ingest:{environment['ingest']['DESKBRIDGE_INGEST_METRICS_PORT']}"],
        "audit": [f"audit:{environment['audit']['DESKBRIDGE_AUDIT_PORT']}"],
    }
    assert "prometheus" in compose["services"]


# ---- Kubernetes: the API's kinds and the operators' ---------------------------------------------------


def test_every_manifest_is_in_the_kustomization() -> None:
    listed = {path.name for path in _k8s_files()}
    assert listed == {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert "secrets/" in (K8S / ".gitignore").read_text().split()


def test_the_kustomization_builds_with_its_secrets_images_and_namespace(tmp_path: Path) -> None:
    """What `kubectl apply -k` would apply, with stand-in key files: the generated Secrets' names (hashed)
    reach the pods that mount them, the image is the registry's, everything is in the namespace."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (its built-in kustomize) is not installed on this machine")
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    generators = _yaml(K8S / "kustomization.yaml")["secretGenerator"]
    for generator in generators:
        for entry in generator["files"]:
            path = tree / entry.split("=")[1]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}")
    built = subprocess.run([kubectl, "kustomize", str(tree)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    docs = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    assert {name.rsplit("-", 1)[0] for name in secrets} == {g["name"] for g in generators}
    mounted: set[str] = set()
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "deskbridge", doc["metadata"]["name"]
        if doc["kind"] in ("Deployment", "Job"):
            spec = doc["spec"]["template"]["spec"]
            assert {c["image"] for c in spec["containers"]} == {"registry.example.org/deskbridge:0.1.0"}
            mounted |= {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    assert secrets <= mounted
    assert not mounted & {g["name"] for g in generators}, "a pod mounts a generated Secret by its bare name"


@pytest.mark.parametrize(
    "doc",
    [d for d in _manifests() if not d["apiVersion"].startswith(OPERATOR_GROUPS)],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_kubernetes_kinds_follow_the_api_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_api_schema_refuses_what_the_api_server_would() -> None:
    [gateway] = [d for d in _of_kind("Deployment") if _component(d) == "gateway"]
    broken = copy.deepcopy(gateway)
    _containers(broken)[0]["readinessProbe"]["httpGet"]["paht"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def _strict(schema: Any) -> Any:
    """The CRD's schema as the API server applies it under strict field validation (kubectl's default):
    fields the schema does not name are refused unless it keeps unknown fields."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def _crd_schema(path: Path, version: str) -> dict[str, Any]:
    crd = _yaml(path)
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = _strict(served["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    return {"$schema": "http://json-schema.org/draft-07/schema#", **schema}


def test_postgres_cluster_follows_cloudnativepg_crd() -> None:
    schema = _validator(_crd_schema(SCHEMAS / "cnpg" / "postgresql.cnpg.io_clusters.yaml", "v1"))
    [cluster] = _of_kind("Cluster")
    schema.validate(cluster)
    broken = copy.deepcopy(cluster)
    broken["spec"]["bootstrap"]["initdb"]["ownr"] = "deskbridge"
    broken["spec"]["instances"] = 0
    assert len(list(schema.iter_errors(broken))) == 2


def _strimzi(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node, "node runs the Strimzi validators (make setup installs them)"
    script = SCHEMAS / "strimzi" / "validate.mjs"
    assert (SCHEMAS / "strimzi" / "node_modules").is_dir(), "run make setup: it installs the validators"
    done = subprocess.run(
        [node, str(script)],
        input=json.dumps(resources),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


def test_kafka_resources_follow_strimzi_crds() -> None:
    resources = [d for d in _manifests() if d["apiVersion"].startswith("kafka.strimzi.io")]
    assert {d["kind"] for d in resources} == {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}
    assert {d["apiVersion"] for d in resources} == {"kafka.strimzi.io/v1"}
    results = _strimzi(resources)
    assert [(r["kind"], r["name"], r["error"]) for r in results if r["error"]] == []
    assert len(results) == len(resources)


def test_the_strimzi_schemas_refuse_what_strimzi_would() -> None:
    [user] = [d for d in _of_kind("KafkaUser") if d["metadata"]["name"] == "deskbridge-audit"]
    broken = copy.deepcopy(user)
    broken["spec"]["authorization"]["acls"][0]["operations"] = ["Reed"]
    [pool] = _of_kind("KafkaNodePool")[:1]
    no_roles = copy.deepcopy(pool)
    del no_roles["spec"]["roles"]
    assert all(result["error"] for result in _strimzi([broken, no_roles]))


# ---- Kafka: topics and who may do what with them -----------------------------------------------------


def test_topics_are_the_ones_the_services_use_with_the_settings_create_topics_gives() -> None:
    topics = {d["spec"]["topicName"]: d["spec"] for d in _of_kind("KafkaTopic")}
    assert sorted(topics) == sorted(Topics().all())
    for spec in topics.values():
        assert spec["config"]["max.message.bytes"] == MAX_RECORD_BYTES
        assert spec["config"]["message.timestamp.type"] == "LogAppendTime"
        assert spec["replicas"] > spec["config"]["min.insync.replicas"]


def _grants() -> dict[str, set[tuple[str, str, str]]]:
    """Each identity's ACLs as (resource type, name, operation)."""
    grants: dict[str, set[tuple[str, str, str]]] = {}
    for user in _of_kind("KafkaUser"):
        assert user["spec"]["authentication"]["type"] == "tls"
        grants[user["metadata"]["name"]] = {
            (acl["resource"]["type"], acl["resource"]["name"], operation)
            for acl in user["spec"]["authorization"]["acls"]
            for operation in acl["operations"]
            if acl["resource"]["patternType"] == "literal"
        }
    return grants


def _who(operation: str, topic: str) -> set[str]:
    return {
        user.removeprefix("deskbridge-")
        for user, acls in _grants().items()
        if ("topic", topic, operation) in acls
    }


def test_kafka_acls_give_each_service_identity_only_its_part() -> None:
    topics = Topics()
    assert set(_grants()) == {f"deskbridge-{name}" for name in stack.SERVICES}
    assert _who("Write", topics.notices) == {"gateway"}
    assert _who("Write", topics.dead_letters) == {"ingest"}
    assert _who("Write", topics.deliveries) == {"ingest"}
    assert _who("Write", topics.events) == {"gateway"}  # its own notice.* events
    assert _who("Write", topics.admin) == {"gateway", "ingest"}
    assert not any(operation == "Write" for _, _, operation in _grants()["deskbridge-audit"])
    assert _who("Read", topics.notices) == {"ingest", "audit"}
    for topic in topics.all():
        assert "audit" in _who("Read", topic)
    for acls in _grants().values():
        assert not {op for kind, _, op in acls if kind == "cluster" or op in ("Create", "Alter", "All")}


def test_kafka_users_grant_what_the_code_grants_on_the_brokers_it_runs() -> None:
    """services/platform/kafka.py `grants` is what `make run` and the tests apply (principal
    User:CN=deskbridge-<service>, as Strimzi names a KafkaUser's certificate subject)."""
    granted = {
        f"deskbridge-{service}": {(kind, name, op) for kind, name, operations in acls for op in operations}
        for service, acls in grants(Topics()).items()
    }
    assert _grants() == granted
    assert {principal(service) for service in grants(Topics())} == {f"User:CN={user}" for user in _grants()}


def test_consumer_groups_are_the_ones_the_consumers_join() -> None:
    """services/ingest/main.py and services/audit/main.py join f"{topic_prefix}deskbridge-<service>"."""
    for name in ("ingest", "audit"):
        source = inspect.getsource(__import__(f"services.{name}.main", fromlist=["main"]))
        assert f'f"{{settings.topic_prefix}}deskbridge-{name}"' in source
        groups = {n for kind, n, op in _grants()[f"deskbridge-{name}"] if kind == "group" and op == "Read"}
        assert groups == {f"deskbridge-{name}"}


# ---- The image's entry points are the commands `make run` uses ----------------------------------------


def test_make_run_starts_each_service_as_python_dash_m() -> None:
    """The commands this file compares with, as services/cli/stack.py spells them."""
    assert '[sys.executable, "-m", f"services.{name}"]' in inspect.getsource(stack.run_stack)
    for name in stack.SERVICES:
        assert (REPO_ROOT / "services" / name / "__main__.py").is_file()


def _dockerfile() -> dict[str, list[str]]:
    """The final stage's JSON-form ENTRYPOINT and CMD."""
    final = (DEPLOY / "Dockerfile").read_text().split("\nFROM ")[-1]
    found = {}
    for instruction in ("ENTRYPOINT", "CMD"):
        [line] = re.findall(rf"^{instruction} (\[.*\])$", final, re.MULTILINE)
        found[instruction] = json.loads(line)
    return found


def test_the_image_runs_the_gateway_by_default_through_its_entrypoint() -> None:
    image = _dockerfile()
    assert image["CMD"] == SERVICE_COMMANDS["gateway"]
    assert image["ENTRYPOINT"] == ["deskbridge-entrypoint"]
    entrypoint = (DEPLOY / "entrypoint.sh").read_text()
    assert (
        "COPY --chmod=0755 deploy/entrypoint.sh /usr/local/bin/deskbridge-entrypoint"
        in (DEPLOY / "Dockerfile").read_text()
    )
    assert entrypoint.rstrip().endswith('exec "$@"')


def test_the_entrypoint_turns_secret_files_into_settings(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "DESKBRIDGE_DATABASE_URL").write_text("postgresql+asyncpg://u:p@db/deskbridge\n")
    (secrets / "desk").mkdir()
    script = tmp_path / "entrypoint.sh"
    script.write_text((DEPLOY / "entrypoint.sh").read_text().replace("/run/secrets", str(secrets)))
    done = subprocess.run(
        ["sh", str(script), "sh", "-c", 'printf %s "$DESKBRIDGE_DATABASE_URL"'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.stdout == "postgresql+asyncpg://u:p@db/deskbridge"


def test_compose_runs_the_commands_make_run_uses() -> None:
    services = _compose()["services"]
    for name, command in SERVICE_COMMANDS.items():
        assert services[name]["command"] == command
        assert "entrypoint" not in services[name]
    assert services["migrate"]["command"] == MIGRATE_COMMAND
    for name in SERVICE_COMMANDS:
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_kubernetes_runs_the_commands_make_run_uses() -> None:
    deployments = {_component(d): d for d in _of_kind("Deployment")}
    assert set(deployments) == set(SERVICE_COMMANDS)
    for name, deployment in deployments.items():
        [container] = _containers(deployment)
        assert container["args"] == SERVICE_COMMANDS[name]
        assert "command" not in container, "the image's entrypoint stays"
    [job] = _of_kind("Job")
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == MIGRATE_COMMAND
    assert "script_location = %(here)s/migrations" in (REPO_ROOT / "alembic.ini").read_text()


def test_replicas_are_the_ones_the_issue_asks_for() -> None:
    replicas = {_component(d): d["spec"]["replicas"] for d in _of_kind("Deployment")}
    assert replicas == {"gateway": 2, "ingest": 2, "audit": 2}


# ---- Settings, secrets, probes and routes as the code has them ----------------------------------------


def _k8s_environment() -> Iterator[tuple[str, str]]:
    [config] = _of_kind("ConfigMap")
    for key in config["data"]:
        yield "ConfigMap", key
    for doc in [*_of_kind("Deployment"), *_of_kind("Job")]:
        for container in _containers(doc):
            for variable in container.get("env", []):
                yield doc["metadata"]["name"], variable["name"]


def test_every_setting_set_is_one_the_services_read() -> None:
    fields = {f"DESKBRIDGE_{name.upper()}" for name in Settings.model_fields} | PENDING_SETTINGS
    compose = _compose()
    named = [(n, key) for n, s in compose["services"].items() for key in s.get("environment", {})]
    named += list(_k8s_environment())
    for where, key in named:
        if key.startswith("DESKBRIDGE_"):
            assert key in fields, f"{where} sets {key}, which no setting reads"


def test_every_secret_mounted_is_made_by_the_kustomization_or_an_operator() -> None:
    generated = {s["name"] for s in _yaml(K8S / "kustomization.yaml")["secretGenerator"]}
    [cluster] = _of_kind("Kafka")
    [database] = _of_kind("Cluster")
    from_operators = {f"{database['metadata']['name']}-app", f"{cluster['metadata']['name']}-cluster-ca-cert"}
    from_operators |= {user["metadata"]["name"] for user in _of_kind("KafkaUser")}
    for doc in [*_of_kind("Deployment"), *_of_kind("Job")]:
        spec = doc["spec"]["template"]["spec"]
        names = {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
        names |= {
            e["valueFrom"]["secretKeyRef"]["name"]
            for c in spec["containers"]
            for e in c.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert names <= generated | from_operators, doc["metadata"]["name"]
    # Each service mounts its own Kafka identity only.
    for deployment in _of_kind("Deployment"):
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        [client] = [v["secret"]["secretName"] for v in volumes if v["name"] == "kafka-client"]
        assert client == f"deskbridge-{_component(deployment)}"


def _routes(app: Any) -> set[str]:
    """The API's paths as its OpenAPI document lists them, and the pages around it."""
    return {*app.openapi()["paths"], app.openapi_url, app.docs_url}


def _apps() -> dict[str, Any]:
    settings = Settings()
    return {"gateway": create_gateway_app(settings), "audit": create_audit_app(settings)}


async def test_probes_and_healthchecks_ask_routes_that_answer() -> None:
    """Without the lifespan: a probe's route answers before the database or Kafka does."""
    deployments = {_component(d): d for d in _of_kind("Deployment")}
    compose = _compose()["services"]
    for name, app in _apps().items():
        [container] = _containers(deployments[name])
        paths = {
            container[probe]["httpGet"]["path"]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe")
        }
        paths |= set(
            re.findall(r"http://127\.0\.0\.1:\d+(/\w+)", " ".join(compose[name]["healthcheck"]["test"]))
        )
        assert paths == {"/healthz"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
            assert (await client.get("/healthz")).status_code == 200
    [ingest] = _containers(deployments["ingest"])
    assert ingest["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert ingest["ports"] == [{"name": "metrics", "containerPort": 9464}]


def test_the_ingress_routes_every_api_path_and_not_metrics() -> None:
    [ingress] = _of_kind("Ingress")
    services = {"gateway": "deskbridge-gateway", "audit": "deskbridge-audit"}
    for name, app in _apps().items():
        paths = [
            (path["path"], path["pathType"])
            for rule in ingress["spec"]["rules"]
            for path in rule["http"]["paths"]
            if path["backend"]["service"]["name"] == services[name]
        ]

        def routed(route: str, paths: list[tuple[str, str]] = paths) -> bool:
            return any(
                route == prefix or (kind == "Prefix" and route.startswith(prefix.rstrip("/") + "/"))
                for prefix, kind in paths
            )

        gateway_pages = {"/console/", "/console/config.json", asyncapi.ROUTE}
        routes = _routes(app) | (gateway_pages if name == "gateway" else set())
        for route in routes:
            assert routed(route), f"{name}: {route} is not reachable through the ingress"
        assert not routed("/metrics") and not routed("/healthz")
