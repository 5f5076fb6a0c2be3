#!/usr/bin/env bash
# Deploys a model on hokusai-serve, waits until it serves, predicts and prints the prediction.
#
#   HOKUSAI_URL=http://127.0.0.1:8001 HOKUSAI_API_KEY=hk_dev_… examples/curl/deploy-and-predict.sh
#
# Optional: HOKUSAI_MODEL_ID (sentiment), HOKUSAI_REPOSITORY, HOKUSAI_TASK, HOKUSAI_TIMEOUT
# (seconds to wait for the deployment, 180). Needs bash, curl and python3 (to read JSON).
# Exits non-zero on any failure; the key is never printed.
set -euo pipefail

url=${HOKUSAI_URL:?set HOKUSAI_URL, e.g. http://127.0.0.1:8001}
url=${url%/}
[ -n "${HOKUSAI_API_KEY:-}" ] || { echo "error: set HOKUSAI_API_KEY" >&2; exit 2; }
model=${HOKUSAI_MODEL_ID:-sentiment}
repository=${HOKUSAI_REPOSITORY:-distilbert/distilbert-base-uncased-finetuned-sst-2-english}
task=${HOKUSAI_TASK:-text-classification}
timeout=${HOKUSAI_TIMEOUT:-180}

body=$(mktemp)
auth=$(mktemp) # the key reaches curl through a 0600 file, never its command line
trap 'rm -f "$body" "$auth"' EXIT
chmod 600 "$auth"
printf 'Authorization: Bearer %s\n' "$HOKUSAI_API_KEY" >"$auth"

# call METHOD PATH [JSON] -> prints the HTTP status; the body lands in $body
call() {
  local args=(--silent --show-error --max-time 30 --header "@$auth" --output "$body"
              --write-out '%{http_code}' --request "$1")
  [ $# -ge 3 ] && args+=(--header 'Content-Type: application/json' --data "$3")
  curl "${args[@]}" "$url$2"
}
# field EXPR -> a value of the JSON in $body (EXPR is Python over `d`)
field() { local expr=$1; shift; python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($expr)" "$body" "$@"; }
fail() { echo "error: $*" >&2; [ -s "$body" ] && cat "$body" >&2 && echo >&2; exit 1; }

# 1. Deploy: 202 Accepted with the new deployment.
spec=$(printf '{"repository":"%s","task":"%s"}' "$repository" "$task")
status=$(call POST "/api/v1/models/$model/deployments" "$spec")
[ "$status" = 202 ] || fail "deploy answered $status"
deployment=$(field 'd["deployment"]["id"]')
echo "deployment $deployment accepted"

# 2. Poll the model's status until our deployment serves (and stop if it failed).
deadline=$((SECONDS + timeout))
while :; do
  status=$(call GET "/api/v1/models/$model/status")
  [ "$status" = 200 ] || fail "status answered $status"
  [ "$(field 'd["deployment_id"] == sys.argv[2] and d["status"]' "$deployment")" = serving ] && break
  status=$(call GET "/api/v1/deployments/$deployment")
  [ "$status" = 200 ] || fail "deployment answered $status"
  case "$(field 'd["status"]')" in
    failed | rollback_failed | stopped) fail "deployment $deployment ended $(field 'd["status"]'): $(field 'd["error_message"]')" ;;
  esac
  [ "$SECONDS" -lt "$deadline" ] || fail "deployment $deployment not serving after ${timeout}s"
  sleep 1
done
echo "deployment $deployment serving"

# 3. Predict; a cold endpoint answers 503 MODEL_NOT_READY with Retry-After, so retry a little.
for _ in 1 2 3 4 5 6 7 8 9 10; do
  status=$(call POST "/api/v1/models/$model/predict" '{"inputs":"I love this movie"}')
  [ "$status" = 503 ] || break
  sleep 1
done
[ "$status" = 200 ] || fail "predict answered $status"
echo "prediction: $(field 'json.dumps(d["predictions"])')"
