#!/usr/bin/env bash
# Runs the Ansible role for real against localhost into a throw-away root,
# twice: the second run must change nothing. Then checks the installed units
# with systemd-analyze and starts a node, as the meshrelay user, from the
# installed binary and settings, and asks it for /healthz.
#   ansible/tests/converge.sh path/to/meshrelay
set -euo pipefail
bin="$(realpath "${1:?usage: converge.sh path/to/meshrelay}")"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
root="$(mktemp -d /tmp/meshrelay-root.XXXXXX)"
chmod 0755 "$root"
node_pid=""
cleanup() {
  [[ -n $node_pid ]] && kill "$node_pid" 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
admin_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
admin_token="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
args=(-i localhost, tests/converge.yml
  -e "meshrelay_root=$root" -e "meshrelay_binary_src=$bin"
  -e "ansible_python_interpreter={{ ansible_playbook_python }}"
  -e "meshrelay_listen=127.0.0.1:$port" -e "meshrelay_admin_listen=127.0.0.1:$admin_port"
  -e "meshrelay_public_url=http://127.0.0.1:$port"
  -e "vault_meshrelay_admin_token=$admin_token")

echo "--- first run"
ansible-playbook "${args[@]}" | tee "$root.first.log"
echo "--- second run: nothing may change"
ansible-playbook "${args[@]}" | tee "$root.second.log"
recap="$(grep -E '^localhost +:' "$root.second.log")"
rm -f "$root.first.log" "$root.second.log"
if ! grep -q 'changed=0 ' <<<"$recap" || ! grep -q 'failed=0 ' <<<"$recap"; then
  echo "the second run was not a no-op: $recap" >&2
  exit 1
fi

echo "--- installed files"
stat -c '%A %U:%G %n' "$root/usr/local/bin/meshrelay" "$root/etc/meshrelay" \
  "$root/etc/meshrelay/meshrelay.toml" "$root/var/lib/meshrelay"
[[ "$(stat -c '%U %a' "$root/var/lib/meshrelay")" == "meshrelay 700" ]]
[[ "$(stat -c '%G %a' "$root/etc/meshrelay/meshrelay.toml")" == "meshrelay 640" ]]

echo "--- systemd-analyze verify of the installed units"
mkdir -p "$root/usr/lib/systemd" "$root/usr/bin"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
# ExecReload's kill, which verify looks for under the root too.
install -m 0755 /usr/bin/kill "$root/usr/bin/kill"
systemd-analyze verify --root="$root" meshrelay.service
rm -rf "$root/usr/lib/systemd" "$root/usr/bin/kill"

echo "--- a node from the installed settings, as the meshrelay user"
setpriv --reuid=meshrelay --regid=meshrelay --clear-groups -- "$root/usr/local/bin/meshrelay" serve \
  --config "$root/etc/meshrelay/meshrelay.toml" 2>"$root/node.log" &
node_pid=$!
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/healthz"
echo
info="$(curl -fsS "http://127.0.0.1:$port/v1/info")"
echo "$info"
grep -q "http://127.0.0.1:$port" <<<"$info"
# The rendered preference reached the node.
curl -fsS "http://127.0.0.1:$port/.well-known/meshrelay" | grep -q 'plural/\*'
[[ -s "$root/var/lib/meshrelay/node.key" ]]
# The admin listener takes the token from the vault variable, and only it.
code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/admin/v1/stats")"
[[ $code == 401 ]] || { echo "admin API without a token answered $code" >&2; exit 1; }
curl -fsS -H "Authorization: Bearer $admin_token" "http://127.0.0.1:$admin_port/admin/v1/stats" | grep -q '"backend":"sqlite"'
[[ ! -e "$root/var/lib/meshrelay/admin.token" ]]
kill -TERM "$node_pid"
wait "$node_pid"  # SIGTERM drains and exits 0
node_pid=""
echo "role converged twice (second run: no changes) and the node it installed served /healthz and its admin API"
