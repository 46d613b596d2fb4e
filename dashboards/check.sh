#!/usr/bin/env bash
# Checks the monitoring files: the alert rules (syntax and unit tests), the
# Prometheus config, every PromQL expression of the Grafana dashboards
# (turned into recording rules so promtool parses them), and the dashboards
# against the Grafana schema (schema.py, with PyPI's grafana-foundation-sdk).
# Needs promtool (Debian's prometheus package).
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

# The dashboards against the Grafana schema (grafana-foundation-sdk's typed
# models); a dashboard with known mistakes must fail, or the check is blind.
python3 -c 'import grafana_foundation_sdk' 2>/dev/null ||
    python3 -m pip install -q 'grafana-foundation-sdk==1769699998!10.1.0'
python3 schema.py *.json
python3 - "$tmp/broken.json" <<'PY2'
import json, sys
d = json.load(open("paperhook-overview.json"))
panel = next(p for p in d["panels"] if p["type"] == "timeseries")
panel["gridpos"] = panel.pop("gridPos")
panel["options"]["legend"]["placement"] = "bottm"
json.dump(d, open(sys.argv[1], "w"))
PY2
if python3 schema.py "$tmp/broken.json" > "$tmp/broken.out"; then
    echo "schema.py accepted a dashboard with a misspelt key and a bad enum value"; exit 1
fi
grep -q gridpos "$tmp/broken.out" && grep -q placement "$tmp/broken.out" ||
    { cat "$tmp/broken.out"; echo "schema.py missed a known mistake"; exit 1; }
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
