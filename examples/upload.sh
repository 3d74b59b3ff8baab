#!/usr/bin/env bash
# Uploads packages through presigned POSTs, the way any S3 client would,
# then asks the registry to complete each (needed when the server presigns
# for an S3 object store; harmless otherwise) and prints the upload:
#   examples/upload.sh examples/dist/network.tar.gz [more packages...]
# STACKYARD_URL picks the server (default http://127.0.0.1:8080) and
# STACKYARD_TOKEN is the token (publisher or more) that asks for the URLs.
set -euo pipefail
server=${STACKYARD_URL:-http://127.0.0.1:8080}
for package in "$@"; do
  auth="authorization: Bearer ${STACKYARD_TOKEN:?set STACKYARD_TOKEN to a publisher token}"
  presigned=$(curl -sSf -X POST "$server/presigned_url" -H 'content-type: application/json' -H "$auth" \
    -d "{\"filename\": \"$(basename "$package")\"}")
  id=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["upload_id"])' <<<"$presigned")
  url=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["url"])' <<<"$presigned")
  fields=()
  while IFS= read -r field; do fields+=(-F "$field"); done < <(
    python3 -c 'import json, sys; [print(f"{k}={v}") for k, v in json.load(sys.stdin)["fields"].items()]' <<<"$presigned")
  curl -sS -o /dev/null "${fields[@]}" -F "file=@$package" "$url"
  curl -sS -X POST -H "$auth" "$server/uploads/$id/complete"
  echo
done
