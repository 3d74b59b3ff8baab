#!/usr/bin/env bash
# Builds one package per folder of examples/packages into examples/dist:
# tarballs for most, a zip for monitoring, to show both formats.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/dist"
mkdir -p "$out"
for dir in "$here"/packages/*/; do
  name=$(basename "$dir")
  if [ "$name" = monitoring ]; then
    (cd "$dir" && python3 -m zipfile -c "$out/$name.zip" ./*)
  else
    tar -czf "$out/$name.tar.gz" -C "$dir" .
  fi
done
ls -1 "$out"
