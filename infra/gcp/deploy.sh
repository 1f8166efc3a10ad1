#!/usr/bin/env bash
# Deploy slimserve on Cloud Functions (gen2) from a source folder built by
#   slimserve bundle ARTIFACT --target gcp-functions --out dist/gcp
# Two functions from the same source: NAME-http (OIP v2 over HTTP, IAM-authenticated) and NAME-batch
# (one inference per object finalized in INPUT_BUCKET, results under SLIMSERVE_OUTPUT).
#
#   PROJECT=my-project INPUT_BUCKET=my-inputs SLIMSERVE_OUTPUT=gs://my-results/out infra/gcp/deploy.sh dist/gcp
#
# Every SLIMSERVE_* variable set in the caller's environment reaches both functions (README: Configuration).
# Before the first deploy: enable cloudfunctions, run, cloudbuild, eventarc, artifactregistry and pubsub;
# grant the Cloud Storage service agent roles/pubsub.publisher (GCS events travel through Pub/Sub); give
# SERVICE_ACCOUNT roles/storage.objectViewer on INPUT_BUCKET and roles/storage.objectUser on the output
# bucket (a redelivered event overwrites its result, which needs delete) and roles/eventarc.eventReceiver.
# Callers of NAME-http need roles/run.invoker: `slimserve invoke URL MODEL --bearer "$(gcloud auth print-identity-token)"`.
set -euo pipefail

# A remote SLIMSERVE_ARTIFACT (s3://, gs://, Blob) is pinned by its manifest's sha256, which `slimserve
# optimize` and `slimserve bundle` print: ARTIFACT_SHA256=<hex>, or a #sha256=<hex> suffix on the prefix.
if [[ -n "${ARTIFACT_SHA256:-}" ]]; then export SLIMSERVE_ARTIFACT_SHA256=$ARTIFACT_SHA256; fi
if [[ "${SLIMSERVE_ARTIFACT:-}" =~ ^(s3|gs|azure|https):// && "$SLIMSERVE_ARTIFACT" != *"#sha256="* && -z "${SLIMSERVE_ARTIFACT_SHA256:-}" \
      && "${SLIMSERVE_ALLOW_UNPINNED:-}" != "true" ]]; then
  echo "SLIMSERVE_ARTIFACT $SLIMSERVE_ARTIFACT is not pinned: set ARTIFACT_SHA256 (printed by slimserve optimize/bundle)" >&2
  exit 2
fi

SOURCE=${1:?usage: deploy.sh SOURCE_DIR (from slimserve bundle --target gcp-functions)}
: "${PROJECT:?set PROJECT}" "${INPUT_BUCKET:?set INPUT_BUCKET}" "${SLIMSERVE_OUTPUT:?set SLIMSERVE_OUTPUT (gs://bucket/prefix)}"
REGION=${REGION:-us-central1}
NAME=${NAME:-slimserve}
MEMORY=${MEMORY:-2Gi}          # the model, onnxruntime's arena and one request; GCF gen2 allows up to 32Gi
HTTP_TIMEOUT=${HTTP_TIMEOUT:-300s}
BATCH_TIMEOUT=${BATCH_TIMEOUT:-540s}   # the ceiling for event-driven functions
SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-}

[[ -f "$SOURCE/main.py" && -f "$SOURCE/requirements.txt" ]] || { echo "$SOURCE is no gcp-functions bundle (main.py, requirements.txt)" >&2; exit 2; }

# An env-vars file, not --set-env-vars: values may hold commas (SLIMSERVE_ARTIFACT lists several).
env_file=$(mktemp)
trap 'rm -f "$env_file"' EXIT
while IFS='=' read -r key value; do
  printf "%s: '%s'\n" "$key" "${value//\'/\'\'}" >> "$env_file"
done < <(env | grep '^SLIMSERVE_' | sort)

common=(--gen2 --runtime=python312 --project="$PROJECT" --region="$REGION" --source="$SOURCE"
        --memory="$MEMORY" --env-vars-file="$env_file" --no-allow-unauthenticated)
if [[ -n "$SERVICE_ACCOUNT" ]]; then common+=(--service-account="$SERVICE_ACCOUNT"); fi

gcloud functions deploy "$NAME-http" "${common[@]}" \
  --entry-point=http --trigger-http --timeout="$HTTP_TIMEOUT"

# --retry: a failed invocation is redelivered (with backoff, for up to 24 h). The function fails only on
# what a retry can fix (storage, endpoint); a corrupt input is acknowledged and filed as <key>.error.json.
# Results in INPUT_BUCKET under SLIMSERVE_OUTPUT are skipped, but a separate output bucket costs no events.
gcloud functions deploy "$NAME-batch" "${common[@]}" \
  --entry-point=on_storage_event --timeout="$BATCH_TIMEOUT" --retry \
  --trigger-event-filters="type=google.cloud.storage.object.v1.finalized" \
  --trigger-event-filters="bucket=$INPUT_BUCKET" \
  ${SERVICE_ACCOUNT:+--trigger-service-account="$SERVICE_ACCOUNT"}

gcloud functions describe "$NAME-http" --gen2 --project="$PROJECT" --region="$REGION" --format='value(serviceConfig.uri)'
