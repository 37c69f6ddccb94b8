"""deploy/k8s-gpu-job-template.json read by the Kubernetes worker's own code
(`prefect-kubernetes`): its variables are a schema the worker accepts, and one deployment's
job manifest renders with the GPU request, the image, the environment and the secrets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from uuid import uuid4

import pytest

worker = pytest.importorskip("prefect_kubernetes.worker", reason="prefect-kubernetes not installed")

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "k8s-gpu-job-template.json"


def _template() -> dict:
    return json.loads(TEMPLATE.read_text())


def _rendered(values: dict) -> dict:
    from prefect.client.schemas.objects import FlowRun

    config = asyncio.run(
        worker.KubernetesWorkerJobConfiguration.from_template_and_values(_template(), values)
    )
    config.prepare_for_flow_run(FlowRun(flow_id=uuid4(), name="nightly-f25a38cb5852"))
    return config.job_manifest


def test_the_template_has_every_part_the_worker_fills_and_defaults_it_accepts():
    template = _template()
    default = worker.KubernetesWorker.get_default_base_job_template()
    # every job configuration field the worker's own template has, and a variable for each
    assert set(default["job_configuration"]) <= set(template["job_configuration"])
    assert set(default["variables"]["properties"]) <= set(template["variables"]["properties"])
    # and the defaults make a valid configuration: the worker's variables model takes them
    defaults = {k: v["default"] for k, v in template["variables"]["properties"].items()
                if "default" in v}  # fmt: skip
    assert defaults["gpu_count"] == 1 and defaults["secret_name"] == "eul-secrets"
    known = worker.KubernetesWorkerVariables.model_fields
    worker.KubernetesWorkerVariables(**{k: v for k, v in defaults.items() if k in known})


def test_one_deployment_renders_a_gpu_job_with_its_image_env_and_secrets():
    manifest = _rendered(
        {
            "image": "registry.example/eul:1.4.0",
            "gpu_count": 2,
            "namespace": "unlearning",
            "env": {"EUL_PROJECT_DIR": "/project", "HF_HUB_OFFLINE": "1"},
            "secret_name": "eul-prod-secrets",
        }
    )
    assert manifest["kind"] == "Job" and manifest["metadata"]["namespace"] == "unlearning"
    assert manifest["spec"]["backoffLimit"] == 0  # a failed run is rerun by Prefect, not here
    spec = manifest["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["image"] == "registry.example/eul:1.4.0"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 2
    # plain settings as env, the flow run's id added by the worker, credentials from a secret
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["EUL_PROJECT_DIR"] == "/project" and "PREFECT__FLOW_RUN_ID" in env
    assert container["envFrom"] == [{"secretRef": {"name": "eul-prod-secrets"}}]
    assert not any("SECRET" in name or "PASSWORD" in name for name in env)
    # the job lands on a GPU node and tolerates its taint
    assert spec["nodeSelector"] and any("nvidia.com/gpu" in str(t) for t in spec["tolerations"])
