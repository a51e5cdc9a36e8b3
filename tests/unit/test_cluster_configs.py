"""The cluster files in cluster/ checked offline against the schemas their tools use.

- cluster/aws.yaml: Ray's own cluster-launcher schema (ray/autoscaler/ray-schema.json in the
  installed ray), through the same calls `ray up` makes before it touches AWS (prepare_config,
  validate_config); each node_config against the EC2 RunInstances request shape that ships with
  botocore (Ray hands node_config to ec2.create_instances).
- cluster/kuberay-*.yaml: the KubeRay v1 CRD's openAPIV3Schema (a trimmed copy with attribution
  in tests/unit/fixtures/kuberay_v1_crd_schema.yaml), with unknown fields rejected as the API
  server's pruning would drop them.
- The facts the pipeline relies on: which node types have GPUs and the `gpu_node` resource, that
  the GPU capacity fits configs/gpu-vllm.yaml's engines, and that no credentials are written down.

Every check is also run on a broken copy, which it must reject. No network, no Ray runtime.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
AWS = CLUSTER / "aws.yaml"
RAYJOB = CLUSTER / "kuberay-rayjob.yaml"
RAYCLUSTER = CLUSTER / "kuberay-raycluster.yaml"
RUNTIME_ENV = CLUSTER / "runtime_env.yaml"
CRD_FIXTURE = Path(__file__).parent / "fixtures" / "kuberay_v1_crd_schema.yaml"
GPU_RESOURCE = "gpu_node"


def ray_version() -> str:
    import ray

    return ray.__version__


# --------------------------------------------------------------------------- AWS (Ray cluster launcher)


def aws_config() -> dict:
    return yaml.safe_load(AWS.read_text())


def ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def validate_with_ray(cfg: dict) -> None:
    """What `ray up` does to a config before any cloud call: fill in the provider's defaults,
    then validate against ray-schema.json plus Ray's cross-field rules."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(cfg)))


def run_instances_problems(node_config: dict) -> str:
    """Validate a node_config as the EC2 RunInstances request Ray makes from it (botocore's model)."""
    import botocore.session
    from botocore.validate import ParamValidator

    shape = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances").input_shape
    # Ray adds the counts (and tags, subnet, security groups) itself.
    report = ParamValidator().validate(dict(node_config, MinCount=1, MaxCount=1), shape)
    return report.generate_report() if report.has_errors() else ""


def test_aws_config_passes_rays_own_schema():
    cfg = aws_config()
    jsonschema.validate(cfg, ray_schema())  # the file as written
    validate_with_ray(cfg)  # with the AWS defaults filled in, as `ray up` sees it


def _set(cfg, path, value):
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _delete(cfg, path):
    node = cfg
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]


@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(lambda c: _set(c, ["max_worker"], 3), id="unknown top-level key"),
        pytest.param(lambda c: _set(c, ["available_node_types", "gpu_worker", "min_worker"], 0),
                     id="unknown node-type key"),
        pytest.param(lambda c: _set(c, ["available_node_types", "gpu_worker", "resources", "GPU"], 0.5),
                     id="fractional node resource"),
        pytest.param(lambda c: _delete(c, ["available_node_types", "cpu_worker", "node_config"]),
                     id="node type without node_config"),
        pytest.param(lambda c: _set(c, ["head_node_type"], "head"), id="head type not defined"),
        pytest.param(lambda c: _set(c, ["max_workers"], 0), id="min_workers over max_workers"),
        pytest.param(lambda c: _set(c, ["docker", "imag"], "rayproject/ray"), id="unknown docker key"),
    ],
)
def test_rays_validation_rejects_a_broken_aws_config(break_it):
    cfg = aws_config()
    break_it(cfg)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_with_ray(cfg)


