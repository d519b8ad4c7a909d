#!/usr/bin/env bash
# The main job on the bundled sample: enhance samples/sample.mp4 and print dPSNR against its reference.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python scripts/demo.py "$@"
