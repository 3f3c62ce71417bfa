#!/usr/bin/env bash
# Checks contrib/prometheus and contrib/grafana: `promtool check rules`, `promtool test rules`
# (the rules' unit tests), that every alert has a test case where it fires, and that every
# query of the Grafana dashboard is valid PromQL (promtool parses them as recording rules,
# with Grafana's variables replaced). Installs promtool (Debian's prometheus package) if
# missing. That every metric named here is one the daemon exports is checked against a real
# daemon by tests/monitoring.rs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v promtool >/dev/null 2>&1; then
    echo "installing prometheus (Debian) for promtool"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if ! python3 -c "import yaml" 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check "PyYAML==6.0.3"
fi
cd "$ROOT/contrib/prometheus"
promtool check rules dualseal.rules.yml
promtool test rules dualseal.rules.test.yml
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
python3 - "$TMP/dashboard.rules.yml" <<'PY'
import json, sys, yaml
rules = yaml.safe_load(open("dualseal.rules.yml"))
tests = yaml.safe_load(open("dualseal.rules.test.yml"))
alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
firing = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])
          if t.get("exp_alerts")}
quiet = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])
         if not t.get("exp_alerts")}
problems = [f"alert {a} has no promtool test where it fires" for a in sorted(alerts - firing)]
problems += [f"alert {a} has no promtool test where it stays quiet" for a in sorted(alerts - quiet)]
problems += [f"the tests name {a}, which the rules do not define" for a in sorted((firing | quiet) - alerts)]
dash = json.load(open("../grafana/dualseal.json"))
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
exprs += [a["expr"] for a in dash.get("annotations", {}).get("list", []) if "expr" in a]
if len(exprs) < 10:
    problems.append(f"the dashboard has only {len(exprs)} queries")
subst = lambda e: e.replace("$__rate_interval", "5m").replace("$instance", ".*")
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
    {"record": f"dashboard:query{i}", "expr": subst(e)} for i, e in enumerate(exprs)]}]},
    open(sys.argv[1], "w"))
if problems:
    sys.exit("\n".join(problems))
print(f"{len(alerts)} alerts, each with a firing and a quiet test; {len(exprs)} dashboard queries")
PY
promtool check rules "$TMP/dashboard.rules.yml" >/dev/null
echo "monitoring: rules, their unit tests and the dashboard's queries are valid"
