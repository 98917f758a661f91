"""The vectorized emulator against hls4ml's own compiled C simulation of the tiny trial: the same bits
(np.array_equal) on the test set and on random inputs wide enough to wrap the input type and the layers'
results; its casts against ap_types' own, compiled with g++, in every rounding and overflow mode; and a
clear NotImplementedError for a layer it does not cover."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import hls4ml
import numpy as np
import pytest

from fpgaflow.emulation.fastemu import (
    OVERFLOW_MODES,
    QUANTIZATION_MODES,
    parse_type,
    quantize_float,
    requantize,
)
from fpgaflow.emulation.library import load_emulator
from fpgaflow.emulation.project import load_fast_emulator
from fpgaflow.preprocess import Scaler
from fpgaflow.spec import ExperimentSpec
from fpgaflow.trial import TrialDir
from tests.conftest import fpgaflow

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def converted(tiny_run):
    assert tiny_run["result"].returncode == 0, tiny_run["result"].stderr[-2000:]
    convert = tiny_run["trial"] / "convert"
    return convert, load_emulator(convert / "emulator"), load_fast_emulator(convert)


def test_bit_exact_on_the_test_set(converted, tiny_run):
    _, hls, fast = converted
    train = tiny_run["trial"] / "train"
    x = Scaler.load(train / "scaler.json").apply(np.load(train / "testset.npz")["x"]).astype(np.float32)
    assert len(x) >= 1000
    expected = hls.predict(x)
    assert np.ptp(expected, axis=0).max() > 0  # a real, input-dependent output
    assert np.array_equal(fast.predict(x), expected)


@pytest.mark.parametrize("scale", [1.0, 30.0])  # 30: inputs beyond ap_fixed<16,6>'s +-32 wrap, as do sums
def test_bit_exact_on_random_inputs(converted, scale):
    _, hls, fast = converted
    x = (np.random.default_rng(int(scale)).normal(size=(2000, fast.input_size)) * scale).astype(np.float32)
    expected = hls.predict(x)
    assert np.array_equal(fast.predict(x), expected)


def test_bit_exact_with_rounding_saturating_types(tmp_path):
    """A trial converted through the convert stage as io_stream with non-default modes: AP_RND_CONV/AP_SAT
    everywhere, a narrow saturating accumulator (added in input order) and a wrapping result type in fc1
    that the next layer rounds; the stage's fidelity check ran on the vectorized emulator."""
    hls = {"precision": "ap_fixed<12,5,AP_RND_CONV,AP_SAT>", "minAgreement": 0.5, "ioType": "io_stream",
           "layers": {"fc1": {"precision": {"weight": "ap_fixed<8,3,AP_RND,AP_SAT>", "result": "ap_fixed<14,5>",
                                            "accum": "ap_fixed<18,6,AP_RND,AP_SAT>"}}}}
    spec = ExperimentSpec.model_validate({"dataset": {"name": "jets", "samples": 4000, "seed": 6},
                                          "model": {"layers": [16, 8]}, "train": {"epochs": 1, "batchSize": 256},
                                          "hls": hls})
    td = TrialDir.create(tmp_path / "t00", "fastemu", "t00", {}, spec)
    fpgaflow("train", "--trial-dir", str(td.root))
    fpgaflow("convert", "--trial-dir", str(td.root))
    convert = td.stage_dir("convert")
    assert "typedef ap_fixed<18,6,AP_RND,AP_SAT,0> fc1_accum_t;" in (convert / "hls4ml_prj/firmware/defines.h").read_text()
    hls_emu, fast = load_emulator(convert / "emulator"), load_fast_emulator(convert)
    x = (np.random.default_rng(5).normal(size=(3000, fast.input_size)) * np.array([[0.5], [3.0], [30.0]]).repeat(1000, 0))
    x = x.astype(np.float32)
    assert np.array_equal(fast.predict(x), hls_emu.predict(x))
    emulation = json.loads((convert / "fidelity.json").read_text())["emulation"]
    assert emulation["path"] == "vectorized" and emulation["layers"]["fc1"].startswith("int64")


def test_uncovered_strategy_is_named(converted, tmp_path):
    convert, _, _ = converted
    firmware = tmp_path / "hls4ml_prj" / "firmware"
    shutil.copytree(convert / "hls4ml_prj" / "firmware", firmware,
                    ignore=shutil.ignore_patterns("*.so", "ap_types", "nnet_utils"))
    params = firmware / "parameters.h"
    params.write_text(params.read_text().replace("nnet::latency", "nnet::distributed_arithmetic", 1))
    with pytest.raises(NotImplementedError, match=r"dense layer fc1: strategy = nnet::distributed_arithmetic"):
        load_fast_emulator(tmp_path)


