"""Exports: the vendor build script and tarball of the hls4ml project, and the BNN-PYNQ export of binary models."""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from fpgaflow.errors import StageError
from fpgaflow_converter import export

HLS4ML_TEMPLATES = Path(__import__("hls4ml").__file__).parent / "templates"

FAKE_TOOL = """#!/bin/sh
{{ pwd; for a in "$@"; do printf '%s\\n' "$a"; done; }} > "{log}"
if [ -f build_opt.tcl ]; then cp build_opt.tcl "{log}.opt"; fi
exit {rc}
"""


def _project(tmp_path: Path, backend: str) -> Path:
    """A folder shaped like hls4ml's project: its real build_prj.tcl (and build_opt.tcl for Vitis), weights."""
    project = tmp_path / "hls4ml_prj"
    (project / "firmware" / "weights").mkdir(parents=True)
    template = HLS4ML_TEMPLATES / backend.lower()
    (project / "build_prj.tcl").write_bytes((template / "build_prj.tcl").read_bytes())
    if backend == "Vitis":
        (project / "build_opt.tcl").write_bytes((template / "build_opt.tcl").read_bytes())
    (project / "project.tcl").write_text('set project_name "myproject"\n')
    rng = np.random.default_rng(0)
    (project / "firmware" / "weights" / "w2.txt").write_text(",".join(f"{v:.6f}" for v in rng.normal(size=64)))
    (project / "firmware" / "weights" / "w2.h").write_bytes(rng.bytes(1000))
    return project


def _fake_tool(bin_dir: Path, name: str, log: Path, rc: int = 0) -> None:
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text(FAKE_TOOL.format(log=log, rc=rc))
    tool.chmod(0o755)


def _run(script: Path, *args: str, path: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", str(script), *args], cwd=cwd, env={"PATH": path}, capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize("backend", ["Vitis", "Vivado"])
def test_build_script_is_valid_shell_and_refuses_without_the_tool(tmp_path, backend):
    project = _project(tmp_path, backend)
    script = export.write_build_script(project, "myproject", "xcu250-figd2104-2L-e", 5.0, backend)
    assert script == project / "build.sh" and os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    done = _run(script, path="/usr/bin:/bin", cwd=tmp_path)
    assert done.returncode == 2
    assert f"{export.TOOLS[backend]} is not on PATH" in done.stderr


def test_build_script_runs_vitis_hls_in_the_project_with_the_chosen_flags(tmp_path):
    project = _project(tmp_path, "Vitis")
    script = export.write_build_script(project, "myproject", "xcu250-figd2104-2L-e", 5.0, "Vitis")
    log = tmp_path / "argv.log"
    _fake_tool(tmp_path / "bin", "vitis_hls", log)
    path = f"{tmp_path / 'bin'}:/usr/bin:/bin"

    done = _run(script, path=path, cwd=tmp_path)  # from another folder: it moves into the project
    assert done.returncode == 0, done.stderr
    cwd, *argv = log.read_text().splitlines()
    assert Path(cwd).resolve() == project.resolve() and argv == ["-f", "build_prj.tcl"]
    opts = dict(re.findall(r"^\s+(\w+)\s+(\d)$", (tmp_path / "argv.log.opt").read_text(), re.M))
    assert opts == {"reset": "0", "csim": "0", "synth": "1", "cosim": "0", "validation": "0", "export": "0",
                    "vsynth": "0", "fifo_opt": "0"}  # C synthesis only by default
    assert "myproject_prj/solution1/syn/report/myproject_csynth.rpt" in done.stdout

    assert _run(script, "--csim", "--cosim", "--export", path=path, cwd=project).returncode == 0
    opts = dict(re.findall(r"^\s+(\w+)\s+(\d)$", (tmp_path / "argv.log.opt").read_text(), re.M))
    assert (opts["csim"], opts["synth"], opts["cosim"], opts["validation"], opts["export"]) == ("1", "1", "1", "1", "1")

    bad = _run(script, "--cosmic", path=path, cwd=project)
    assert bad.returncode == 2 and "unknown option '--cosmic'" in bad.stderr
    _fake_tool(tmp_path / "bin", "vitis_hls", log, rc=3)
    assert _run(script, path=path, cwd=project).returncode == 3  # a failed synthesis fails the script


def test_build_script_passes_vivado_hls_the_options_hls4ml_tcl_parses(tmp_path):
    project = _project(tmp_path, "Vivado")
    script = export.write_build_script(project, "myproject", "xc7z020clg400-1", 10.0, "Vivado")
    log = tmp_path / "argv.log"
    _fake_tool(tmp_path / "bin", "vivado_hls", log)
    assert _run(script, "--csim", path=f"{tmp_path / 'bin'}:/usr/bin:/bin", cwd=tmp_path).returncode == 0
    cwd, *argv = log.read_text().splitlines()
    assert Path(cwd).resolve() == project.resolve() and argv[:2] == ["-f", "build_prj.tcl"]
    opts = dict(item.split("=") for item in argv[2].split())
    tcl = (project / "build_prj.tcl").read_text()
    assert set(opts) == set(re.findall(r"^\s{4}(\w+)\s+\d$", tcl, re.M)) == set(export.TCL_OPTIONS)
    assert (opts["csim"], opts["synth"], opts["cosim"], opts["export"]) == ("1", "1", "0", "0")


def test_build_script_needs_an_hls4ml_project(tmp_path):
    with pytest.raises(StageError, match="build_prj.tcl"):
        export.write_build_script(tmp_path, "myproject", "xcu250-figd2104-2L-e", 5.0, "Vitis")
    (tmp_path / "build_prj.tcl").write_text("")
    with pytest.raises(StageError, match="Quartus"):
        export.write_build_script(tmp_path, "myproject", "x", 5.0, "Quartus")


def test_tarball_round_trips_with_build_script_executable_and_weights_identical(tmp_path):
    project = _project(tmp_path, "Vitis")
    export.write_build_script(project, "myproject", "xcu250-figd2104-2L-e", 5.0, "Vitis")
    tarball = export.pack_project(project, tmp_path / "hls4ml_prj.tar.gz", "exp-0-hls4ml_prj")
    unpacked = tmp_path / "unpacked"
    with tarfile.open(tarball) as tar:
        assert tar.getmember("exp-0-hls4ml_prj/build.sh").mode & 0o111 == 0o111
        tar.extractall(unpacked, filter="tar")
    root = unpacked / "exp-0-hls4ml_prj"
    assert os.access(root / "build.sh", os.X_OK)
    for name in ("w2.txt", "w2.h"):
        assert (root / "firmware" / "weights" / name).read_bytes() == (project / "firmware" / "weights" / name).read_bytes()
    assert (root / "build_prj.tcl").read_bytes() == (project / "build_prj.tcl").read_bytes()


# ------------------------------------------------------------------------------------------------- BNN


def test_bits_pack_little_endian_into_uint64_words():
    bits = np.zeros((2, 128), dtype=np.uint8)
    bits[0, 0] = bits[0, 63] = bits[1, 64] = 1
    words = export._bits_to_words(bits, 64)
    assert words.tolist() == [1 | 1 << 63, 0, 0, 1]
    assert (export._words_to_bits(words, 64, 2) == bits).all()


def test_export_refuses_a_model_that_is_not_binary(tmp_path):
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Dense(3)(inputs)))
    with pytest.raises(StageError, match="binary model"):
        export.export_bnn(model, tmp_path)
    with pytest.raises(StageError, match="not a BNN export"):
        export.read_bnn(tmp_path)
