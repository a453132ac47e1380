#!/usr/bin/env bash
# The deployment files' checks: systemd-analyze verify of the shipped units,
# ansible-lint, a syntax check of the example playbook, and a real run of the
# role (tests/converge.sh). Needs ansible-core and ansible-lint on PATH, root,
# and a meshrelay binary:
#   ansible/tests/check.sh path/to/meshrelay
set -euo pipefail
bin="$(realpath "${1:?usage: check.sh path/to/meshrelay}")"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

echo "--- systemd-analyze verify systemd/*"
root="$(mktemp -d /tmp/meshrelay-units.XXXXXX)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/local/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
install -m 0755 "$bin" "$root/usr/local/bin/meshrelay"
# ExecReload's kill, which verify looks for under the root too.
mkdir -p "$root/usr/bin" && install -m 0755 /usr/bin/kill "$root/usr/bin/kill"
cp ../systemd/meshrelay.service "$root/etc/systemd/system/"
systemd-analyze verify --root="$root" meshrelay.service
systemd-analyze security --offline=yes --root="$root" --threshold=20 meshrelay.service | tail -n 1

echo "--- ansible-lint"
ansible-lint

echo "--- ansible-playbook --syntax-check"
ansible-playbook --syntax-check site.yml
ansible-playbook --syntax-check -i localhost, tests/converge.yml

tests/converge.sh "$bin"
