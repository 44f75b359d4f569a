"""Checks the rendered deploy/ overlays (run by tests/deploy/check.sh with the tools venv).

    python check_manifests.py --repo ROOT --crd-validator NODE_SCRIPT OVERLAY=RENDERED.yaml...

For each rendered overlay:
- every built-in object validates against the Kubernetes 1.31 JSON schemas of
  kubernetes-validate, strictly (unknown fields are errors);
- ServiceMonitor and PrometheusRule validate against the prometheus-operator schemas of
  @kubernetes-models/prometheus-operator (tests/deploy/validate_crds.mjs); any other kind
  fails the check, so a new custom resource cannot slip through unvalidated;
- the policy-bundle ConfigMap holds exactly the files of policies/ the gateway's bundle
  loader reads, and the Deployment maps each key back to its path under bundle/;
- every PrometheusRule expression parses as PromQL (PyPI promql-parser, the Rust parser
  that follows Prometheus's grammar) and names only metrics the gateway exposes
  (gateway/src/metrics.rs);
- the pieces point at each other (check_wiring): config file paths under the container's
  mounts, listeners on the named container ports, probes on the ops listener, the Service,
  NetworkPolicy, ServiceMonitor and webhook ports;
- with --countersign BIN: every container that runs `countersign ... --config FILE` gets its
  rendered config file and literal env through the gateway's own loader (see check_config).
Once: deploy/grafana/countersign.json parses, its queries parse as PromQL (Grafana's
variables replaced by values of their kind) and name only exposed metrics.

Prints one line per check and exits 1 on any failure.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import kubernetes_validate
import promql_parser
import yaml

KUBERNETES_VERSION = "1.31.0"
# Kinds with no built-in schema, and who validates them.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
# Series Prometheus makes itself for every target.
PROMETHEUS_SERIES = {"up"}
# Files of a bundle directory the gateway's loader reads (gateway/src/policy/bundle.rs).
BUNDLE_DATA_FILES = {"data.json", "data.yaml", "data.yml"}
BUNDLE_ROOT_FILES = {".manifest", ".signatures.json"}

failures = []


def report(ok, what, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}")
    if not ok:
        failures.append(what)


def exposed_metrics(repo):
    """Series names the gateway exposes, from the `registry.register` calls of metrics.rs.

    prometheus-client prefixes `countersign_` (Registry::with_prefix), suffixes counters with
    `_total` and exposes histograms as `_bucket`, `_sum` and `_count`.
    """
    source = open(os.path.join(repo, "gateway/src/metrics.rs"), encoding="utf-8").read()
    struct = re.search(r"pub struct Metrics \{(.*?)\n\}", source, re.S).group(1)
    field_types = dict(re.findall(r"^\s*pub (\w+): (.+),\s*$", struct, re.M))
    names = set()
    registrations = re.findall(
        r'register\(\s*"(\w+)",\s*"(?:[^"\\]|\\.)*",\s*(\w+)\.clone\(\)', source
    )
    for name, field in registrations:
        kind = field_types.get(field, "")
        full = f"countersign_{name}"
        if "Histogram" in kind:
            names |= {f"{full}_bucket", f"{full}_sum", f"{full}_count"}
        elif "Counter" in kind:
            names.add(f"{full}_total")
        elif "Gauge" in kind:
            names.add(full)
        else:
            report(False, f"metrics.rs: type of `{field}` ({name})", "not a counter, gauge or histogram")
    if not registrations:
        report(False, "metrics.rs: no registry.register calls found")
    return names


def metric_names(expression):
    """Metric names in a PromQL expression: identifiers followed by `{` or `[` or standing
    alone, minus functions, keywords, label names and template strings."""
    # Grafana's label_values(metric, label): only the metric is one.
    expression = re.sub(r"label_values\(\s*([^,)]+?)\s*,[^)]*\)", r"\1", expression)
    expression = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # label values, strings
    expression = re.sub(r"\{\{.*?\}\}", "", expression)
    expression = re.sub(r"\{[^}]*\}", "{}", expression)  # label matchers
    expression = re.sub(r"\[[^\]]*\]", "[]", expression)  # ranges
    expression = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expression)
    names = set()
    for match in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expression):
        word, call = match.group(1), match.group(2)
        if call or word in {"and", "or", "unless", "bool", "offset", "e", "le", "Inf", "NaN"}:
            continue
        if re.fullmatch(r"\d+e\d*|[0-9.]+", word):
            continue
        names.add(word)
    return names


# Grafana's variables, replaced by a value of their kind before a dashboard query is parsed.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
}


def check_promql(what, expressions):
    """Each expression must parse as PromQL: a typo (an unclosed parenthesis, `by` in the
    wrong place, a binary operator between a range and an instant vector) would otherwise
    only show in Prometheus's rule-loading errors or an empty panel."""
    errors = []
    for expression in expressions:
        for variable, value in GRAFANA_VARIABLES.items():
            expression = expression.replace(variable, value)
        try:
            promql_parser.parse(expression)
        except ValueError as error:
            errors.append(f"{expression.strip()!r}: {error}")
    report(bool(expressions) and not errors, f"{what}: queries parse as PromQL",
           "; ".join(errors) if errors else f"{len(expressions)} queries")


