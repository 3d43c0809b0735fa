"""conf/kubernetes/: valid manifests whose numbers agree with the forkserve
config they carry (loaded with forkserve's own config loader)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from forkserve.config import Config, load_config_file

KUBE = Path(__file__).parent.parent.parent / "conf" / "kubernetes"


def _docs() -> dict[str, dict]:
    docs = {}
    for path in sorted(KUBE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] and doc["metadata"]["name"], path
            docs[doc["kind"]] = doc
    return docs


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> dict:
    docs = _docs()
    conf = tmp_path_factory.mktemp("kube") / "forkserve.conf.py"
    conf.write_text(docs["ConfigMap"]["data"]["forkserve.conf.py"])
    cfg = Config()
    load_config_file(cfg, str(conf))
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    return {"docs": docs, "cfg": cfg, "pod": pod, "container": pod["containers"][0]}


def _quantity(text: str) -> float:
    """A Kubernetes quantity: CPUs ("2", "1500m") or bytes in MiB ("512Mi", "1Gi")."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(m|Mi|Gi)?", str(text))
    assert m, text
    number, unit = float(m.group(1)), m.group(2)
    return {None: number, "m": number / 1000, "Mi": number, "Gi": number * 1024}[unit]


def test_every_manifest_is_yaml_of_a_known_kind():
    assert set(_docs()) == {"ConfigMap", "Deployment", "Service"}


def test_config_is_the_one_the_container_reads(manifests):
    container, pod = manifests["container"], manifests["pod"]
    command = container["command"]
    path = command[command.index("-c") + 1]
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == manifests["docs"]["ConfigMap"]["metadata"]["name"]
    assert Path(path).name in manifests["docs"]["ConfigMap"]["data"]


def test_ports_agree(manifests):
    cfg, container = manifests["cfg"], manifests["container"]
    (bind,) = cfg.bind
    host, _, port = bind.rpartition(":")
    assert host == "0.0.0.0", "a pod must listen on its own address, not loopback"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(port)
    # The probes and the scrape ask the master's control listener.
    control_host, _, control_port = cfg.metrics_bind.rpartition(":")
    assert control_host == "0.0.0.0", "the kubelet probes the pod's address"
    assert ports["control"] == int(control_port)
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
        assert container[probe]["httpGet"]["port"] in ("control", int(control_port))
        assert container[probe]["httpGet"]["path"] == path
    annotations = manifests["docs"]["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == control_port
    service = manifests["docs"]["Service"]["spec"]
    assert service["ports"][0]["targetPort"] in ("http", int(port))
    assert service["selector"].items() <= \
        manifests["docs"]["Deployment"]["spec"]["template"]["metadata"]["labels"].items()


def test_grace_period_covers_drain_delay_and_graceful_timeout(manifests):
    cfg, pod, container = manifests["cfg"], manifests["pod"], manifests["container"]
    ready = container["readinessProbe"]
    # Serving goes on after SIGTERM until the probe has failed and the
    # Service, ingresses and kube-proxies have had a moment to follow.
    assert cfg.drain_delay >= ready["periodSeconds"] * ready["failureThreshold"] + 2
    assert "lifecycle" not in container, "drain_delay replaces a preStop sleep"
    assert pod["terminationGracePeriodSeconds"] > cfg.drain_delay + cfg.graceful_timeout


def test_workers_and_memory_match_resources(manifests):
    cfg, resources = manifests["cfg"], manifests["container"]["resources"]
    cpu = _quantity(resources["limits"]["cpu"])
    assert cfg.workers == max(1, math.ceil(cpu)), "one worker per CPU of the limit"
    assert _quantity(resources["requests"]["cpu"]) == cpu, "guaranteed CPU: no throttling surprise"
    memory = _quantity(resources["limits"]["memory"])
    assert cfg.max_worker_memory > 0, "recycle before the OOM killer does"
    # Every worker at its recycling size (with jitter) and the master fit.
    master = 64
    assert cfg.workers * (cfg.max_worker_memory + cfg.max_worker_memory_jitter) + master <= memory


def test_probes_fit_forkserve_timeouts(manifests):
    cfg, container = manifests["cfg"], manifests["container"]
    live, ready = container["livenessProbe"], container["readinessProbe"]
    # The kubelet restarts a pod only after forkserve had its own chance to
    # replace a stuck worker (timeout), and readiness reacts much faster.
    assert live["periodSeconds"] * live["failureThreshold"] > cfg.timeout
    assert ready["periodSeconds"] * ready["failureThreshold"] < \
        live["periodSeconds"] * live["failureThreshold"]
    assert ready["timeoutSeconds"] < cfg.timeout


def test_rolling_update_never_serves_with_fewer_pods(manifests):
    spec = manifests["docs"]["Deployment"]["spec"]
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["replicas"] >= 2
