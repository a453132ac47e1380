#!/usr/bin/env bash
# Fuzz every cargo-fuzz target in fuzz/ for SECONDS each (default 30), one
# after another. Usage: .ci/fuzz.sh [SECONDS]
#
# Installs cargo-fuzz if missing (crates.io, cached in ~/.cargo/bin), builds
# all targets with nightly into their own target directory, then runs each
# from its committed seeds (fuzz/seeds/<target>/, only read) plus a scratch
# corpus in a temporary directory, so the tree never grows. Exits non-zero if
# any target crashes, printing the crashing input's path. Runs unattended (CI=true).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-30}"
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "usage: $0 [SECONDS]   (a whole number of seconds per target, default 30)" >&2
  exit 2
fi

export CARGO_TARGET_DIR="${MESHRELAY_FUZZ_TARGET_DIR:-$HOME/.cache/meshrelay-fuzz-target}"
export CARGO_TERM_COLOR=never
export PATH="$HOME/.cargo/bin:$PATH"
toolchain="${MESHRELAY_FUZZ_TOOLCHAIN:-nightly}"

step() { printf '\n==> %s\n' "$*"; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  step "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
  step "installing the $toolchain toolchain"
  rustup toolchain install "$toolchain" --profile minimal
fi
cargo fuzz --version
rustup run "$toolchain" rustc --version

step "building the fuzz targets"
cargo "+$toolchain" fuzz build --target-dir "$CARGO_TARGET_DIR"

scratch="$(mktemp -d "${TMPDIR:-/tmp}/meshrelay-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

mapfile -t targets < <(cargo "+$toolchain" fuzz list)
failed=()
for target in "${targets[@]}"; do
  step "fuzzing $target for ${seconds}s"
  mkdir -p "$scratch/$target"
  seeds="fuzz/seeds/$target"
  [[ -d $seeds ]] || seeds=""
  log="$scratch/$target.log"
  # The first corpus directory is the one libFuzzer adds to: the scratch one.
  # Crashes are written to fuzz/artifacts/<target>/ (ignored by git).
  set +e
  cargo "+$toolchain" fuzz run --target-dir "$CARGO_TARGET_DIR" "$target" \
    "$scratch/$target" ${seeds:+"$seeds"} -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 2>&1 |
    tee "$log" |
    grep -E 'INITED|DONE|^Done [0-9]+ runs|^stat::|panicked|^==[0-9]+==|^SUMMARY|Test unit written'
  status=("${PIPESTATUS[@]}")
  set -e
  rc="${status[0]}"
  if ((rc != 0)); then
    crash="$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -n 1 | sed 's/^Test unit written to //' || true)"
    echo "FAIL: $target exited $rc; crashing input: ${crash:-(none written; see the log above)}" >&2
    tail -n 60 "$log" >&2
    failed+=("$target")
  else
    echo "ok: $target"
  fi
done

echo
if ((${#failed[@]})); then
  echo "fuzzing found crashes in: ${failed[*]}" >&2
  echo "reproduce: cargo +$toolchain fuzz run <target> <crashing input>; minimize: cargo +$toolchain fuzz tmin <target> <crashing input>" >&2
  exit 1
fi
echo "all ${#targets[@]} fuzz targets ran ${seconds}s each without a crash"
