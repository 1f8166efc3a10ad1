#!/usr/bin/env bash
# Deploy slimserve on Azure Functions (Linux, Python 3.12, Consumption plan) from an app root built by
#   slimserve bundle ARTIFACT --target azure-functions --out dist/azure
# One function app: `http` (OIP v2 at /v2/..., function key), `openai` (/v1/embeddings, /v1/models, its own
# function key), `on_blob` (new blobs in the input container), `on_queue` (messages on the input queue);
# results under SLIMSERVE_OUTPUT in the app's storage account.
#
#   RESOURCE_GROUP=rg APP=slimserve-app STORAGE_ACCOUNT=slimservesa infra/azure/deploy.sh dist/azure
#
# Needs the Azure CLI (logged in) and Azure Functions Core Tools (`func`, remote build of requirements.txt).
# Every SLIMSERVE_* variable set in the caller's environment becomes an app setting (README: Configuration).
# Failed blobs land in the `webjobs-blobtrigger-poison` queue, failed messages in `<queue>-poison`, after
# host.json's maxDequeueCount tries: watch both. On a Flex Consumption plan the blob trigger must use an
# Event Grid source instead of polling (blob_trigger(source=func.BlobSource.EVENT_GRID) + a subscription).
set -euo pipefail

# A remote SLIMSERVE_ARTIFACT (s3://, gs://, Blob) is pinned by its manifest's sha256, which `slimserve
# optimize` and `slimserve bundle` print: ARTIFACT_SHA256=<hex>, or a #sha256=<hex> suffix on the prefix.
if [[ -n "${ARTIFACT_SHA256:-}" ]]; then export SLIMSERVE_ARTIFACT_SHA256=$ARTIFACT_SHA256; fi
if [[ "${SLIMSERVE_ARTIFACT:-}" =~ ^(s3|gs|azure|https):// && "$SLIMSERVE_ARTIFACT" != *"#sha256="* && -z "${SLIMSERVE_ARTIFACT_SHA256:-}" \
      && "${SLIMSERVE_ALLOW_UNPINNED:-}" != "true" ]]; then
  echo "SLIMSERVE_ARTIFACT $SLIMSERVE_ARTIFACT is not pinned: set ARTIFACT_SHA256 (printed by slimserve optimize/bundle)" >&2
  exit 2
fi

APP_ROOT=${1:?usage: deploy.sh APP_ROOT (from slimserve bundle --target azure-functions)}
: "${RESOURCE_GROUP:?set RESOURCE_GROUP}" "${APP:?set APP}" "${STORAGE_ACCOUNT:?set STORAGE_ACCOUNT}"
LOCATION=${LOCATION:-westeurope}
export SLIMSERVE_INPUT_CONTAINER=${SLIMSERVE_INPUT_CONTAINER:-incoming}
export SLIMSERVE_INPUT_QUEUE=${SLIMSERVE_INPUT_QUEUE:-slimserve-requests}
export SLIMSERVE_OUTPUT=${SLIMSERVE_OUTPUT:-azure://results/}

for file in function_app.py host.json requirements.txt; do
  [[ -f "$APP_ROOT/$file" ]] || { echo "$APP_ROOT is no azure-functions app root (no $file)" >&2; exit 2; }
done
[[ "$SLIMSERVE_OUTPUT" == azure://* ]] || { echo "SLIMSERVE_OUTPUT must be azure://container/prefix here" >&2; exit 2; }
output_container=${SLIMSERVE_OUTPUT#azure://}
output_container=${output_container%%/*}

az group create --name "$RESOURCE_GROUP" --location "$LOCATION" --output none
az storage account create --name "$STORAGE_ACCOUNT" --resource-group "$RESOURCE_GROUP" --location "$LOCATION" \
  --sku Standard_LRS --kind StorageV2 --min-tls-version TLS1_2 --allow-blob-public-access false --output none
connection=$(az storage account show-connection-string --name "$STORAGE_ACCOUNT" --resource-group "$RESOURCE_GROUP" --output tsv)
for container in "$SLIMSERVE_INPUT_CONTAINER" "$output_container"; do
  az storage container create --name "$container" --connection-string "$connection" --output none
done
# The host makes the poison queue on first use; making it now lets an alert watch it from day one.
for queue in "$SLIMSERVE_INPUT_QUEUE" "$SLIMSERVE_INPUT_QUEUE-poison"; do
  az storage queue create --name "$queue" --connection-string "$connection" --output none
done

az functionapp create --name "$APP" --resource-group "$RESOURCE_GROUP" --storage-account "$STORAGE_ACCOUNT" \
  --consumption-plan-location "$LOCATION" --os-type Linux --runtime python --runtime-version 3.12 \
  --functions-version 4 --output none
mapfile -t settings < <(env | grep '^SLIMSERVE_' | sort)
az functionapp config appsettings set --name "$APP" --resource-group "$RESOURCE_GROUP" --settings "${settings[@]}" --output none

(cd "$APP_ROOT" && func azure functionapp publish "$APP" --python)

# The function key is a secret: fetch it where it is needed rather than printing it into a CI log.
echo "https://$APP.azurewebsites.net  (key: az functionapp function keys list -g $RESOURCE_GROUP -n $APP --function-name http;"
echo "  /v1: --function-name openai, or a host key for both: az functionapp keys list -g $RESOURCE_GROUP -n $APP)"
echo "slimserve invoke https://$APP.azurewebsites.net MODEL --api-key-header x-functions-key --api-key \"\$KEY\" ..."
