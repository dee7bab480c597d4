#!/usr/bin/env bash
# buf lint, buf format and buf breaking over proto/.
# Breaking changes are judged against the previous commit of main: on main
# itself that is HEAD~1 (never main against itself); on another branch it is
# main's tip. A commit that renumbers a field fails here.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
buf=$(scripts/deps.sh --print-buf)

"$buf" lint
echo "proto-check: buf lint ok"
"$buf" format -d --exit-code
echo "proto-check: buf format ok"

against=""
if git rev-parse --verify -q main >/dev/null; then
  if [ "$(git rev-parse HEAD)" = "$(git rev-parse main)" ]; then
    if git rev-parse --verify -q 'main~1' >/dev/null; then against='main~1'; fi
  else
    against=main
  fi
fi
if [ -z "$against" ]; then
  echo "proto-check: no earlier commit of main to compare with; buf breaking skipped"
  exit 0
fi
if ! git cat-file -e "$against:proto" 2>/dev/null; then
  echo "proto-check: $against has no proto/ yet; buf breaking skipped"
  exit 0
fi
ref=$(git rev-parse "$against")
"$buf" breaking proto --against ".git#ref=$ref,subdir=proto"
echo "proto-check: buf breaking ok (against $against, ${ref:0:12})"
