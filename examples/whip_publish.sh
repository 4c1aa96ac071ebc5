#!/usr/bin/env bash
# WHIP and WHEP from a shell, with GStreamer's webrtcbin (docs/whip.md). Debian 12 has no
# whipsink/whepsrc elements, so the client is avatar/testing/gst_whip.py run by Debian's python3
# (it has GStreamer's bindings; the packages are in scripts/setup_system.sh).
#
#   examples/whip_publish.sh file speech.ogg   publish a file in real time, then DELETE
#   examples/whip_publish.sh mic               publish the default microphone; Ctrl-C DELETEs
#   examples/whip_publish.sh play ID           watch and hear session ID (window + speakers)
#   examples/whip_publish.sh check ID          receive 5 s of session ID without a display
#
# ID is the last segment of the Location the publisher prints ("location": "/whip/ID").
# AVATAR_URL: the server (default http://127.0.0.1:8080); AVATAR_TOKEN: a token from
# `avatar token` if the server needs one; AVATAR_SOURCE: the live source for `mic`
# (default autoaudiosrc; e.g. "pulsesrc", or "audiotestsrc is-live=true" to try without one);
# GST_PYTHON: a Python with GStreamer's bindings (default /usr/bin/python3).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
client=("${GST_PYTHON:-/usr/bin/python3}" "$here/avatar/testing/gst_whip.py")  # one with gi
url="${AVATAR_URL:-http://127.0.0.1:8080}"
auth=()
[[ -n "${AVATAR_TOKEN:-}" ]] && auth=(--token "$AVATAR_TOKEN")
case "${1:-}" in
  file) exec "${client[@]}" publish "$url/whip" --file "$2" "${auth[@]}" ;;
  mic) exec "${client[@]}" publish "$url/whip" --source "${AVATAR_SOURCE:-autoaudiosrc}" "${auth[@]}" ;;
  play) exec "${client[@]}" play "$url/whep/$2" --show "${auth[@]}" ;;
  check) exec "${client[@]}" play "$url/whep/$2" --seconds 5 "${auth[@]}" ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
