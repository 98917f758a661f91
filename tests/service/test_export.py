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


@pytest.fixture(scope="module")
def digits_bnn():
    import keras
    from sklearn.datasets import load_digits

    from fpgaflow.spec import ModelSpec
    from fpgaflow_trainer.model import build_model

    keras.utils.set_random_seed(5)
    x, y = load_digits(return_X_y=True)
    x = x.reshape(len(x), -1).astype(np.float64)
    x = ((x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)).astype(np.float32)
    order = np.random.default_rng(5).permutation(len(x))
    train, test = order[:1400], order[1400:]
    model = build_model(ModelSpec(type="binary", layers=[32, 16]), (64,), 10)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[train], y[train], epochs=2, batch_size=64, verbose=0)
    return model, x[test], y[test]


@pytest.mark.slow
@pytest.mark.parametrize("pe,simd", [(1, 64), (4, 24)])
def test_binary_model_round_trips_through_the_bnn_export(tmp_path, digits_bnn, pe, simd):
    import keras

    model, x, y = digits_bnn
    manifest = export.export_bnn(model, tmp_path, pe=pe, simd=simd)
    assert sorted(p.name for p in tmp_path.glob("0-*")) == sorted(
        f"0-{p}-{kind}.bin" for p in range(pe) for kind in ("weights", "thres"))
    assert (tmp_path / f"2-{pe - 1}-bias.bin").is_file()
    words = sum((tmp_path / f"1-{p}-weights.bin").stat().st_size for p in range(pe)) // 8
    assert words == -(-16 // pe) * pe * -(-32 // simd)  # padded rows x words per row, 8 bytes each

    bnn = export.read_bnn(tmp_path)
    assert [layer["name"] for layer in bnn["layers"]] == ["fc1", "fc2", "output"] == [e["name"] for e in manifest["layers"]]
    for layer in bnn["layers"]:
        kernel = model.get_layer(layer["name"]).binary_kernel()
        assert layer["weights"].dtype == np.int8 and np.array_equal(layer["weights"], kernel.astype(np.int8))

    # The hidden signs of the Keras model on the inputs the hardware takes (quantized to 2^-8 steps).
    frac = bnn["input_frac_bits"]
    xq = (export.quantize_input(x, frac) / 2.0**frac).astype(np.float32)
    probe = keras.Model(model.inputs, [model.get_layer("sign1").output, model.get_layer("sign2").output,
                                       model.get_layer("output").output])
    sign1, sign2, logits = (np.asarray(v) for v in probe.predict(xq, verbose=0))
    hidden, acc = export.bnn_forward(bnn, x)
    assert 0.2 < hidden[0].mean() < 0.8 and 0.2 < hidden[1].mean() < 0.8  # the signs are not trivially constant
    assert (acc.argmax(axis=1) == y).mean() > 0.2  # trained (two epochs), twice chance
    assert np.array_equal(hidden[0], (sign1 > 0).astype(np.int64))
    assert np.array_equal(hidden[1], (sign2 > 0).astype(np.int64))
    assert np.array_equal(acc.argmax(axis=1), logits.argmax(axis=1))
    assert np.abs(acc / 2.0 ** bnn["layers"][-1]["frac_bits"] - logits).max() < 1e-4
    assert len(bnn["layers"][1]["thresholds"]) == 16 and bnn["layers"][1]["thresholds"].dtype == np.int64


@pytest.mark.slow
def test_negative_gamma_neurons_are_flipped_and_still_exact(tmp_path, digits_bnn):
    """A batch norm with gamma < 0 inverts the comparison; the export flips the stored weights instead."""
    import keras

    model, x, _ = digits_bnn
    model = keras.models.clone_model(model)
    model.set_weights(digits_bnn[0].get_weights())
    bn = model.get_layer("bn2")
    gamma, beta, mean, var = bn.get_weights()
    gamma[::2] *= -1
    bn.set_weights([gamma, beta, mean, var])
    export.export_bnn(model, tmp_path)
    bnn = export.read_bnn(tmp_path)
    assert bnn["layers"][1]["flips"].tolist() == [i % 2 == 0 for i in range(16)]
    assert np.array_equal(bnn["layers"][1]["weights"], model.get_layer("fc2").binary_kernel().astype(np.int8))
    stored = np.where(bnn["layers"][1]["stored"] > 0, 1, -1)
    assert np.array_equal(stored[0], -bnn["layers"][1]["weights"][:, 0])  # flipped row on disk
    frac = bnn["input_frac_bits"]
    xq = (export.quantize_input(x, frac) / 2.0**frac).astype(np.float32)
    sign2 = np.asarray(keras.Model(model.inputs, model.get_layer("sign2").output).predict(xq, verbose=0))
    assert np.array_equal(export.bnn_forward(bnn, x)[0][1], (sign2 > 0).astype(np.int64))


def test_export_refuses_a_model_that_is_not_binary(tmp_path):
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Dense(3)(inputs)))
    with pytest.raises(StageError, match="binary model"):
        export.export_bnn(model, tmp_path)
    with pytest.raises(StageError, match="not a BNN export"):
        export.read_bnn(tmp_path)
