#!/usr/bin/env bash
# Installs what the power-loss FUSE tool (../shared/tools/powerloss) needs: fuse3 (fusermount3)
# and the Python modules pyfuse3 and trio. Idempotent: returns at once when they are present.
# Needs root (apt-get, pip, /dev/fuse). Usage: bash scripts/install-powerloss.sh
set -euo pipefail
TOOL_DIR="$(cd "$(dirname "$0")/../../shared/tools/powerloss" 2>/dev/null && pwd)" || {
    echo "install-powerloss.sh: $(dirname "$0")/../../shared/tools/powerloss not found" >&2
    exit 1
}
PYTHON="${PYTHON:-python3}"
if command -v fusermount3 >/dev/null 2>&1 && "$PYTHON" -c 'import pyfuse3, trio' >/dev/null 2>&1; then
    exit 0
fi
echo "== installing the powerloss tool's prerequisites ($TOOL_DIR/install.sh)"
PYTHON="$PYTHON" sh "$TOOL_DIR/install.sh"
