#!/usr/bin/env bash
# Install Debian's chromium when it is missing: the report test opens report.html in it, headless.
# Never fails the set-up: without chromium only the report test fails, and it says why.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || [ -n "${PARAMREUSE_CHROMIUM:-}" ]; then
  exit 0
fi
hint="install it with: sudo apt-get install -y chromium (or set PARAMREUSE_CHROMIUM to a Chromium binary)"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium not found and apt-get is not available; $hint" >&2
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  apt=(apt-get)
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  apt=(sudo apt-get)
else
  echo "chromium not found and apt-get needs root here; $hint" >&2
  exit 0
fi
install() {
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends chromium >/dev/null
}
echo "installing chromium (Debian) for the report test ..."
# Update the package lists first when apt does not know the package, and retry once after an
# update when the lists are stale.
if ! apt-cache policy chromium 2>/dev/null | grep 'Candidate: [0-9]' >/dev/null; then
  "${apt[@]}" update -qq >/dev/null
fi
if ! install && ! { "${apt[@]}" update -qq >/dev/null && install; }; then
  echo "could not install chromium; $hint" >&2
  exit 0
fi
command -v chromium >/dev/null || echo "chromium was installed but is not on PATH; $hint" >&2
