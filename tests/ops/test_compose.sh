#!/usr/bin/env bash
# test_compose: compose.yaml, Dockerfile and .dockerignore, checked without a Docker
# engine (none runs here).
#  - compose.yaml validates against the Compose Specification schema, the copy that
#    the PyPI package check-jsonschema ships (--builtin-schema vendor.compose-spec;
#    nothing fetched at test time, nothing vendored); a broken copy fails it;
#  - the topology rules: one image built once, a healthcheck and a restart policy on
#    every long-running service, the replica with the primary's maxmemory and
#    volatile-lru, Prometheus and Grafana with deploy/ mounted, metrics ports published,
#    Prometheus scraping the services that exist, no dangling depends_on;
#  - the Dockerfile checklist (hadolint is in no registry we reach), one check each:
#    D1 multi-stage, pinned base images (no :latest)
#    D2 apt-get update and install in one RUN, --no-install-recommends, lists removed
#    D3 the runtime packages exist in Debian 12 and cover every shared library the
#       binaries link (ldd + dpkg -S, through the packages' dependencies)
#    D4 a non-root USER in the final stage
#    D5 HEALTHCHECK with grpc-health-probe, which the image contains
#    D6 ENTRYPOINT and CMD in exec (JSON) form
#    D7 CMD names hosts that compose.yaml defines, ports that EXPOSE lists
#    D8 COPY, never ADD; no curl|sh; no secret in ENV/ARG
#    D9 every binary COPY'd from the build stage is a target the build stage builds
#    D10 .dockerignore keeps build dirs and .git out, and nothing the build COPYs
source "$(dirname "$0")/lib.sh"
PYV="$CONCERT_VENV/bin/python"
CJS="$CONCERT_VENV/bin/check-jsonschema"
[[ -x "$CJS" ]] || die "no check-jsonschema in $CONCERT_VENV (scripts/install-python.sh)"
C="$OPS_ROOT/compose.yaml"

check_grep "compose.yaml validates against the Compose Specification schema" 'ok -- validation done' \
  "$CJS" --builtin-schema vendor.compose-spec "$C"
sed 's/condition: service_healthy/condition: service_sleepy/' "$C" >"$OPS_TMP/broken-compose.yaml"
check_rc "a compose file with an invalid depends_on condition fails the schema (the check can fail)" 1 \
  "$CJS" --builtin-schema vendor.compose-spec "$OPS_TMP/broken-compose.yaml"
printf 'services:\n  a:\n    image: x\n    healthcheck: {test: ["CMD", "true"], interval: soon}\n    bogus_key: 1\n' >"$OPS_TMP/broken2.yaml"
check_rc "an unknown service key fails the schema" 1 "$CJS" --builtin-schema vendor.compose-spec "$OPS_TMP/broken2.yaml"

check "topology rules of compose.yaml" "$PYV" - "$C" "$OPS_ROOT" <<'PY'
import sys, yaml, os, re
c = yaml.safe_load(open(sys.argv[1])); root = sys.argv[2]
svc = c["services"]; bad = []
built = [n for n, s in svc.items() if "build" in s]
if len(built) != 1: bad.append("services with build: %s (want exactly one)" % built)
img = svc[built[0]].get("image") if built else None
for n, s in svc.items():
    if s.get("image") == img and n not in built and s.get("pull_policy") != "never":
        bad.append("%s uses the built image but may pull it" % n)
    if "healthcheck" not in s: bad.append("%s: no healthcheck" % n)
    if s.get("restart") not in ("unless-stopped", "always", "on-failure"): bad.append("%s: restart %r" % (n, s.get("restart")))
    for d in (s.get("depends_on") or {}):
        if d not in svc: bad.append("%s depends on unknown %s" % (n, d))
app = [n for n, s in svc.items() if s.get("image") == img]
if len(app) < 4: bad.append("want >= 4 services on the one image, got %s" % app)
for r in ("redis-primary", "redis-replica"):
    cmd = " ".join(svc[r]["command"])
    if "--maxmemory 2gb" not in cmd or "--maxmemory-policy volatile-lru" not in cmd: bad.append("%s: maxmemory/volatile-lru missing" % r)
for n in ("prometheus", "grafana"):
    if n not in svc: bad.append("no %s service" % n)
for v in svc.get("prometheus", {}).get("volumes", []) + svc.get("grafana", {}).get("volumes", []):
    src = v.split(":")[0]
    if src.startswith("./") and not os.path.exists(os.path.join(root, src)): bad.append("mount source missing: " + src)
