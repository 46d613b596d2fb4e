#!/usr/bin/env bash
# Checks the monitoring files: the alert rules (syntax and unit tests), the
# Prometheus config, and every PromQL expression of the Grafana dashboards
# (turned into recording rules so promtool parses them). Needs promtool
# (Debian's prometheus package).
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/dashboard-rules.yml" <<'PY'
import json, sys, glob
rules = []
for path in sorted(glob.glob("*.json")):
    dash = json.load(open(path))
    assert dash.get("uid") and dash.get("title") and dash.get("panels"), f"{path}: not a dashboard"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), f"{path}: duplicate panel ids"
    for p in dash["panels"]:
        assert p.get("type") in ("timeseries", "stat"), f"{path}: panel {p['id']} has unknown type"
        for t in p.get("targets", []):
            rules.append({"record": f"check:{dash['uid'].replace('-', '_')}:{p['id']}{t['refId']}", "expr": t["expr"]})
with open(sys.argv[1], "w") as f:
    json.dump({"groups": [{"name": "dashboard-expressions", "rules": rules}]}, f)
print(f"{len(rules)} dashboard expressions")
PY
promtool check rules "$tmp/dashboard-rules.yml" alerts.yml
promtool test rules alerts.test.yml
sed 's#/etc/prometheus/alerts.yml#alerts.yml#' prometheus.yml > "$tmp/prometheus.yml"
cp alerts.yml "$tmp/"
promtool check config "$tmp/prometheus.yml"

# The Kubernetes manifests parse and name what the guide promises.
python3 - ../deploy/kubernetes/*.yaml <<'PY'
import sys, yaml
kinds = {}
for path in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(path)):
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), f"{path}: incomplete object"
        kinds.setdefault(doc["kind"], []).append(doc["metadata"]["name"])
want = {"Deployment": ["paperhook-api", "paperhook-worker", "paperhook-janitor"], "ScaledObject": ["paperhook-worker"]}
for kind, names in want.items():
    for name in names:
        assert name in kinds.get(kind, []), f"missing {kind} {name}"
print("kubernetes manifests:", ", ".join(f"{k} {n}" for k, ns in sorted(kinds.items()) for n in ns))
PY
