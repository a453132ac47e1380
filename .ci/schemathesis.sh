#!/usr/bin/env bash
# API conformance: runs schemathesis against a live node's two OpenAPI
# documents, the public one (GET /openapi.json on `listen`) and the admin one
# (GET /admin/v1/openapi.json on `admin_listen`, with the admin token). Every
# response must not be a 5xx, and its status, content type and body must be
# the ones the document lists for that operation.
#
#   .ci/schemathesis.sh path/to/meshrelay [MAX_EXAMPLES]
#
# MAX_EXAMPLES is the most generated test cases per operation and phase
# (default 20). Optional environment:
#   MESHRELAY_ST_REPORT_DIR  keep JUnit + HAR reports and the node's log there
#   MESHRELAY_ST_SEED        a schemathesis seed, to replay a run
#   MESHRELAY_ST_TIMEOUT     hard limit in seconds for each document's run (900)
#
# schemathesis is installed from PyPI into a virtual environment cached at
# $HOME/.cache/meshrelay-schemathesis-venv. The node and schemathesis then run
# in a network namespace of their own that has only loopback, so whatever URL
# the fuzzer makes the node fetch (POST /admin/v1/peers adds a peer by URL,
# POST /admin/v1/sync syncs with one), nothing leaves the machine. Where no such
# namespace can be made, those operations are left out instead (a new route
# that fetches a URL it is given belongs in that list). Only 127.0.0.1 is ever
# a target.
set -euo pipefail

ST_VERSION="4.32.5"
venv="$HOME/.cache/meshrelay-schemathesis-venv"
export CI="${CI:-true}"

usage() { echo "usage: $0 path/to/meshrelay [MAX_EXAMPLES]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
bin="$(realpath "$1")"
max_examples="${2:-20}"
[[ -x $bin ]] || { echo "$bin is not an executable" >&2; exit 2; }
[[ $max_examples =~ ^[1-9][0-9]*$ ]] || { echo "MAX_EXAMPLES must be a positive integer" >&2; exit 2; }
script="$(realpath "${BASH_SOURCE[0]}")"
report_dir=""
if [[ -n ${MESHRELAY_ST_REPORT_DIR:-} ]]; then
  mkdir -p "$MESHRELAY_ST_REPORT_DIR"
  report_dir="$(realpath "$MESHRELAY_ST_REPORT_DIR")"
fi

step() { printf '\n==> %s\n' "$*"; }

# --- outside the namespace: install, then re-run this script inside one -----
# MESHRELAY_ST_IN_NETNS is this script's own marker for its second stage.
if [[ -z ${MESHRELAY_ST_IN_NETNS:-} ]]; then
  if [[ "$("$venv/bin/st" --version 2>/dev/null || true)" != *"version $ST_VERSION"* ]]; then
    step "installing schemathesis $ST_VERSION into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$ST_VERSION"
  fi
  "$venv/bin/st" --version
  if command -v unshare >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 \
    && unshare --net true 2>/dev/null; then
    MESHRELAY_ST_IN_NETNS=1 exec unshare --net -- bash "$script" "$@"
  fi
  echo "warning: no network namespace (unshare --net / ip unavailable):" \
    "POST /admin/v1/peers and POST /admin/v1/sync are not tested, since they make the node fetch the URL they are given" >&2
  export MESHRELAY_ST_IN_NETNS=none
fi

# --- the node and schemathesis -----------------------------------------------
exclude=()
if [[ $MESHRELAY_ST_IN_NETNS == 1 ]]; then
  ip link set lo up
else
  exclude=(--exclude-name 'POST /admin/v1/peers' --exclude-name 'POST /admin/v1/sync')
fi

py="$venv/bin/python"
work="$(mktemp -d /tmp/meshrelay-schemathesis.XXXXXX)"
node_pid=""
st_pid=""

stop_node() {
  [[ -n $node_pid ]] || return 0
  local pid="$node_pid" status=0
  node_pid=""
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "warning: the node did not stop within 30 s of SIGTERM; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || status=$?
  echo "node exited with status $status"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $st_pid ]]; then
    kill -TERM "$st_pid" 2>/dev/null || true
    wait "$st_pid" 2>/dev/null || true
  fi
  stop_node || true
  if [[ -n $report_dir && -f $work/node.log ]]; then
    cp "$work/node.log" "$report_dir/node.log" || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

