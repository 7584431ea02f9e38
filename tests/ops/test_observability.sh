#!/usr/bin/env bash
# test_observability: the Prometheus/Grafana bundle in deploy/ is valid and agrees
# with the code and the runbook.
#  - promtool check config / check rules, and promtool test rules (each alert fires on
#    its scenario's series, stays silent while healthy); a broken rule is caught;
#  - every Grafana panel query is valid PromQL (checked as recording rules by promtool)
#    on the provisioned datasource, and the dashboard shows admission, queue depth,
#    latency, payments by outcome and consumer lag;
#  - every metric the bundle uses is one of the shared names (README, "Metrics");
#  - every alert has a runbook section in docs/RUNBOOK.md.
# That the running binaries serve these names is checked by test_examples.
source "$(dirname "$0")/lib.sh"
need promtool python3
D="$OPS_ROOT/deploy"
PYV="$CONCERT_VENV/bin/python"
[[ -x "$PYV" ]] || die "no venv at $CONCERT_VENV (scripts/install-python.sh)"

check_grep "promtool check config prometheus.yml (and its rule files)" 'SUCCESS: .*valid prometheus config' \
  promtool check config "$D/prometheus/prometheus.yml"
check_grep "promtool check rules alerts.yml" 'SUCCESS: [0-9]+ rules found' promtool check rules "$D/prometheus/alerts.yml"
check_grep "promtool test rules alerts.test.yml" 'SUCCESS' promtool test rules "$D/prometheus/alerts.test.yml"
mkdir -p "$OPS_TMP/broken"
sed 's/expr: max(payment_consumer_under_replicated_partitions) > 0/expr: max(payment_consumer_under_replicated_partitions) > 100/' \
  "$D/prometheus/alerts.yml" >"$OPS_TMP/broken/alerts.yml"
cp "$D/prometheus/alerts.test.yml" "$OPS_TMP/broken/"
check_rc "a weakened alert fails its unit test (the check can fail)" 1 promtool test rules "$OPS_TMP/broken/alerts.test.yml"

# Dashboard and provisioning -> rules file of every panel query, names used.
check "dashboard JSON and provisioning files parse; panels use the provisioned datasource" "$PYV" - "$D" "$OPS_TMP" <<'PY'
import json, sys, yaml, os
d, tmp = sys.argv[1], sys.argv[2]
ds = yaml.safe_load(open(d + "/grafana/provisioning/datasources/prometheus.yml"))["datasources"][0]
prov = yaml.safe_load(open(d + "/grafana/provisioning/dashboards/concert.yml"))["providers"][0]
assert prov["options"]["path"] == "/var/lib/grafana/dashboards", prov
dash = json.load(open(d + "/grafana/dashboards/concert.json"))
exprs = []
for p in dash["panels"]:
    if p["type"] == "row": continue
    assert p["datasource"]["uid"] == ds["uid"], p["title"]
    for t in p["targets"]:
        assert t["datasource"]["uid"] == ds["uid"], p["title"]
        exprs.append((p["title"], t["expr"]))
rules = {"groups": [{"name": "dashboard", "rules": [{"record": "dashboard:q%d" % i, "expr": e} for i, (_, e) in enumerate(exprs)]}]}
yaml.safe_dump(rules, open(tmp + "/dashboard-rules.yml", "w"))
open(tmp + "/dashboard-titles.txt", "w").write("\n".join(t for t, _ in exprs) + "\n")
PY
check_grep "every panel query is valid PromQL" 'SUCCESS: [0-9]+ rules found' promtool check rules "$OPS_TMP/dashboard-rules.yml"
for want in concert_queue_admitted_total concert_queue_waiting grpc_server_handling_seconds_bucket concert_payments_total payment_consumer_lag; do
  check "the dashboard shows $want" grep -q "$want" "$D/grafana/dashboards/concert.json"
done

# The shared metric names (the team brief; README, "Metrics"). Anything else used by
# the bundle is a typo the scrape would never match.
NAMES="grpc_server_started_total grpc_server_handled_total grpc_server_handling_seconds
concert_queue_waiting concert_queue_active concert_queue_admitted_total concert_redis_up concert_kafka_up
concert_redis_used_memory_bytes concert_redis_maxmemory_bytes concert_payments_total
payment_consumer_lag payment_consumer_batch_size payment_consumer_settle_seconds payment_consumer_payments_total
payment_consumer_redis_errors_total payment_consumer_kafka_errors_total payment_consumer_redis_up
payment_consumer_kafka_up payment_consumer_under_replicated_partitions
process_cpu_seconds_total process_resident_memory_bytes process_start_time_seconds process_open_fds
concert_build_info payment_consumer_build_info up"
check "alerts and dashboard use only the shared metric names" "$PYV" - "$D" "$NAMES" <<'PY'
import json, re, sys, yaml
d, names = sys.argv[1], set(sys.argv[2].split())
exprs = [r["expr"] for g in yaml.safe_load(open(d + "/prometheus/alerts.yml"))["groups"] for r in g["rules"]]
dash = json.load(open(d + "/grafana/dashboards/concert.json"))
exprs += [t["expr"] for p in dash["panels"] if p["type"] != "row" for t in p["targets"]]
used = set()
for e in exprs:
    for m in re.findall(r"\b([a-z_][a-z0-9_]*)\s*(?:\{|\[|\)|\s|$)", e):
        if re.match(r"(grpc_server|concert|payment_consumer|process)_", m) or m == "up":
            used.add(re.sub(r"_(bucket|sum|count)$", "", m))
bad = sorted(used - names)
if bad: sys.exit("unknown metric names: " + " ".join(bad))
print("used:", " ".join(sorted(used)))
PY

# Runbook: a section per alert, and each runbook_url anchor exists.
RB="$OPS_ROOT/docs/RUNBOOK.md"
check "docs/RUNBOOK.md exists" test -s "$RB"
check "every alert is named in the runbook, every runbook_url anchor is a heading" "$PYV" - "$D/prometheus/alerts.yml" "$RB" <<'PY'
import re, sys, yaml
rules = [r for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"]]
rb = open(sys.argv[2]).read()
anchors = set()
for h in re.findall(r"^#+ (.+)$", rb, re.M):
    a = re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
    anchors.add(a)
bad = []
for r in rules:
    if r["alert"] not in rb: bad.append("alert %s not in runbook" % r["alert"])
    url = r["annotations"]["runbook_url"]
    if not url.startswith("docs/RUNBOOK.md#") or url.split("#", 1)[1] not in anchors:
        bad.append("%s: no heading for %s" % (r["alert"], url))
if bad: sys.exit("\n".join(bad))
PY

# Live: the names used are served by the real binaries: tests/ops/test_examples.sh
# (a server with Kafka and a consumer, after a full flow).
ops_done