def test_aws_node_configs_are_valid_run_instances_requests():
    for name, node_type in aws_config()["available_node_types"].items():
        assert run_instances_problems(node_type["node_config"]) == "", name
    good = aws_config()["available_node_types"]["gpu_worker"]["node_config"]
    assert "InstanceTypes" in run_instances_problems(dict(good, InstanceTypes="g5.2xlarge"))
    broken = copy.deepcopy(good)
    broken["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] = "300GB"
    assert "VolumeSize" in run_instances_problems(broken)


def aws_structure_problems(cfg: dict) -> list[str]:
    """The facts the pipeline relies on, beyond the schema."""
    problems = []
    types = cfg.get("available_node_types", {})
    head = cfg.get("head_node_type")
    if head not in types:
        return [f"head_node_type {head!r} is not a node type"]
    if types[head].get("resources", {}).get("GPU", 0) or types[head].get("max_workers", 0):
        problems.append("the head type must have no GPU and no extra nodes")
    workers = {n: t for n, t in types.items() if n != head}
    gpu_types = {n: t for n, t in workers.items() if t.get("resources", {}).get("GPU", 0) > 0}
    cpu_types = {n: t for n, t in workers.items() if n not in gpu_types}
    if len(gpu_types) != 1 or not cpu_types:
        problems.append(f"expected one GPU worker type and CPU worker types, got GPU {sorted(gpu_types)}, "
                        f"CPU {sorted(cpu_types)}")
    for name, t in list(cpu_types.items()) + [(head, types[head])]:
        if GPU_RESOURCE in t.get("resources", {}):
            problems.append(f"{name}: CPU node type declares {GPU_RESOURCE}")
    for name, t in gpu_types.items():
        res = t["resources"]
        if res.get(GPU_RESOURCE) != res["GPU"]:
            problems.append(f"{name}: {GPU_RESOURCE} must be one per GPU ({res})")
        if not re.match(r"^(g\d|p\d)", t["node_config"].get("InstanceType", "")):
            problems.append(f"{name}: {t['node_config'].get('InstanceType')} is not a GPU instance type")
        if not any("[vllm" in c for c in t.get("worker_setup_commands", [])):
            problems.append(f"{name}: its setup does not install mdrec[vllm]")
        if not t.get("docker", {}).get("worker_image", "").endswith("-gpu"):
            problems.append(f"{name}: needs the CUDA Ray image")
    for name, t in workers.items():
        if "max_workers" not in t or t.get("min_workers", 0) > t["max_workers"]:
            problems.append(f"{name}: min_workers/max_workers missing or inverted")
    if sum(t.get("max_workers", 0) for t in workers.values()) != cfg.get("max_workers"):
        problems.append("max_workers must be the worker types' max_workers added up")
    if any("vllm" in c for c in cfg.get("setup_commands", []) + cfg.get("head_setup_commands", [])
           + cfg.get("worker_setup_commands", [])):
        problems.append("vLLM must be installed on the GPU nodes only")
    tag = f":{ray_version()}-py311-"
    for image in [cfg.get("docker", {}).get("image", "")] + [t.get("docker", {}).get("worker_image", "")
                                                             for t in gpu_types.values()]:
        if tag not in image:
            problems.append(f"image {image!r} is not Ray {ray_version()} on Python 3.11 (the package's pins)")
    for name, t in types.items():
        arn = t["node_config"].get("IamInstanceProfile", {}).get("Arn", "")
        if not re.fullmatch(r"arn:aws:iam::[^:]+:instance-profile/[\w+=,.@/-]+", arn):
            problems.append(f"{name}: no IAM instance profile (S3 credentials come from it)")
    return problems


def test_aws_node_types():
    assert aws_structure_problems(aws_config()) == []


@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(lambda c: _set(c, ["available_node_types", "cpu_worker", "resources", GPU_RESOURCE], 1),
                     id="gpu_node on a CPU type"),
        pytest.param(lambda c: _set(c, ["available_node_types", "gpu_worker", "resources", "GPU"], 0),
                     id="no GPU on the GPU type"),
        pytest.param(lambda c: _set(c, ["available_node_types", "gpu_worker", "resources", GPU_RESOURCE], 2),
                     id="gpu_node not one per GPU"),
        pytest.param(lambda c: _set(c, ["max_workers"], 20), id="max_workers not the sum"),
        pytest.param(lambda c: c["setup_commands"].append("pip install vllm"), id="vllm on every node"),
        pytest.param(lambda c: _delete(c, ["available_node_types", "cpu_worker", "node_config", "IamInstanceProfile"]),
                     id="no instance profile"),
        pytest.param(lambda c: _set(c, ["docker", "image"], "rayproject/ray:2.9.0-py310-cpu"), id="other Ray"),
    ],
)
def test_aws_structure_check_rejects_a_broken_copy(break_it):
    cfg = aws_config()
    break_it(cfg)
    assert aws_structure_problems(cfg) != []


# --------------------------------------------------------------------------- GPU capacity against the vLLM config


