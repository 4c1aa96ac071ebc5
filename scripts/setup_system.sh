#!/usr/bin/env bash
# Debian packages the tests and the training need (nothing is needed to run `avatar motion`).
# chromium: the browser end-to-end test (driven by playwright with executable_path).
# coturn, iptables, iproute2: the TURN test (a real relay between network namespaces).
# redis-server: the render-job queue's tests (tests/test_render_workers.py).
# nodejs, npm: TypeScript's check of the JS client (make lint; skipped where node already is).
# gstreamer1.0-*, python3-gst-1.0, gir1.2-gst-plugins-bad-1.0: the WHIP/WHEP test's independent
#   WebRTC client (webrtcbin, libnice, Opus, VP8 via libav), run by Debian's python3
#   (avatar/testing/gst_whip.py, tests/test_whip.py).
#   scripts/setup_system.sh          speech synthesizers and human recordings for the tests
#   scripts/setup_system.sh --train  plus the sentence material of the full training corpus
set -euo pipefail
pkgs=(espeak-ng libespeak-ng1 festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
      alsa-utils klettres-data ktuberling-data chromium fonts-dejavu-core
      coturn iptables iproute2 redis-server
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
      gstreamer1.0-nice gstreamer1.0-libav gstreamer1.0-tools python3-gst-1.0
      gir1.2-gst-plugins-bad-1.0)
if [[ "${1:-}" == "--train" ]]; then
  pkgs+=(fortunes fortunes-de fortunes-es fortunes-it)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# Any node with npm will do (NodeSource's nodejs, say, which Debian's npm would conflict with).
command -v npm >/dev/null || missing+=(nodejs npm)
[[ ${#missing[@]} -eq 0 ]] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "warning: not a Debian system; install ${missing[*]} by hand (tests that need them skip)" >&2
  exit 0
fi
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
echo "installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