def check_metrics(what, expressions, exposed):
    unknown = set()
    used = set()
    for expression in expressions:
        for name in metric_names(expression):
            if name.startswith("$"):
                continue
            if name in exposed or name in PROMETHEUS_SERIES:
                used.add(name)
            else:
                unknown.add(name)
    report(not unknown and bool(used), f"{what}: metrics are exposed by the gateway",
           f"unknown {sorted(unknown)}" if unknown else f"{len(used)} distinct series")


def bundle_files(repo):
    root = os.path.join(repo, "policies")
    found = set()
    for directory, _, files in os.walk(root):
        for name in files:
            relative = os.path.relpath(os.path.join(directory, name), root).replace(os.sep, "/")
            if name.endswith(".rego") or name in BUNDLE_DATA_FILES or relative in BUNDLE_ROOT_FILES:
                found.add(relative)
    return found


def check_bundle(overlay, docs, repo):
    expected = bundle_files(repo)
    maps = [d for d in docs if d["kind"] == "ConfigMap"
            and d["metadata"]["name"].startswith("countersign-policy-bundle-")]
    if len(maps) != 1:
        report(False, f"{overlay}: one policy-bundle ConfigMap", f"found {len(maps)}")
        return
    config_map = maps[0]
    keys = set(config_map.get("data", {})) | set(config_map.get("binaryData", {}))
    as_paths = {key.replace("__", "/") for key in keys}
    report(as_paths == expected, f"{overlay}: policy-bundle ConfigMap holds the files of policies/",
           f"missing {sorted(expected - as_paths)}, extra {sorted(as_paths - expected)}"
           if as_paths != expected else f"{len(keys)} files")
    for key in sorted(keys & set(config_map.get("data", {}))):
        path = os.path.join(repo, "policies", key.replace("__", "/"))
        if os.path.exists(path) and open(path, encoding="utf-8").read() != config_map["data"][key]:
            report(False, f"{overlay}: ConfigMap key {key} equals policies/{key.replace('__', '/')}")
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    for deployment in deployments:
        volumes = deployment["spec"]["template"]["spec"].get("volumes", [])
        volume = next((v for v in volumes if v.get("configMap", {}).get("name") == config_map["metadata"]["name"]), None)
        if volume is None:
            report(False, f"{overlay}: Deployment {deployment['metadata']['name']} mounts the policy bundle")
            continue
        items = {item["key"]: item["path"] for item in volume["configMap"].get("items", [])}
        wrong = sorted(key for key in keys if items.get(key) != "bundle/" + key.replace("__", "/"))
        stray = sorted(set(items) - keys)
        report(not wrong and not stray,
               f"{overlay}: Deployment {deployment['metadata']['name']} maps every bundle key to bundle/<path>",
               f"wrong or missing {wrong}, unknown keys {stray}" if wrong or stray else "")


def validate_builtin(overlay, docs):
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key in CUSTOM_KINDS:
            continue
        what = f"{overlay}: {doc['kind']} {doc['metadata'].get('name')} (Kubernetes {KUBERNETES_VERSION} schema, strict)"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            report(True, what)
        except kubernetes_validate.SchemaNotFoundError as error:
            report(False, what, f"{error.message}; no schema for this kind: add a validator")
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.path)
            report(False, what, f"{path}: {error.message}")


def validate_custom(overlay, docs, validator):
    custom = [d for d in docs if (d["apiVersion"], d["kind"]) in CUSTOM_KINDS]
    if not custom:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(custom, handle)
        path = handle.name
    try:
        result = subprocess.run(["node", validator, path], capture_output=True, text=True, timeout=120)
    finally:
        os.unlink(path)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    for line in lines:
        status, _, rest = line.partition(" ")
        report(status == "ok", f"{overlay}: {rest}")
    if result.returncode != 0 or len(lines) != len(custom):
        report(False, f"{overlay}: custom resource validator", (result.stderr or "").strip()[-2000:])


# What a Secret reference stands for when the config is checked: a value of the right shape.
SECRET_STAND_INS = {"COUNTERSIGN__STORE__URL": "postgres://from-secret@database.invalid/countersign"}