# metrics published: every server and consumer publishes its metrics port
for n, s in svc.items():
    cmd = " ".join(s.get("command") or [])
    m = re.search(r"--metrics \S+:(\d+)", cmd)
    if s.get("image") == img and not m: bad.append("%s: no --metrics" % n)
    if m and not any(p.endswith(":" + m.group(1)) for p in s.get("ports", [])): bad.append("%s: metrics port %s not published" % (n, m.group(1)))
# Prometheus scrapes what exists, on the ports the services serve metrics on
prom = yaml.safe_load(open(os.path.join(root, "deploy/prometheus/prometheus.yml")))
for job in prom["scrape_configs"]:
    for t in job["static_configs"][0]["targets"]:
        h, p = t.rsplit(":", 1)
        if h == "localhost": continue
        if h not in svc: bad.append("prometheus scrapes unknown host " + h)
        elif "--metrics 0.0.0.0:%s" % p not in " ".join(svc[h].get("command") or []): bad.append("%s does not serve metrics on %s" % (h, p))
# the admin key is not a default in the file
for n, s in svc.items():
    k = (s.get("environment") or {}).get("CONCERT_ADMIN_KEY")
    if k is not None and not str(k).startswith("${CONCERT_ADMIN_KEY:?"): bad.append("%s: admin key %r is not required from the environment" % (n, k))
text = open(sys.argv[1]).read()
if "DESIGN.md" in text: bad.append("cites DESIGN.md, which is not in the repository")
if bad: sys.exit("\n".join(bad))
PY

# ---- Dockerfile checklist ----
DF="$OPS_ROOT/Dockerfile"
check "D1 multi-stage, pinned base images" "$PYV" - "$DF" <<'PY'
import re, sys
froms = re.findall(r"^FROM\s+(\S+)", open(sys.argv[1]).read(), re.M)
assert len(froms) >= 2, froms
for f in froms: assert ":" in f and not f.endswith(":latest"), f
PY
# Dockerfile logical lines (continuations joined) for the checks below.
"$PYV" -c "
import re,sys; t=open('$DF').read().replace('\\\\\n',' ')
open('$OPS_TMP/df.lines','w').write('\n'.join(l for l in t.splitlines() if l.strip() and not l.lstrip().startswith('#'))+'\n')"
check "D2 apt-get update+install in one RUN, --no-install-recommends, lists removed" bash -c "
  grep -E '^RUN .*apt-get install' '$OPS_TMP/df.lines' | while read -r l; do
    [[ \$l == *'apt-get update'* && \$l == *--no-install-recommends* && \$l == *'rm -rf /var/lib/apt/lists'* ]] || { echo \"bad: \$l\"; exit 1; }
  done && grep -qE '^RUN .*apt-get install' '$OPS_TMP/df.lines'"
runtime_pkgs="$(sed -n '/^FROM debian:12-slim/,$p' "$OPS_TMP/df.lines" | grep -E '^RUN .*apt-get install' | grep -oE 'install -y -qq --no-install-recommends [^&]*' | sed 's/install -y -qq --no-install-recommends //')"
check "D3 the runtime packages exist in Debian 12: $runtime_pkgs" bash -c "apt-cache show $runtime_pkgs >/dev/null"
check "D3 they cover every shared library the binaries link" "$PYV" - "$BUILD" "$runtime_pkgs" <<'PY'
import subprocess, sys, re
build, pkgs = sys.argv[1], sys.argv[2].split()
closure = set(re.findall(r"^(?:  Depends: |  PreDepends: )?<?([a-z0-9][a-z0-9.+-]+)>?$", subprocess.run(
    ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
     "--no-replaces", "--no-enhances"] + pkgs, capture_output=True, text=True).stdout, re.M))
closure |= set(pkgs)
closure = {p.split(":")[0] for p in closure}
missing = []
for b in ("server/concert-server", "consumers/payment-consumer", "client/concertctl"):
    out = subprocess.run(["ldd", build + "/" + b], capture_output=True, text=True, check=True).stdout
    for lib in re.findall(r"=> (/\S+)", out):
        if "libasan" in lib or "libubsan" in lib: continue  # sanitizer builds only
        r = subprocess.run(["dpkg", "-S", lib], capture_output=True, text=True)
        if r.returncode:  # /lib vs /usr/lib (merged /usr)
            r = subprocess.run(["dpkg", "-S", lib.replace("/lib/", "/usr/lib/", 1)], capture_output=True, text=True)
        owner = r.stdout.split(":")[0].strip() if r.returncode == 0 else "?"
        if owner not in closure: missing.append("%s: %s (%s)" % (b, lib, owner))
