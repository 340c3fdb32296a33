#!/usr/bin/env bash
# Runs the README's quick start exactly as written: the ```sh block after the
# `<!-- quickstart: ... -->` marker, in a new empty directory, with the rsvault binary of this build
# on PATH. Exits non-zero if any command of the block fails (the block ends with a `diff` of the
# backed-up and the restored directory).
#   tests/quickstart.sh [path/to/rsvault]      (default: rsvault from PATH)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -ge 1 ]; then
  PATH="$(cd "$(dirname "$1")" && pwd):$PATH"
fi
command -v rsvault > /dev/null || { echo "rsvault is not on PATH" >&2; exit 1; }
block="$(awk '/<!-- quickstart:/ {m = 1; next} m && /^```sh$/ {inb = 1; next} inb && /^```$/ {exit} inb {print}' "$repo/README.md")"
[ -n "$block" ] || { echo "no quick start block in README.md" >&2; exit 1; }
# The block serves on the default port: say so plainly if something else has it.
if curl -sk -o /dev/null https://127.0.0.1:8443/ 2> /dev/null; then
  echo "port 8443 is in use; the quick start needs it" >&2
  exit 1
fi
work="$(mktemp -d)"
cd "$work"
# The block starts the server in the background; end it even when a command fails.
status=0
bash -euo pipefail -c "trap 'kill \$(jobs -p) 2> /dev/null || true' EXIT
$block" || status=$?
if [ "$status" -ne 0 ]; then
  echo "quick start failed ($status); server log:" >&2
  cat demo/serve.log >&2 2> /dev/null || true
fi
rm -rf "$work"
exit "$status"