def check_config(overlay, docs, countersign):
    """Loads each container's rendered config like the container would: the ConfigMap's
    file, then its COUNTERSIGN__* variables (literal values as rendered, Secret references
    as a stand-in of the right shape), through `countersign config check`, the gateway's own
    loader and validation (unknown keys, bounds, kafka needs PostgreSQL…); a configuration
    error names the key."""
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    for doc in docs:
        template = doc.get("spec", {}).get("template") if doc["kind"] in ("Deployment", "Job") else None
        if not template:
            continue
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        for container in template["spec"]["containers"]:
            args = container.get("args", [])
            if "--config" not in args:
                continue
            config_path = args[args.index("--config") + 1]
            what = f"{overlay}: {doc['kind']} {doc['metadata']['name']} container {container['name']}: {config_path} + env accepted by the gateway's config loader"
            mount = next((m for m in container.get("volumeMounts", [])
                          if config_path.startswith(m["mountPath"].rstrip("/") + "/")), None)
            config_map = config_maps.get(volumes.get(mount["name"], {}).get("configMap", {}).get("name")) if mount else None
            key = config_path[len(mount["mountPath"].rstrip("/")) + 1:] if mount else None
            if not config_map or key not in config_map.get("data", {}):
                report(False, what, "the config file is not mounted from a rendered ConfigMap")
                continue
            env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERSIGN__")}
            for variable in container.get("env", []):
                if "value" in variable:
                    env[variable["name"]] = variable["value"]
                elif variable["name"] in SECRET_STAND_INS:
                    env[variable["name"]] = SECRET_STAND_INS[variable["name"]]
                else:
                    report(False, what, f"no stand-in for {variable['name']} from {sorted(variable.get('valueFrom', {}))}")
            with tempfile.TemporaryDirectory() as directory:
                path = os.path.join(directory, os.path.basename(config_path))
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(config_map["data"][key])
                result = subprocess.run([countersign, "config", "check", "--config", path], env=env,
                                        capture_output=True, text=True, timeout=60)
            output = (result.stdout + result.stderr).strip()
            accepted = result.returncode == 0 and ": valid (" in output
            report(accepted, what, "" if accepted else output[-1500:])


