#!/usr/bin/env bash
# Create/refresh the Python peer venv for the recstream benchmarks.
#
#   bench/python/setup.sh            # works from any cwd
#
# Venv location: ${RECSTREAM_PY_VENV:-bench/python/.venv}; a relative path is
# taken relative to the repository root. Interpreter: ${PYTHON:-python3}
# (must be CPython >= 3.11; numpy 2.4 requires it).
#
# Idempotent: if the venv exists and every pin in requirements.txt is already
# installed at exactly that version (and the packages import), nothing is
# reinstalled. scikit-surprise 1.1.5 installs from its manylinux wheel on
# x86_64/aarch64; elsewhere pip falls back to building the sdist (needs gcc
# and the Python headers).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
REQS="$HERE/requirements.txt"
PY="${PYTHON:-python3}"

VENV="${RECSTREAM_PY_VENV:-bench/python/.venv}"
case "$VENV" in
  /*) ;;
  *) VENV="$ROOT/$VENV" ;;
esac

# Returns 0 when every "name==version" pin in requirements.txt is installed in
# the venv at exactly that version and the runtime modules import.
venv_satisfied() {
  [ -x "$VENV/bin/python" ] || return 1
  "$VENV/bin/python" - "$REQS" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib.metadata import version, PackageNotFoundError
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, want = line.partition("==")
    try:
        if version(name.strip()) != want.strip():
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
import numpy, surprise, confluent_kafka, matplotlib  # catches ABI breakage too
PYEOF
}

if venv_satisfied; then
  echo "setup.sh: $VENV already satisfies $(basename "$REQS")" >&2
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
    echo "setup.sh: $PY is $("$PY" -V 2>&1); need CPython >= 3.11" >&2
    exit 1
  }
  echo "setup.sh: creating venv $VENV" >&2
  "$PY" -m venv "$VENV"
fi

echo "setup.sh: installing pinned requirements into $VENV" >&2
"$VENV/bin/python" -m pip install --quiet -r "$REQS"

if ! venv_satisfied; then
  echo "setup.sh: install finished but pins are not satisfied in $VENV" >&2
  exit 1
fi
"$VENV/bin/python" -c 'import surprise, numpy, confluent_kafka as ck; print("setup.sh: ok: surprise", surprise.__version__, "numpy", numpy.__version__, "confluent-kafka", ck.__version__, "librdkafka", ck.libversion()[0])' >&2