if missing: sys.exit("not in the runtime image:\n" + "\n".join(missing))
PY
final="$(sed -n '/^FROM debian:12-slim/,$p' "$OPS_TMP/df.lines")"
check "D4 a non-root USER in the final stage" bash -c "grep -E '^USER ' <<<'$final' | tail -1 | grep -vqE '^USER (root|0)\$'"
check "D5 HEALTHCHECK with grpc-health-probe, copied into the final stage" bash -c "
  grep -qE '^HEALTHCHECK .*CMD \[\"grpc-health-probe\"' <<<'$final' && grep -qE '^COPY --from=build .*grpc-health-probe' <<<'$final'"
check "D5 the install path pins grpc-health-probe for Debian 12's Go (the build stage's)" bash -c "
  grep -q 'grpc-health-probe@' '$OPS_ROOT/scripts/install-go-tools.sh' && grep -q 'install-go-tools.sh --only grpc-health-probe' '$DF'"
check "D6 ENTRYPOINT and CMD in exec form" bash -c "grep -E '^(ENTRYPOINT|CMD) ' <<<'$final' | grep -vqE '^(ENTRYPOINT|CMD) [^[]' && [[ \$(grep -cE '^(ENTRYPOINT|CMD) \[' <<<'$final') -eq 2 ]]"
check "D7 CMD hosts are compose services, EXPOSE covers the ports" "$PYV" - "$DF" "$C" <<'PY'
import json, re, sys, yaml
t = open(sys.argv[1]).read().replace("\\\n", " ")
cmd = json.loads(re.findall(r"^CMD (\[.*\])", t, re.M)[-1])
expose = set(re.findall(r"^EXPOSE (.*)", t, re.M)[-1].split())
svc = yaml.safe_load(open(sys.argv[2]))["services"]
s = " ".join(cmd)
hosts = re.findall(r"([a-z][a-z0-9-]*):\d+", s)
bad = [h for h in hosts if h not in svc]
ports = re.findall(r"0\.0\.0\.0:(\d+)", s)
bad += ["port %s not exposed" % p for p in ports if p not in expose]
for n, v in svc.items():
    m = re.search(r"--metrics 0\.0\.0\.0:(\d+)", " ".join(v.get("command") or []))
    if m and m.group(1) not in expose: bad.append("%s metrics port %s not exposed" % (n, m.group(1)))
if bad or not hosts: sys.exit("unknown hosts/ports: %s" % bad)
PY
check "D8 COPY not ADD, no curl|sh, no secret in ENV/ARG" bash -c "
  ! grep -qE '^ADD ' '$OPS_TMP/df.lines' && ! grep -qE '(curl|wget)[^|]*\\|\\s*(ba)?sh' '$OPS_TMP/df.lines' &&
  ! grep -qiE '^(ENV|ARG) .*(KEY|PASSWORD|SECRET|TOKEN)' '$OPS_TMP/df.lines'"
check "D9 binaries copied from the build stage are targets it builds" bash -c "
  for b in \$(grep -oE '/build/[a-z]+/[a-z-]+' '$OPS_TMP/df.lines' | sort -u); do
    n=\$(basename \$b); grep -qE \"ninja -C /build.* \$n( |\\\$)\" '$OPS_TMP/df.lines' || { echo \"\$n not built\"; exit 1; }
    [[ -x '$BUILD'/\${b#/build/} ]] || { echo \"no \$b in this build\"; exit 1; }
  done"
check "D10 .dockerignore keeps build dirs and .git out, and nothing the build needs" "$PYV" - "$OPS_ROOT" <<'PY'
import fnmatch, os, sys
root = sys.argv[1]
pats = [l.strip() for l in open(root + "/.dockerignore") if l.strip() and not l.startswith("#")]
def ignored(path):
    return any(fnmatch.fnmatch(path, p.rstrip("/")) or fnmatch.fnmatch(path, p.rstrip("/").replace("**/", "")) for p in pats)
bad = [p for p in (".git", "build", "build-test", "build-test/server/concert-server") if not ignored(p.split("/")[0])]
for need in ("CMakeLists.txt", "proto", "scripts", "server", "common", "client", "consumers", "cmake", "Dockerfile"):
    if not os.path.exists(os.path.join(root, need)): bad.append("missing " + need)
    elif ignored(need): bad.append(need + " is ignored but the build needs it")
if bad: sys.exit("\n".join(bad))
PY
ops_done