def selects(selector, labels):
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def check_wiring(overlay, docs):
    """What the schemas cannot see: the pieces point at each other. Each file the gateway's
    config names lies under one of the container's mounts (or in the image); the listeners'
    ports are the container ports the Service, the probes and the NetworkPolicy use; probes
    go to the plain ops listener (the kubelet has no client certificate); the ServiceMonitor
    and the webhook name a Service port that exists."""
    import tomllib
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    services = [d for d in docs if d["kind"] == "Service"]
    image_paths = ("/usr/share/countersign/",)  # COPY destinations of deploy/Dockerfile
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        for container in pod["spec"]["containers"]:
            args = container.get("args", [])
            if "--config" not in args:
                continue
            what = f"{overlay}: Deployment {deployment['metadata']['name']} container {container['name']}"
            problems = []
            mounts = container.get("volumeMounts", [])
            config_path = args[args.index("--config") + 1]
            mount = next((m for m in mounts if config_path.startswith(m["mountPath"].rstrip("/") + "/")), None)
            config_map = config_maps.get(volumes.get(mount["name"], {}).get("configMap", {}).get("name")) if mount else None
            if not config_map:
                report(False, f"{what}: wiring", "the config file is not mounted from a ConfigMap")
                continue
            config = tomllib.loads(config_map["data"][config_path[len(mount["mountPath"].rstrip("/")) + 1:]])
            files = [config.get("tls", {}).get(key) for key in ("server_cert", "server_key", "client_ca_bundle")]
            files += config.get("tls", {}).get("crls", [])
            files += [config.get("policy", {}).get("bundle"),
                      config.get("audit", {}).get("encryption", {}).get("key_file"),
                      config.get("audit", {}).get("checkpoints", {}).get("signing_key_file")]
            files += config.get("admission", {}).get("policies", [])
            for path in filter(None, files):
                under = [m for m in mounts if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
                if not under and not path.startswith(image_paths):
                    problems.append(f"{path} is under no volumeMount and not in the image")
                for m in under:
                    if volumes.get(m["name"], {}).get("emptyDir") is not None:
                        problems.append(f"{path} is on an emptyDir")
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            for key, name in (("listen_address", "https"), ("ops_listen_address", "ops")):
                address = config.get(key, "")
                if not address.endswith(f":{ports.get(name)}"):
                    problems.append(f"{key} {address!r} is not on container port {name} ({ports.get(name)})")
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                http = container.get(probe, {}).get("httpGet")
                if not http:
                    problems.append(f"{probe}: no httpGet probe")
                    continue
                port = ports.get(http["port"], http["port"])
                if port != ports.get("ops") or http.get("scheme", "HTTP") != "HTTP":
                    problems.append(f"{probe} is not HTTP on the ops port ({http})")
            labels = pod["metadata"].get("labels", {})
            for service in services:
                if not selects(service["spec"].get("selector"), labels):
                    continue
                for port in service["spec"]["ports"]:
                    if port["targetPort"] not in ports and port["targetPort"] not in ports.values():
                        problems.append(f"Service {service['metadata']['name']} port {port['name']}: no container port {port['targetPort']}")
            for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
                if not selects(policy["spec"]["podSelector"].get("matchLabels"), labels):
                    continue
                admitted = {p["port"] for rule in policy["spec"].get("ingress", []) for p in rule.get("ports", [])}
                for name in ("https", "ops"):
                    if ports.get(name) not in admitted and name not in admitted:
                        problems.append(f"NetworkPolicy {policy['metadata']['name']} admits nothing on {name}")
            report(not problems, f"{what}: config files, listeners, probes, Service and NetworkPolicy fit together",
                   "; ".join(problems))
    for monitor in (d for d in docs if d["kind"] == "ServiceMonitor"):
        selected = [sv for sv in services if selects(monitor["spec"]["selector"].get("matchLabels"), sv["metadata"].get("labels", {}))]
        names = {p.get("name") for sv in selected for p in sv["spec"]["ports"]}
        wanted = [e.get("port") for e in monitor["spec"]["endpoints"]]
        report(bool(selected) and all(w in names for w in wanted),
               f"{overlay}: ServiceMonitor {monitor['metadata']['name']} selects a Service with port(s) {wanted}",
               f"Services {[sv['metadata']['name'] for sv in selected]}, ports {sorted(n for n in names if n)}")
    for webhook_config in (d for d in docs if d["kind"] == "ValidatingWebhookConfiguration"):
        for webhook in webhook_config["webhooks"]:
            target = webhook["clientConfig"].get("service", {})
            service = next((sv for sv in services if sv["metadata"]["name"] == target.get("name")
                            and sv["metadata"].get("namespace") == target.get("namespace")), None)
            ports = {p["port"] for p in service["spec"]["ports"]} if service else set()
            report(target.get("port", 443) in ports,
                   f"{overlay}: webhook {webhook['name']} calls Service {target.get('namespace')}/{target.get('name')}:{target.get('port', 443)}",
                   "" if service else "no such Service in the rendering")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", required=True)
    parser.add_argument("--crd-validator", required=True)
    parser.add_argument("--countersign", help="the countersign binary, for the config check")
    parser.add_argument("rendered", nargs="+", help="OVERLAY=FILE")
    args = parser.parse_args()
    exposed = exposed_metrics(args.repo)
    for argument in args.rendered:
        overlay, _, path = argument.partition("=")
        docs = [d for d in yaml.safe_load_all(open(path, encoding="utf-8")) if d]
        report(bool(docs), f"{overlay}: rendered objects", f"{len(docs)}")
        validate_builtin(overlay, docs)
        validate_custom(overlay, docs, args.crd_validator)
        check_bundle(overlay, docs, args.repo)
        check_wiring(overlay, docs)
        if args.countersign:
            check_config(overlay, docs, args.countersign)
        rules = [r for d in docs if d["kind"] == "PrometheusRule"
                 for g in d["spec"]["groups"] for r in g["rules"]]
        expressions = [str(r["expr"]) for r in rules]
        check_promql(f"{overlay}: PrometheusRule ({len(rules)} rules)", expressions)
        check_metrics(f"{overlay}: PrometheusRule ({len(rules)} rules)", expressions, exposed)
    dashboard_path = os.path.join(args.repo, "deploy/grafana/countersign.json")
    try:
        dashboard = json.load(open(dashboard_path, encoding="utf-8"))
        report(True, "grafana/countersign.json parses")
    except (OSError, ValueError) as error:
        report(False, "grafana/countersign.json parses", str(error))
        dashboard = {}
    panels = [p for p in dashboard.get("panels", []) if p.get("type") != "row"]
    expressions = [t.get("expr", "") for p in panels for t in p.get("targets", [])]
    empty = [p.get("title") for p in panels if not any(t.get("expr") for t in p.get("targets", []))]
    report(bool(panels) and not empty, f"grafana/countersign.json: {len(panels)} panels, each with a query",
           f"panels without a query: {empty}" if empty else "")
    expressions += [v["query"]["query"] if isinstance(v.get("query"), dict) else v.get("query", "")
                    for v in dashboard.get("templating", {}).get("list", []) if v.get("type") == "query"]
    # A variable's label_values(metric, label) is Grafana's, not PromQL: its metric is the query.
    check_promql("grafana/countersign.json",
                 [re.sub(r"^\s*label_values\(\s*([^,)]+?)\s*,[^)]*\)\s*$", r"\1", e) for e in expressions])
    check_metrics("grafana/countersign.json", expressions, exposed)
    print(f"{len(failures)} failed" if failures else "all manifest checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
