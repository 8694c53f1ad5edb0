#!/bin/sh
# Load balancing scales with the number of HSMs: the client library spreads
# operations over every HSM that answers, so a cluster of 6 signs about
# three times as fast as a cluster of 2. With a profile, each simulated HSM
# serves at a real HSM type's published rate, and the figures come out as
# AWS's table for EC P-256 sign: 500 / 750 / 1,500 ops/s on hsm1.medium
# clusters of 2 / 3 / 6 HSMs, and 3,000 / 4,500 / 7,000 on hsm2m.medium.
#
# Run: sh demos/load-balancing.sh          (about 30 s; from the repository,
#      without an installed hsmsh, it builds one with go)
#      HSMSH=/path/to/hsmsh sh demos/load-balancing.sh
# DURATION (default 3s) is how long each row runs.
set -e
if [ -z "$HSMSH" ]; then
	if command -v hsmsh >/dev/null 2>&1; then
		HSMSH=hsmsh
	else
		# Not installed: build it from the repository this script is in.
		dir=$(cd "$(dirname "$0")/.." && pwd)
		tmp=$(mktemp -d)
		trap 'rm -rf "$tmp"' EXIT
		(cd "$dir" && go build -o "$tmp/hsmsh" ./cmd/hsmsh)
		HSMSH="$tmp/hsmsh"
	fi
fi
DURATION=${DURATION:-3s}
for profile in hsm1.medium hsm2m.medium; do
	echo "== $profile: ECDSA P-256 sign, 24 concurrent callers"
	$HSMSH bench --op ecdsa-p256-sign --profile "$profile" --hsms 1,2,3,6 \
		--concurrency 24 --duration "$DURATION"
done
