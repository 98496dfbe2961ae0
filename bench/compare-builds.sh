#!/usr/bin/env bash
# `npm run bench:compare -- REF`: the receive, backup and restore benches of an earlier commit
# REF and of this tree, one after the other on the same machine, each against its own peer
# (pg_receivewal, pgBackRest) in the same run. The order alternates bench by bench (REF first,
# then this tree first...), so a machine that slows down over the hour does not always favour
# the same build; each run's peer is the control: a change in walvault's median that the peer
# shows too is the machine, not the code.
#
# Both builds use this tree's node_modules (the lock file's packages). Results land in each
# tree's bench/results/; the tables each bench prints are the figures to quote.
#
#   BENCH_COMPARE        which benches, default receive,backup,restore
#   BENCH_RECEIVE_CASES  default live,tls,s3-live (the rows of issue 15's table)
#   BENCH_DATABASES      default real (random text and numbers, bench-data.ts)
#   BENCH_ROUNDS         default 3
set -euo pipefail
ref="${1:?usage: npm run bench:compare -- <commit>   (the build to compare this tree with)}"
here="$(cd "$(dirname "$0")/.." && pwd)"
sha="$(git -C "$here" rev-parse --verify --quiet "$ref^{commit}")" || {
  echo "bench:compare: $ref is not a commit of this repository; name one from git log" >&2
  exit 2
}
base="/tmp/walvault-bench-${sha:0:10}"
if [ ! -f "$base/dist/bench/restore-bench.js" ]; then
  rm -rf "$base"
  mkdir -p "$base"
  git -C "$here" archive "$sha" | tar -x -C "$base"
  ln -s "$here/node_modules" "$base/node_modules"
  (cd "$base" && npx tsc -p tsconfig.json)
fi
(cd "$here" && npx tsc -p tsconfig.json)

export BENCH_RECEIVE_CASES="${BENCH_RECEIVE_CASES:-live,tls,s3-live}"
export BENCH_DATABASES="${BENCH_DATABASES:-real}"

run() { # tree bench
  echo
  echo "=== $2 bench, $([ "$1" = "$here" ] && echo "this tree ($(git -C "$here" rev-parse --short HEAD))" || echo "${sha:0:10}") ==="
  (cd "$1" && node "dist/bench/$2-bench.js")
}
# The backup and restore benches' peer is pgBackRest: a missing one stops here, not after an hour.
benches="${BENCH_COMPARE:-receive,backup,restore}"
if [[ ",$benches," =~ ,(backup|restore), ]] && [ ! -x /usr/bin/pgbackrest ]; then
  echo "bench:compare: pgBackRest, the peer of the backup and restore benches, is not installed: apt-get install -y pgbackrest" >&2
  exit 2
fi
first_base=1
for bench in ${benches//,/ }; do
  if [ "$first_base" = 1 ]; then run "$base" "$bench"; run "$here" "$bench"; first_base=0
  else run "$here" "$bench"; run "$base" "$bench"; first_base=1; fi
done