def capacity_problems(backend, gpus_per_node: int, custom: dict[str, float], cpus_per_node: float,
                      max_nodes: int) -> list[str]:
    """Can the GPU nodes hold `num_actors` engines of `tensor_parallel_size` GPUs each, packed on
    one node (the vLLM backend's STRICT_PACK bundles, each with the backend's custom resources)?"""
    problems = []
    tp = backend.tensor_parallel_size
    if tp > gpus_per_node:
        problems.append(f"an engine spans {tp} GPUs but a node has {gpus_per_node}")
        return problems
    engines_per_node = gpus_per_node // tp
    if engines_per_node * max_nodes < backend.num_actors:
        problems.append(f"{backend.num_actors} engines need more than {max_nodes} GPU nodes")
    for name, amount in backend.resources.items():
        if custom.get(name, 0) < amount * tp:
            problems.append(f"backend asks for {name}={amount} per GPU; a GPU node has {custom.get(name, 0)}")
    if backend.cpus_per_actor * engines_per_node > cpus_per_node:
        problems.append(f"engines need {backend.cpus_per_actor} CPUs each; a GPU node has {cpus_per_node}")
    return problems


def gpu_vllm_backend(**overrides):
    from mdrec.config import load_config

    backend = load_config(REPO / "configs" / "gpu-vllm.yaml").generate.backend
    assert backend.type == "vllm" and backend.gpus_per_actor > 0
    return backend.model_copy(update=overrides)


def test_gpu_nodes_fit_the_vllm_config():
    gpu = aws_config()["available_node_types"]["gpu_worker"]
    res = gpu["resources"]
    args = (res["GPU"], {GPU_RESOURCE: res[GPU_RESOURCE]}, res["CPU"], gpu["max_workers"])
    pinned = gpu_vllm_backend(resources={GPU_RESOURCE: 1})  # what the pinning override asks for
    assert capacity_problems(gpu_vllm_backend(), *args) == []
    assert capacity_problems(pinned, *args) == []
    assert capacity_problems(gpu_vllm_backend(tensor_parallel_size=2), *args) != []
    assert capacity_problems(gpu_vllm_backend(num_actors=9), *args) != []
    assert capacity_problems(pinned, res["GPU"], {}, res["CPU"], gpu["max_workers"]) != []  # no gpu_node

    job = kuberay_docs(RAYJOB)["RayJob"]
    group = worker_group(job["spec"]["rayClusterSpec"], "gpu")
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    custom = ray_start_resources(group["rayStartParams"])
    kargs = (int(limits["nvidia.com/gpu"]), custom, float(limits["cpu"]), group["maxReplicas"])
    assert capacity_problems(pinned, *kargs) == []
    assert capacity_problems(gpu_vllm_backend(cpus_per_actor=16), *kargs) != []


# --------------------------------------------------------------------------- KubeRay


def kuberay_docs(path: Path) -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), f"{path.name}: one document per kind"
    return by_kind