token="$("$py" -c 'import secrets; print(secrets.token_hex(24))')"

step "starting $bin serve (data in $work/data)"
mkdir -p "$work/data"
MESHRELAY_LISTEN=127.0.0.1:0 \
  MESHRELAY_ADMIN_LISTEN=127.0.0.1:0 \
  MESHRELAY_DATA_DIR="$work/data" \
  MESHRELAY_ADMIN_TOKEN="$token" \
  MESHRELAY_PUBLISH_RATE=0 \
  MESHRELAY_ALLOW_PRIVATE_PEERS=false \
  MESHRELAY_LOG_FORMAT=json \
  "$bin" serve >"$work/node.log" 2>&1 </dev/null &
node_pid=$!

# The ports were chosen by the kernel (port 0): read them from the start-up log.
ports=""
for _ in $(seq 1 600); do
  if ! kill -0 "$node_pid" 2>/dev/null; then
    echo "the node exited during start-up:" >&2
    cat "$work/node.log" >&2
    exit 1
  fi
  ports="$("$py" - "$work/node.log" <<'EOF'
import json, sys
for line in open(sys.argv[1], errors="replace"):
    try:
        f = json.loads(line).get("fields", {})
    except ValueError:
        continue
    if f.get("message") == "meshrelay node serving":
        print(f["listen"].rsplit(":", 1)[1], f["admin_listen"].rsplit(":", 1)[1])
        break
EOF
)"
  [[ -n $ports ]] && break
  sleep 0.1
done
[[ -n $ports ]] || { echo "the node did not report its listeners within 60 s" >&2; exit 1; }
read -r public_port admin_port <<<"$ports"
public="http://127.0.0.1:$public_port"
admin="http://127.0.0.1:$admin_port"

ready=""
for _ in $(seq 1 300); do
  if "$py" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "$public/readyz" 2>/dev/null; then
    ready=1
    break
  fi
  kill -0 "$node_pid" 2>/dev/null || break
  sleep 0.2
done
[[ -n $ready ]] || { echo "the node is not ready at $public/readyz" >&2; cat "$work/node.log" >&2; exit 1; }
echo "node ready: public $public, admin $admin"

cd "$work" # schemathesis and hypothesis write their state in the working directory

common=(
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
  --max-examples "$max_examples"
  --continue-on-failure
  --request-timeout 10
  --max-redirects 0
  --generation-database none
  --no-color
)
[[ -n ${MESHRELAY_ST_SEED:-} ]] && common+=(--seed "$MESHRELAY_ST_SEED")

run_st() {
  local name="$1" base="$2" schema="$3"
  shift 3
  local report=()
  if [[ -n $report_dir ]]; then
    report=(--report junit,har --report-dir "$report_dir/$name")
  fi
  step "schemathesis: the $name API ($schema, $max_examples examples per operation)"
  # In the background, so that a signal runs the trap at once.
  timeout --kill-after=10 "${MESHRELAY_ST_TIMEOUT:-900}" \
    "$venv/bin/st" run "$base$schema" --url "$base" "${common[@]}" "${report[@]}" "$@" &
  st_pid=$!
  local rc=0
  wait "$st_pid" || rc=$?
  st_pid=""
  ((rc != 124)) || echo "schemathesis did not finish within ${MESHRELAY_ST_TIMEOUT:-900} s" >&2
  return "$rc"
}

failed=()
run_st public "$public" /openapi.json || failed+=(public)
run_st admin "$admin" /admin/v1/openapi.json \
  -H "Authorization: Bearer $token" "${exclude[@]}" || failed+=(admin)

if grep -q '"level":"ERROR"\|panicked' "$work/node.log"; then
  step "errors in the node's log"
  grep '"level":"ERROR"\|panicked' "$work/node.log" | tail -n 50
fi

if ((${#failed[@]})); then
  echo "schemathesis failed for: ${failed[*]}" >&2
  exit 1
fi
echo "schemathesis: both documents conform"
