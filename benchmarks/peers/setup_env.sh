#!/usr/bin/env bash
# Creates the benchmark-only peer venvs benchmarks/peers/.venv/{mace,nequip} (git-ignored).
# mace-torch pins e3nn==0.4.4 and nequip needs e3nn>=0.6, so each peer gets its own venv;
# both use the torch pinned in the repository's constraints.txt (the same as eqcalc's venv).
#
#     bash benchmarks/peers/setup_env.sh [mace] [nequip]     # default: both
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
peers=("$@")
[ ${#peers[@]} -eq 0 ] && peers=(mace nequip)
for peer in "${peers[@]}"; do
    requirements="$here/requirements-$peer.txt"
    [ -f "$requirements" ] || { echo "unknown peer '$peer' (no $requirements)" >&2; exit 2; }
    venv="$here/.venv/$peer"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --upgrade --quiet pip
    "$venv/bin/python" -m pip install -c "$here/../../constraints.txt" -r "$requirements"
    "$venv/bin/python" -m pip freeze > "$venv/freeze.txt"
    echo "$peer venv ready: $venv"
done
