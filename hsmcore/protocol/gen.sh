#!/usr/bin/env bash
# Regenerates pb/hsmsh.pb.go from hsmsh.proto with protoc (Debian's
# protobuf-compiler) and protoc-gen-go of the version go.mod names, so the
# generated code matches the runtime it is compiled against. With --check
# it regenerates into a temporary folder and fails if the committed file
# differs (CI runs that).
set -euo pipefail
cd "$(dirname "$0")"
command -v protoc >/dev/null || { echo "protoc is missing: apt-get install protobuf-compiler" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
out=.
[ "${1:-}" = --check ] && out=$tmp/out && mkdir -p "$out/pb"
protoc --plugin=protoc-gen-go="$tmp/protoc-gen-go" --go_out="$out" \
  --go_opt=module=github.com/hsmsh/hsmsh/hsmcore/protocol --proto_path=. hsmsh.proto
if [ "${1:-}" = --check ]; then
  if ! diff -u pb/hsmsh.pb.go "$out/pb/hsmsh.pb.go"; then
    echo "pb/hsmsh.pb.go is not what hsmsh.proto generates: run go generate ./hsmcore/protocol and commit it" >&2
    exit 1
  fi
fi
