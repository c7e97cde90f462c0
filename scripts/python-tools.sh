#!/usr/bin/env bash
# Python tools from PyPI that the tests drive, in a virtualenv of their own
# (~/.cache/chat-py/venv, or $CHAT_TEST_PY_VENV), pinned: openapi-spec-validator
# checks the REST facade's OpenAPI document, schemathesis fuzzes the live
# server against it (tests/e2e/openapi.rs). Safe to run again and again.
set -euo pipefail
venv="${CHAT_TEST_PY_VENV:-$HOME/.cache/chat-py/venv}"
want=("schemathesis==4.32.5" "openapi-spec-validator==0.9.0")
stamp="$venv/.chat-tools"
if [ -x "$venv/bin/st" ] && [ -x "$venv/bin/openapi-spec-validator" ] \
  && [ "$(cat "$stamp" 2>/dev/null)" = "${want[*]}" ]; then
  exit 0
fi
python=$(command -v python3)
mkdir -p "$(dirname "$venv")"
[ -x "$venv/bin/pip" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "${want[@]}"
echo "${want[*]}" > "$stamp"
echo "python tools: ${want[*]} in $venv"
