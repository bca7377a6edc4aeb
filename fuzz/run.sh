#!/usr/bin/env bash
# Runs one fuzz target: ./run.sh <target> [seconds] [extra libFuzzer args...]
# New inputs go to corpus-local/<target> (gitignored); corpus/<target> holds the committed seeds.
# The libFuzzer log is written to logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")"
target=$1; secs=${2:-300}; shift $(( $# >= 2 ? 2 : 1 ))
case $target in
  signature_headers|mapping_compile) max_len=16384 ;;
  *) max_len=65536 ;;
esac
dict=(); [[ -f dicts/$target.dict ]] && dict=(-dict="dicts/$target.dict")
mkdir -p "corpus-local/$target" logs artifacts
exec cargo +nightly fuzz run "$target" "corpus-local/$target" "corpus/$target" -- \
  -max_total_time="$secs" -rss_limit_mb=2048 -max_len="$max_len" -timeout=10 -print_final_stats=1 \
  "${dict[@]}" "$@" > "logs/$target.log" 2>&1
