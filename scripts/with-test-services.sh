#!/usr/bin/env bash
# Runs a command with the test services (Kafka, S3Proxy) up and their environment exported, then
# stops them whatever the command's outcome. Usage: scripts/with-test-services.sh npm test
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/test-services.sh" up
trap '"$here/test-services.sh" down' EXIT
# shellcheck disable=SC1091
source "$here/../.cache/test-services/env"
"$@"
