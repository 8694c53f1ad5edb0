#!/usr/bin/env bash
# Sorts the CPU samples of a profile (hsmsh bench --cpuprofile F) into the
# categories BENCHMARKS.md reports for the sign path, and prints each
# one's share as a markdown table. Each sample's stack goes to the first
# category that any of its frames matches, in the order below; a sample
# that matches none is put by its innermost hsmsh frame (the client
# library and HSMs, or the command layer and bench harness), else "other
# runtime".
#
#   bench/profile-categories.sh BINARY PROFILE
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: bench/profile-categories.sh BINARY PROFILE" >&2; exit 2; }
go tool pprof -traces "$1" "$2" 2>/dev/null | awk '
function unit(v) {   # "10ms", "1.20s", "500us" -> milliseconds
  if (v ~ /ms$/) return v + 0
  if (v ~ /us$/) return (v + 0) / 1000
  if (v ~ /ns$/) return (v + 0) / 1e6
  if (v ~ /s$/) return (v + 0) * 1000
  return v + 0
}
function classify(s) {
  if (s ~ /crypto\/ecdsa\.|fips140\/ecdsa\./) return "ECDSA signing itself"
  if (s ~ /google\.golang\.org\/protobuf|hsmcore\/protocol\.(Encode|Decode)/) return "protocol buffers (encode/decode)"
  if (s ~ /encoding\/json\./) return "JSON"
  if (s ~ /hsmcore\/authsession\./) return "session envelope (AES-GCM, EKT)"
  if (s ~ /crypto\/tls\./) return "TLS record layers"
  if (s ~ /runtime\.(mallocgc|gcBgMarkWorker|gcAssistAlloc|bgsweep|bgscavenge|gcDrain|growslice|newobject|makeslice)/) return "GC and allocation"
  if (s ~ /hsmsh\/hsmcore\//) return "client library and HSM logic"
  if (s ~ /hsmsh\/(commands|bench)\./) return "command layer and bench harness"
  return "scheduler, syscalls, other runtime"
}
/^-+\+-+/ { if (stack != "") { c = classify(stack); tot[c] += val; all += val }; stack = ""; next }
/^ +[0-9.]+(ms|s|us|ns) / { val = unit($1); stack = $2 " "; next }
stack != "" || val != "" { if (NF > 0) stack = stack $1 " " }
END {
  if (stack != "") { c = classify(stack); tot[c] += val; all += val }
  print "| category | share of CPU |"
  print "|---|---|"
  n = split("ECDSA signing itself|protocol buffers (encode/decode)|JSON|session envelope (AES-GCM, EKT)|TLS record layers|GC and allocation|client library and HSM logic|command layer and bench harness|scheduler, syscalls, other runtime", order, "|")
  for (i = 1; i <= n; i++) if (tot[order[i]] > 0) printf "| %s | %.1f%% |\n", order[i], 100 * tot[order[i]] / all
}'
