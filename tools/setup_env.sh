#!/usr/bin/env bash
# Creates .venv on first use and installs everything the tests and the flagship example need:
# the Debian packages the example's corpus is built from (through apt-get, when run as root),
# the CPU build of torch that lies on disk, and this package with its extras.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev}
DEBIAN_PACKAGES=(espeak-ng flite sox asterisk-core-sounds-en-wav asterisk-core-sounds-en asterisk-moh-opsound-wav)

venv_has_pip() { "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }

# python3 -m venv needs ensurepip, which Debian ships apart from python3, in python3-venv.
needs_venv_package=false
if ! venv_has_pip && ! python3 -c "import ensurepip" >/dev/null 2>&1; then
    needs_venv_package=true
    DEBIAN_PACKAGES+=(python3-venv)
fi

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "setup: warning: missing Debian packages (${missing[*]}); install them with" >&2
        echo "       sudo apt-get install ${missing[*]}" >&2
        if $needs_venv_package; then
            echo "setup: python3 -m venv cannot create $VENV without python3-venv" >&2
            exit 1
        fi
        echo "       the library works without them; the speech example and its tests do not." >&2
    fi
fi

if ! venv_has_pip; then
    # --clear: a try without ensurepip leaves a $VENV that has a python but no pip.
    python3 -m venv --clear "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# The CPU build of torch first, so that no later requirement pulls a CUDA build.
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[${EXTRAS}]"
