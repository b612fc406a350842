#!/usr/bin/env bash
# moat's quickstart: builds moat and the sample scorer image, starts `moat serve` in a home
# of its own, creates an endpoint with one deployment (blue) of the seed's model-1, and scores
# the sample request. Run it again at will: it reuses what is already there.
set -euo pipefail
cd "$(dirname "$0")"
root=$PWD
export MOAT_HOME="${MOAT_HOME:-$root/.moat-quickstart}"
ENDPOINT=quickstart-ep
moat="$root/target/release/moat"

# Docker's engine running, protoc for the build, nftables: installed and started as root on
# Debian or Ubuntu, else named in one line.
bash packaging/setup-host.sh
echo "==> building moat (cargo build --release)" >&2
cargo build --quiet --release --locked -p moat
echo "==> building the sample scorer image moat-sample-scorer:latest" >&2
examples/sample-scorer/build-image.sh

if ! "$moat" online-endpoint list >/dev/null 2>&1; then
  echo "==> starting moat serve (home $MOAT_HOME, log $MOAT_HOME/moat.log)" >&2
  mkdir -p "$MOAT_HOME"
  nohup "$moat" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --log-file "$MOAT_HOME/moat.log" >/dev/null 2>&1 &
  echo $! > "$MOAT_HOME/serve.pid"
  for _ in $(seq 1 100); do
    "$moat" online-endpoint list >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$moat" online-endpoint list >/dev/null
fi

if ! "$moat" online-endpoint show -n "$ENDPOINT" >/dev/null 2>&1; then
  echo "==> creating endpoint $ENDPOINT" >&2
  "$moat" online-endpoint create --name "$ENDPOINT" -f examples/model-1/endpoint.yml >/dev/null
fi
if ! "$moat" online-deployment show -n blue -e "$ENDPOINT" >/dev/null 2>&1; then
  echo "==> creating deployment blue (waits until its container is ready)" >&2
  "$moat" online-deployment create --name blue --endpoint "$ENDPOINT" \
    -f examples/model-1/blue-deployment.yml --all-traffic >/dev/null
fi

echo "==> scoring examples/model-1/sample-request.json" >&2
"$moat" online-endpoint invoke --name "$ENDPOINT" --request-file examples/model-1/sample-request.json
echo
scoring_uri=$("$moat" online-endpoint show -n "$ENDPOINT" -o tsv --query scoring_uri)
cat <<EOT

scoring_uri: $scoring_uri

Get the key and score with curl:
  export MOAT_HOME=$MOAT_HOME
  KEY=\$($moat online-endpoint get-credentials -n $ENDPOINT -o tsv --query primaryKey)
  curl -X POST "$scoring_uri" -H "Authorization: Bearer \$KEY" -H 'Content-Type: application/json' --data @examples/model-1/sample-request.json

Stop the daemon (its containers keep running and are adopted by the next start; it drains
for shutdown_delay_s, 10 s, unless told twice):
  kill \$(cat $MOAT_HOME/serve.pid)
Remove everything it made first, if you are done:
  $moat online-endpoint delete -n $ENDPOINT --yes
EOT
