import numpy as np

from fpgaflow.spec import HLSSpec
from fpgaflow_converter.config import hls_config, softmax_sum_type
from fpgaflow_converter.convert import fidelity

# The shape of what hls4ml 1.3's config_from_keras_model(granularity="name") returns for a small MLP.
BASE = {
    "Model": {"Precision": {"default": "fixed<16,6>"}, "ReuseFactor": 1, "Strategy": "latency", "BramFactor": 1000000000},
    "LayerName": {
        "features": {"Trace": False, "Precision": {"result": "auto"}},
        "fc1": {"Trace": False, "Precision": {"result": "auto", "weight": "auto", "bias": "auto", "accum": "auto"}, "ReuseFactor": 1},
        "relu1": {"Trace": False, "Precision": {"result": "auto", "table": "fixed<18,8,TRN,WRAP,0>"}, "ReuseFactor": 1, "TableSize": 1024},
        "output": {"Trace": False, "Precision": {"result": "auto", "weight": "auto", "bias": "auto", "accum": "auto"}, "ReuseFactor": 1},
        "softmax": {"Trace": False, "Precision": {"result": "auto", "table": "fixed<18,8,RND,SAT,0>", "exp_table": "fixed<18,8,RND,SAT,0>"}, "ReuseFactor": 1, "TableSize": 1024, "Implementation": "stable"},
    },
}


def test_results_take_the_spec_precision_accumulators_stay_exact_and_tables_stay():
    cfg = hls_config(BASE, HLSSpec(precision="ap_fixed<12,4>", reuseFactor=4, strategy="Resource"), n_classes=5)
    assert cfg["Model"] == {"Precision": {"default": "ap_fixed<12,4>"}, "ReuseFactor": 4, "Strategy": "Resource", "BramFactor": 1000000000}
    assert cfg["LayerName"]["fc1"]["Precision"] == {"result": "ap_fixed<12,4>", "weight": "auto", "bias": "auto", "accum": "auto"}
    assert cfg["LayerName"]["softmax"]["Precision"]["result"] == "ap_fixed<12,4>"
    assert cfg["LayerName"]["softmax"]["inv_inp_t"] == "ap_ufixed<18,3,AP_RND,AP_SAT>"
    assert cfg["LayerName"]["softmax"]["TableSize"] == 4096
    assert cfg["LayerName"]["softmax"]["inp_norm_t"].endswith("AP_SAT>")
    assert cfg["LayerName"]["relu1"]["TableSize"] == 1024
    assert "inv_inp_t" not in cfg["LayerName"]["relu1"]
    assert cfg["LayerName"]["softmax"]["Precision"]["exp_table"] == "fixed<18,8,RND,SAT,0>"
    assert cfg["LayerName"]["relu1"]["Precision"]["table"] == "fixed<18,8,TRN,WRAP,0>"
    assert cfg["LayerName"]["fc1"]["ReuseFactor"] == 4
    assert BASE["LayerName"]["fc1"]["Precision"]["weight"] == "auto", "the input must not be modified"


def test_per_layer_overrides_win():
    hls = HLSSpec(layers={"fc1": {"precision": {"weight": "ap_fixed<8,2>"}, "reuseFactor": 2, "strategy": "Resource"},
                          "softmax": {"tableSize": 1024}})
    cfg = hls_config(BASE, hls, n_classes=5)
    fc1 = cfg["LayerName"]["fc1"]
    assert fc1["Precision"]["weight"] == "ap_fixed<8,2>"
    assert fc1["Precision"]["result"] == "ap_fixed<16,6>"
    assert fc1["ReuseFactor"] == 2 and fc1["Strategy"] == "Resource"
    assert "Strategy" not in cfg["LayerName"]["output"]
    assert cfg["LayerName"]["softmax"]["TableSize"] == 1024


def test_fidelity_measures_agreement_and_constant_outputs():
    rng = np.random.default_rng(0)
    ref = rng.random((100, 5)).astype(np.float32)
    labels = ref.argmax(axis=1)
    same = fidelity(ref, ref.copy(), labels)
    assert same["argmax_agreement"] == 1.0 and same["max_abs_error"] == 0.0 and same["accuracy_float"] == 1.0
    constant = fidelity(ref, np.full_like(ref, 0.2), labels)
    assert constant["emulated_output_spread"] == 0.0
    assert constant["argmax_agreement"] < 0.5


def test_softmax_sum_type_fits_the_number_of_classes():
    assert softmax_sum_type(5) == "ap_ufixed<18,3,AP_RND,AP_SAT>"  # a sum of 5 exponentials is at most 5 < 8
    assert softmax_sum_type(10) == "ap_ufixed<18,4,AP_RND,AP_SAT>"
    assert softmax_sum_type(1) == "ap_ufixed<18,1,AP_RND,AP_SAT>"


def test_an_invalid_reuse_factor_becomes_the_nearest_valid_one_and_is_reported():
    import hls4ml

    from fpgaflow_converter.convert import correct_reuse_factors

    cfg = hls_config(BASE, HLSSpec(reuseFactor=4, layers={"fc1": {"reuseFactor": 3}, "output": {"reuseFactor": 12}}),
                         n_classes=5)
    corrections = correct_reuse_factors(cfg, {"fc1": (16, 8), "output": (8, 5)}, hls4ml.backends.get_backend("Vitis"))
    # 16x8 allows 1, 2, 4, 8, ...: 3 is as near to 2 as to 4, and hls4ml takes the smaller; 8x5 allows 1, 2, 4, 8, 40
    assert [(c["layer"], c["asked"], c["used"]) for c in corrections] == [("fc1", 3, 2), ("output", 12, 8)]
    assert cfg["LayerName"]["fc1"]["ReuseFactor"] == 2 and cfg["LayerName"]["output"]["ReuseFactor"] == 8
    assert corrections[1]["valid"] == [1, 2, 4, 8, 40] and corrections[1]["shape"] == [8, 5]
    cfg = hls_config(BASE, HLSSpec(reuseFactor=4), n_classes=5)
    assert correct_reuse_factors(cfg, {"fc1": (16, 8), "output": (8, 5)}, hls4ml.backends.get_backend("Vitis")) == []
