#!/usr/bin/env bash
# Validates the machine-readable client protocol (docs/asyncapi.yaml,
# AsyncAPI 3.0.0) with the official parser, pinned, installed from npm into
# a cache outside the repo (${CHAT_TOOLS_DIR:-~/.cache/chatd-tools}/asyncapi).
# Fails on any error diagnostic, and on the project's own rules (see
# scripts/asyncapi-check.mjs). Safe to run again and again: npm runs only
# when the pinned version is not installed yet.
#   scripts/asyncapi-check.sh [DOCUMENT]   (default docs/asyncapi.yaml)
set -euo pipefail
doc=docs/asyncapi.yaml
if [ $# -gt 0 ]; then # as given, relative to the caller's directory
  doc=$(realpath -m -- "$1")
fi
cd "$(dirname "$0")/.."
version="3.6.6"
dir="${CHAT_TOOLS_DIR:-$HOME/.cache/chatd-tools}/asyncapi"

installed=$(node -p 'require(process.argv[1]).version' \
  "$dir/node_modules/@asyncapi/parser/package.json" 2>/dev/null || true)
if [ "$installed" != "$version" ]; then
  mkdir -p "$dir"
  echo "asyncapi: installing @asyncapi/parser@$version into $dir"
  npm install --no-audit --no-fund --ignore-scripts --prefix "$dir" "@asyncapi/parser@$version" >&2
fi

ASYNCAPI_PARSER_DIR="$dir" node scripts/asyncapi-check.mjs "$doc"
