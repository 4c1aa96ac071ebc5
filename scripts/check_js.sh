#!/usr/bin/env bash
# The JS client, type-checked (`make lint`; TypeScript pinned in avatar/web/package-lock.json,
# installed there by `npm ci`):
#   1. avatar/web as it is: every module strictly from its JSDoc (tsc --checkJs), each .js with a
#      .d.ts beside it ends with a type-level check that the two agree, demo.js uses the client
#      through the .d.ts;
#   2. as a user gets it: the npm package (`npm pack avatar/web`) installed into an empty project,
#      tests/js/consumer.ts imported by package name and type-checked there (the `exports` and
#      `types` fields, the declarations refusing misuse), then the modules imported by Node
#      (the `files` list is complete). Offline: the package has no dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
web=$root/avatar/web
tsc=$web/node_modules/.bin/tsc
if [[ ! -x $tsc ]]; then
  echo "error: no $tsc: run \`cd avatar/web && npm ci\` (make lint does)" >&2
  exit 2
fi

"$tsc" -p "$web/tsconfig.json"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tarball=$(cd "$tmp" && npm pack "$web" --silent)
name=$(node -p "require('$web/package.json').name")
cd "$tmp"
echo '{"name": "consumer", "private": true, "type": "module"}' >package.json
npm install --silent --offline --no-audit --no-fund "./$tarball"
cp "$root/tests/js/consumer.ts" .
"$tsc" --noEmit --strict --target es2022 --lib es2022,dom --module nodenext \
  --moduleResolution nodenext consumer.ts
node --input-type=module -e "
  const client = await import('$name');
  const probe = await import('$name/latency-probe');
  const found = [...Object.keys(client), ...Object.keys(probe)].sort().join(' ');
  if (found !== 'AvatarClient AvatarError LatencyProbe PcmSender') throw new Error(found);"
echo "JS client: types check, $tarball installs and imports"