def strict(schema):
    """Reject unknown fields: every object schema that lists properties gets
    additionalProperties: false (what the API server prunes silently becomes an error)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: strict(v) for k, v in out["properties"].items()}
        out.setdefault("additionalProperties", False)
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = strict(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = strict(out[key])
    if "$defs" in out:
        out["$defs"] = {k: strict(v) for k, v in out["$defs"].items()}
    return out


def crd_validator(kind: str) -> jsonschema.Draft202012Validator:
    fixture = yaml.safe_load(CRD_FIXTURE.read_text())
    if kind == "RayJob":
        root = dict(fixture["RayJob"])
    else:
        # A RayCluster's spec is the same RayClusterSpec type as a RayJob's spec.rayClusterSpec.
        root = {"type": "object", "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                                 "metadata": {"type": "object"},
                                                 "spec": {"$ref": "#/$defs/RayClusterSpec"}}}
    root["$defs"] = fixture["$defs"]
    schema = strict(root)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def crd_errors(doc: dict) -> list[str]:
    errors = []
    if doc.get("apiVersion") != "ray.io/v1":
        errors.append(f"apiVersion {doc.get('apiVersion')!r} is not ray.io/v1")
    meta = doc.get("metadata", {})
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta.get("name", "")) or len(meta["name"]) > 63:
        errors.append(f"metadata.name {meta.get('name')!r} is not a DNS label")
    if set(meta) - {"name", "namespace", "labels", "annotations"}:
        errors.append(f"unexpected metadata keys {sorted(set(meta) - {'name', 'namespace', 'labels', 'annotations'})}")
    for e in crd_validator(doc["kind"]).iter_errors(doc):
        errors.append(f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}")
    return errors


@pytest.mark.parametrize("path,kind", [(RAYJOB, "RayJob"), (RAYCLUSTER, "RayCluster")])
def test_kuberay_manifest_matches_the_crd_schema(path, kind):
    docs = kuberay_docs(path)
    assert set(docs) == {kind, "ServiceAccount"}
    assert crd_errors(docs[kind]) == []


def worker_group(cluster_spec: dict, name: str) -> dict:
    return next(g for g in cluster_spec["workerGroupSpecs"] if g["groupName"] == name)


def _container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(lambda j: _set(j["spec"], ["shutdownAfterJobFinish"], True), id="typo in spec"),
        pytest.param(lambda j: _set(_container(worker_group(j["spec"]["rayClusterSpec"], "gpu")), ["resource"], {}),
                     id="typo in container"),
        pytest.param(lambda j: _set(worker_group(j["spec"]["rayClusterSpec"], "cpu"), ["replica"], 1),
                     id="typo in worker group"),
        pytest.param(lambda j: _set(j["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"], ["num-cpus"], 0),
                     id="rayStartParams value not a string"),
        pytest.param(lambda j: _delete(worker_group(j["spec"]["rayClusterSpec"], "gpu"), ["template"]),
                     id="worker group without template"),
        pytest.param(lambda j: _set(j["spec"]["rayClusterSpec"]["autoscalerOptions"], ["upscalingMode"], "Fast"),
                     id="value outside enum"),
        pytest.param(lambda j: _set(_container(worker_group(j["spec"]["rayClusterSpec"], "gpu"))["resources"]["limits"],
                                    ["nvidia.com/gpu"], "one"), id="not a quantity"),
        pytest.param(lambda j: _set(j["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"], ["volumes"],
                                    [{"name": "x", "emptyDirectory": {}}]), id="unknown volume source"),
        pytest.param(lambda j: _delete(j["spec"], ["entrypoint"]), id="no entrypoint"),
        pytest.param(lambda j: _set(j, ["apiVersion"], "ray.io/v1alpha1"), id="old API version"),
    ],
)
def test_crd_schema_rejects_a_broken_rayjob(break_it):
    job = kuberay_docs(RAYJOB)["RayJob"]
    break_it(job)
    assert crd_errors(job) != []


def ray_start_resources(params: dict) -> dict:
    """KubeRay passes rayStartParams.resources to `ray start --resources=...`: a quoted JSON object."""
    raw = params.get("resources")
    if raw is None:
        return {}
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('\\"', '"')
    return json.loads(text)


def kuberay_structure_problems(docs: dict[str, dict], kind: str) -> list[str]:
    problems = []
    obj = docs[kind]
    cluster = obj["spec"]["rayClusterSpec"] if kind == "RayJob" else obj["spec"]
    if cluster.get("rayVersion") != ray_version():
        problems.append(f"rayVersion {cluster.get('rayVersion')} is not the installed Ray {ray_version()}")
    head = cluster["headGroupSpec"]
    if head["rayStartParams"].get("num-cpus") != "0":
        problems.append("the head should take no tasks (num-cpus: '0')")
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    templates = [("head", head["template"])] + [(n, g["template"]) for n, g in groups.items()]
    sa = docs["ServiceAccount"]
    role = sa["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn", "")
    if not re.fullmatch(r"arn:aws:iam::[^:]+:role/[\w+=,.@/-]+", role):
        problems.append("the service account is not bound to an IAM role (IRSA)")
    for name, template in templates:
        spec = template["spec"]
        if spec.get("serviceAccountName") != sa["metadata"]["name"]:
            problems.append(f"{name}: pods do not run as the IRSA service account")
        c = spec["containers"][0]
        gpus = int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
        custom = ray_start_resources(groups[name]["rayStartParams"]) if name in groups else {}
        image = c.get("image", "")
        if f"ray{ray_version()}-py311-" not in image:
            problems.append(f"{name}: image {image!r} does not name Ray {ray_version()} on Python 3.11")
        if name == "gpu":
            if gpus < 1:
                problems.append("gpu: no nvidia.com/gpu limit")
            if custom.get(GPU_RESOURCE) != gpus:
                problems.append(f"gpu: {GPU_RESOURCE} must be one per GPU (got {custom}, {gpus} GPUs)")
            if int(c["resources"].get("requests", {}).get("nvidia.com/gpu", gpus)) != gpus:
                problems.append("gpu: GPU requests and limits differ")
            if not image.endswith("-gpu"):
                problems.append("gpu: needs the CUDA image")
        else:
            if gpus or GPU_RESOURCE in custom:
                problems.append(f"{name}: a CPU group declares GPUs or {GPU_RESOURCE}")
            if not image.endswith("-cpu"):
                problems.append(f"{name}: should use the CPU image")
    if "gpu" not in groups or len(groups) < 2:
        problems.append("expected a CPU and a GPU worker group")
    for name, g in groups.items():
        if not g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"]:
            problems.append(f"{name}: replicas outside [minReplicas, maxReplicas]")
    if kind == "RayJob":
        spec = obj["spec"]
        if not spec["entrypoint"].startswith("python jobs/pipeline.py --config configs/gpu-vllm.yaml --run-dir s3://"):
            problems.append("entrypoint is not the pipeline on the GPU config with an S3 run dir")
        runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML", "")) or {}
        if "working_dir" not in runtime_env:
            problems.append("runtimeEnvYAML has no working_dir")
        if spec.get("shutdownAfterJobFinishes") is not True or spec.get("ttlSecondsAfterFinished", 0) <= 0:
            problems.append("the cluster must be deleted after the job (shutdownAfterJobFinishes, ttl)")
    return problems


@pytest.mark.parametrize("path,kind", [(RAYJOB, "RayJob"), (RAYCLUSTER, "RayCluster")])
def test_kuberay_groups(path, kind):
    assert kuberay_structure_problems(kuberay_docs(path), kind) == []


@pytest.mark.parametrize(
    "break_it",
    [
        pytest.param(lambda d: _set(worker_group(d["RayJob"]["spec"]["rayClusterSpec"], "cpu")["rayStartParams"],
                                    ["resources"], '"{\\"gpu_node\\": 1}"'), id="gpu_node on the CPU group"),
        pytest.param(lambda d: _delete(_container(worker_group(d["RayJob"]["spec"]["rayClusterSpec"], "gpu"))
                                       ["resources"]["limits"], ["nvidia.com/gpu"]), id="GPU group without GPU"),
        pytest.param(lambda d: _set(d["RayJob"]["spec"], ["shutdownAfterJobFinishes"], False), id="cluster kept"),
        pytest.param(lambda d: _delete(d["ServiceAccount"]["metadata"], ["annotations"]), id="no IRSA role"),
        pytest.param(lambda d: _set(d["RayJob"]["spec"]["rayClusterSpec"], ["rayVersion"], "2.9.0"), id="other Ray"),
        pytest.param(lambda d: _set(worker_group(d["RayJob"]["spec"]["rayClusterSpec"], "cpu"), ["replicas"], 99),
                     id="replicas over max"),
    ],
)
def test_kuberay_structure_check_rejects_a_broken_copy(break_it):
    docs = kuberay_docs(RAYJOB)
    break_it(docs)
    assert kuberay_structure_problems(docs, "RayJob") != []


def test_raycluster_has_the_rayjobs_cluster():
    job = kuberay_docs(RAYJOB)
    cluster = kuberay_docs(RAYCLUSTER)
    assert cluster["RayCluster"]["spec"] == job["RayJob"]["spec"]["rayClusterSpec"]
    assert cluster["ServiceAccount"] == job["ServiceAccount"]


def test_ray_start_resources_parsing():
    assert ray_start_resources({"resources": '"{\\"gpu_node\\": 1, \\"x\\": 2}"'}) == {"gpu_node": 1, "x": 2}
    assert ray_start_resources({}) == {}
    with pytest.raises(json.JSONDecodeError):
        ray_start_resources({"resources": "gpu_node=1"})


# --------------------------------------------------------------------------- credentials and runtime_env

CREDENTIAL_PATTERNS = [
    r"AKIA[0-9A-Z]{16}", r"ASIA[0-9A-Z]{16}", r"(?i)aws_secret_access_key", r"(?i)aws_access_key_id",
    r"(?i)aws_session_token", r"~/\.aws", r"secretKeyRef", r"(?m)^kind:\s*Secret\b",
]


def credential_findings(text: str) -> list[str]:
    return [p for p in CREDENTIAL_PATTERNS if re.search(p, text)]


def test_no_credentials_in_cluster_files():
    files = sorted(CLUSTER.glob("*.yaml"))
    assert {AWS, RAYJOB, RAYCLUSTER, RUNTIME_ENV} <= set(files)
    for f in files:
        assert credential_findings(f.read_text()) == [], f.name
    assert credential_findings("env:\n  - name: AWS_SECRET_ACCESS_KEY\n    value: x\n") != []
    assert credential_findings("file_mounts:\n  ~/.aws/credentials: ~/.aws/credentials\n") != []
    assert credential_findings("apiVersion: v1\nkind: Secret\n") != []


def test_runtime_env_ships_the_repo_without_local_state():
    env = yaml.safe_load(RUNTIME_ENV.read_text())
    assert env["working_dir"] == "."
    assert {".venv/", "runs/", ".git/"} <= set(env["excludes"])
    assert "issue 6" not in RUNTIME_ENV.read_text()


# --------------------------------------------------------------------------- node labels against the selectors


def ray_start_labels(params: dict) -> dict:
    """KubeRay passes rayStartParams.labels to `ray start --labels=...`; parsed (and checked) the
    way `ray start` does."""
    from ray._private.label_utils import parse_node_labels_string, validate_node_label_syntax

    labels = parse_node_labels_string(params.get("labels", ""))
    validate_node_label_syntax(labels)
    return labels


def node_labels() -> dict[str, dict[str, dict]]:
    """file -> {'head' | 'cpu' | 'gpu': labels} of every node kind in cluster/."""
    types = aws_config()["available_node_types"]
    out = {"aws.yaml": {"head": types["ray.head.default"].get("labels", {}),
                        "cpu": types["cpu_worker"].get("labels", {}), "gpu": types["gpu_worker"].get("labels", {})}}
    for path, kind in ((RAYJOB, "RayJob"), (RAYCLUSTER, "RayCluster")):
        obj = kuberay_docs(path)[kind]
        cluster = obj["spec"]["rayClusterSpec"] if kind == "RayJob" else obj["spec"]
        out[path.name] = {"head": ray_start_labels(cluster["headGroupSpec"]["rayStartParams"]),
                          **{g["groupName"]: ray_start_labels(g["rayStartParams"]) for g in cluster["workerGroupSpecs"]}}
    return out


def test_cpu_stages_have_nodes_and_only_cpu_nodes_in_every_cluster_file():
    from mdrec import placement
    from mdrec.config import load_config

    selector = load_config(REPO / "configs" / "gpu-vllm.yaml").ray.cpu_label_selector
    assert selector, "configs/gpu-vllm.yaml pins its CPU stages"
    for name, kinds in node_labels().items():
        matching = {kind for kind, labels in kinds.items() if placement.matches(selector, labels)}
        assert matching == {"cpu"}, (name, kinds)
        assert placement.matches({"mdrec-node": "gpu"}, kinds["gpu"]), name  # what the comments offer backends


# --------------------------------------------------------------------------- the image (cluster/Dockerfile)
# No docker here to build it: these check that it builds what the manifests name.


def dockerfile_args() -> dict[str, str]:
    text = (CLUSTER / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))


def test_dockerfile_builds_the_images_the_manifests_name():
    text = (CLUSTER / "Dockerfile").read_text()
    args = dockerfile_args()
    assert args["RAY_VERSION"] == ray_version() and args["VARIANT"] == "cpu"
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-py311-\$\{VARIANT\}$", text, flags=re.M)
    # Each kind gets the extras its nodes run, as cluster/aws.yaml installs them.
    aws = aws_config()
    assert "[semantic]" in aws["setup_commands"][-1] and "'/home/ray/mdrec[semantic]'" in text
    assert "[vllm,semantic]" in aws["available_node_types"]["gpu_worker"]["worker_setup_commands"][0]
    assert "'/home/ray/mdrec[vllm,semantic]'" in text and "whl/cpu torch" in text
    # Every image line of the manifests is one of the two tags the header's commands build.
    tags = set(re.findall(r"-t \S+/mdrec:(\S+) \.$", text, flags=re.M))
    assert tags == {f"0.1.0-ray{ray_version()}-py311-cpu", f"0.1.0-ray{ray_version()}-py311-gpu"}
    for path in (RAYJOB, RAYCLUSTER):
        images = set(re.findall(r"image: \S+/mdrec:(\S+)", path.read_text()))
        assert images and images <= tags, (path.name, images)


def test_docker_build_context_is_the_package_only():
    rules = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*"  # everything out, then the package back in
    assert set(rules[1:]) == {"!pyproject.toml", "!README.md", "!mdrec/", "**/__pycache__"}
    copied = re.findall(r"^COPY --chown=ray (.+) \S+$", (CLUSTER / "Dockerfile").read_text(), flags=re.M)
    assert copied == ["pyproject.toml README.md", "mdrec"]
