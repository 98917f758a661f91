# A peer's virtual environment from a pinned package list, for benchmarks/*_venv.sh (sourced, not run):
#   source "$(dirname "${BASH_SOURCE[0]}")/pinned_venv.sh"
#   venv="$(pinned_venv_path "${1:-.cache/bench/NAME-venv}")"       (relative to the repository's root)
#   pinned_venv_install LABEL VENV MIN_MINOR MAX_MINOR WHY "$PINS" [check]  || exit 0   (1: already complete)
#   ... the caller's smoke test, `|| pinned_venv_fail "..."` ...
#   pinned_venv_done
# The pins are installed with --no-deps from PyPI (the full set: `pip freeze` of a venv where they resolved);
# with "check", `pip check` must pass too. A complete venv has a marker file holding the hash of the pins,
# written by pinned_venv_done after the smoke test, so a run with the same pins leaves it alone.
# PYTHON picks the interpreter (default python3): CPython 3.MIN_MINOR to 3.MAX_MINOR.

pinned_venv_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# A venv's path: an absolute one as given, a relative one under the repository's root.
pinned_venv_path() { case "$1" in /*) echo "$1" ;; *) echo "$pinned_venv_root/$1" ;; esac; }

pinned_venv_fail() { echo "$_pinned_label venv: FAILED: $*" >&2; exit 1; }

pinned_venv_install() {
    _pinned_label=$1 _pinned_venv=$2
    local min=$3 max=$4 why=$5 pins=$6 check=${7:-}
    local python="${PYTHON:-python3}"
    _pinned_marker="$_pinned_venv/.fpgaflow-$_pinned_label-complete"
    _pinned_hash="$(printf '%s\n' "$pins" | sha256sum | cut -d' ' -f1)"
    _pinned_start=$SECONDS
    if [[ -f "$_pinned_marker" && "$(cat "$_pinned_marker")" == "$_pinned_hash" ]]; then
        echo "$_pinned_label venv: $_pinned_venv is complete (marker matches), nothing to do"
        return 1
    fi
    command -v "$python" >/dev/null || pinned_venv_fail "no $python (set PYTHON=...)"
    "$python" -c "import sys; assert (3, $min) <= sys.version_info[:2] <= (3, $max), sys.version" \
        || pinned_venv_fail "$python is not CPython 3.$min-3.$max ($why); set PYTHON=python3.11"
    rm -f "$_pinned_marker"
    if [[ ! -x "$_pinned_venv/bin/python" ]]; then
        echo "$_pinned_label venv: creating $_pinned_venv with $("$python" --version 2>&1)"
        mkdir -p "$(dirname "$_pinned_venv")"
        "$python" -m venv "$_pinned_venv" || pinned_venv_fail "python -m venv $_pinned_venv"
    fi
    local pip=("$_pinned_venv/bin/python" -m pip --disable-pip-version-check) req
    echo "$_pinned_label venv: installing $(printf '%s\n' "$pins" | grep -c .) pinned packages from PyPI ..."
    req="$(mktemp)"
    printf '%s\n' "$pins" >"$req"
    "${pip[@]}" install --no-deps --progress-bar off -r "$req" || { rm -f "$req"; pinned_venv_fail "pip install (see pip's error above)"; }
    rm -f "$req"
    if [[ "$check" == check ]]; then
        "${pip[@]}" check || pinned_venv_fail "pip check: the pinned set is inconsistent"
    fi
    return 0
}

pinned_venv_done() {
    echo "$_pinned_hash" >"$_pinned_marker"
    echo "$_pinned_label venv: done in $((SECONDS - _pinned_start)) s: $_pinned_venv ($(du -sh "$_pinned_venv" | cut -f1))"
}