def test_the_fidelity_check_falls_back_to_hls4ml_where_the_emulator_cannot_serve(converted, tmp_path):
    """convert.emulate: an uncovered layer, or outputs that differ from hls4ml's on the check (here: a
    weight changed under the vectorized emulator), leave the whole computation to hls4ml's C simulation."""
    from fpgaflow_converter.convert import emulate

    convert, hls, fast = converted
    x = (np.random.default_rng(3).normal(size=(3000, fast.input_size))).astype(np.float32)
    expected = hls.predict(x)
    got, record = emulate(convert / "hls4ml_prj", hls.predict, x)
    assert record["path"] == "vectorized" and np.array_equal(got, expected)

    project = tmp_path / "uncovered"
    shutil.copytree(convert / "hls4ml_prj" / "firmware", project / "firmware", ignore=shutil.ignore_patterns("*.so"))
    params = project / "firmware" / "parameters.h"
    params.write_text(params.read_text().replace("nnet::latency", "nnet::distributed_arithmetic", 1))
    got, record = emulate(project, hls.predict, x)
    assert record["path"] == "hls4ml" and "does not cover" in record["fallback"] and np.array_equal(got, expected)

    project = tmp_path / "differs"
    shutil.copytree(convert / "hls4ml_prj" / "firmware", project / "firmware", ignore=shutil.ignore_patterns("*.so"))
    bias = project / "firmware" / "weights" / "b2.txt"
    bias.write_text("1.5," + bias.read_text().split(",", 1)[1])
    got, record = emulate(project, hls.predict, x)
    assert record["path"] == "hls4ml" and "differed" in record["fallback"] and np.array_equal(got, expected)


CASTS_CPP = """
#include <cstdio>
#include <cstdint>
#include "ap_fixed.h"
template <class T> void cast(const double *x, long n) {
    for (long i = 0; i < n; i++) {
        T a = T(x[i]);                            // from double
        T b = T(ap_fixed<48, 24>(x[i]));          // from a finer fixed-point value
        std::printf("%lld %lld\\n", (long long)a.range(T::width - 1, 0).to_uint64(),
                    (long long)b.range(T::width - 1, 0).to_uint64());
    }
}
int main() {
    static double x[N];
    if (std::fread(x, sizeof(double), N, stdin) != N) return 1;
    CASTS
    return 0;
}
"""


def test_quantization_matches_ap_types_in_every_mode(tmp_path):
    """Every rounding and overflow mode, signed and unsigned, against ap_types' own casts compiled with g++."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++")
    ap_types = Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"
    types = [f"ap_{u}fixed<8,3,{q},{o}>" for u in ("", "u") for q in QUANTIZATION_MODES for o in OVERFLOW_MODES]
    (tmp_path / "casts.cpp").write_text(CASTS_CPP.replace("CASTS", "\n    ".join(f"cast<{t} >(x, N);" for t in types)))
    rng = np.random.default_rng(7)
    # steps of 2^-20 (exact in ap_fixed<48,24>) with exact halves of 2^-5, across and beyond the range
    x = np.concatenate([np.round(rng.normal(size=600) * 6 * 2**20) / 2**20, np.arange(-40, 41) / 64 * 7,
                        np.arange(-300, 300) / 32 + 1 / 64, [0.0, 1e-9, -1e-9, 3.99, -4.0, 4.0, 8.0, -8.0, 1e6]])
    exe = tmp_path / "casts"
    subprocess.run([compiler, "-O1", f"-DN={len(x)}", f"-I{ap_types}", str(tmp_path / "casts.cpp"), "-o", str(exe)],
                   check=True, capture_output=True)
    out = subprocess.run([str(exe)], input=x.astype(np.float64).tobytes(), capture_output=True, check=True).stdout
    raw = np.array(out.split(), dtype=np.int64).reshape(len(types), len(x), 2)
    fine = np.floor(x * 2**24).astype(np.int64)  # ap_fixed<48,24>(x) truncates
    for k, spelling in enumerate(types):
        t = parse_type(spelling)
        expected = raw[k] - ((raw[k] >> (t.width - 1)) << t.width) if t.signed else raw[k]
        assert np.array_equal(quantize_float(x, t), expected[:, 0]), spelling
        assert np.array_equal(requantize(fine, 24, t), expected[:, 1]), spelling
