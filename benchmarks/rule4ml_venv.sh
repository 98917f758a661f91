#!/usr/bin/env bash
# Builds the virtual environment of the rule4ml peer (benchmarks/rule4ml_peer.py):
#   bash benchmarks/rule4ml_venv.sh [VENV]     (default .cache/bench/rule4ml-venv, relative to the repo root)
# rule4ml (GPL-3.0, PyPI) needs TensorFlow, Keras 3, torch and torch-geometric; it lives in its own venv so
# that none of these enter fpgaflow's environment. Every package is pinned (the full set, installed with
# --no-deps), from PyPI only. PyPI has no CPU-only torch for Linux x86_64: torch imports only with its CUDA
# libraries (nvidia-*-cu12) present, so they are installed although nothing runs on a GPU. About 3.5 GB of
# downloads, ~7 GB on disk. TensorFlow comes as tensorflow-cpu (it imports as `tensorflow`; rule4ml's own
# requirement names `tensorflow`, which is why rule4ml itself is installed --no-deps).
# Idempotent: a complete venv has a marker file holding the hash of the pin list; it is then left alone.
# PYTHON=python3.11 picks the interpreter (CPython 3.9-3.12: torch 2.5.1 has wheels for those only).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/pinned_venv.sh"
venv="$(pinned_venv_path "${1:-.cache/bench/rule4ml-venv}")"

# The pins: `pip freeze` of a venv where this set resolved and rule4ml predicted (CPython 3.11, 2026-11).
read -r -d '' PINS <<'EOF' || true
rule4ml==0.2.0
torch==2.5.1
torch-geometric==2.6.1
tensorflow-cpu==2.20.0
keras==3.15.1
keras-tuner==1.4.8
kt-legacy==1.0.5
optuna==5.0.0
pandas==3.1.1
numpy==2.4.6
scikit-learn==1.9.1
scipy==1.17.1
joblib==1.6.0
threadpoolctl==3.8.0
tqdm==4.70.1
nvidia-cublas-cu12==12.4.5.8
nvidia-cuda-cupti-cu12==12.4.127
nvidia-cuda-nvrtc-cu12==12.4.127
nvidia-cuda-runtime-cu12==12.4.127
nvidia-cudnn-cu12==9.1.0.70
nvidia-cufft-cu12==11.2.1.3
nvidia-curand-cu12==10.3.5.147
nvidia-cusolver-cu12==11.6.1.9
nvidia-cusparse-cu12==12.3.1.170
nvidia-nccl-cu12==2.21.5
nvidia-nvjitlink-cu12==12.4.127
nvidia-nvtx-cu12==12.4.127
triton==3.1.0
sympy==1.13.1
mpmath==1.3.0
networkx==3.6.1
filelock==4.3.1
fsspec==2026.9.0
Jinja2==3.1.6
MarkupSafe==3.0.4
typing_extensions==4.16.0
absl-py==2.5.1
astunparse==1.6.3
flatbuffers==25.12.19
gast==0.7.0
google-pasta==0.2.0
grpcio==1.85.3
h5py==3.16.0
libclang==18.1.1
ml_dtypes==0.6.0
opt_einsum==3.4.0
protobuf==7.36.2
six==1.17.0
termcolor==3.3.0
wrapt==2.5.2
tensorboard==2.20.0
tensorboard-data-server==0.7.2
Markdown==3.11.3
Werkzeug==3.1.9
pillow==13.0.0
requests==2.34.2
certifi==2026.10.19.post1
charset-normalizer==3.5.3
idna==3.20
urllib3==2.8.0
namex==0.1.0
optree==0.20.0
rich==15.0.0
markdown-it-py==4.3.0
mdurl==0.1.2
Pygments==2.21.0
packaging==26.4
python-dateutil==4.0.0
tzdata==2026.6
alembic==1.20.1
Mako==1.4.3
SQLAlchemy==2.1.9
colorlog==6.12.0
cloudpickle==3.1.3
narwhals==2.29.0
PyYAML==6.0.4
aiohttp==3.14.5
aiohappyeyeballs==2.7.1
aiosignal==1.4.0
attrs==26.1.0
frozenlist==1.8.0
multidict==7.2.1
propcache==0.5.4
yarl==1.25.1
psutil==7.2.2
pyparsing==3.3.3
EOF

pinned_venv_install rule4ml "$venv" 9 12 "torch==2.5.1 has no wheel for it" "$PINS" || exit 0

echo "rule4ml venv: checking that rule4ml loads its predictors ..."
TF_CPP_MIN_LOG_LEVEL=3 "$venv/bin/python" -W ignore::FutureWarning - <<'PY' || pinned_venv_fail "smoke test: rule4ml does not load"
import torch_geometric  # before tensorflow: the other order can abort on an LLVM option clash
import torch
import tensorflow as tf
import keras
import rule4ml
from rule4ml.models.wrappers import MultiModelWrapper
w = MultiModelWrapper()
w.load_default_models()
print(f"rule4ml venv: ok: rule4ml {rule4ml.__version__}, torch {torch.__version__}, torch-geometric "
      f"{torch_geometric.__version__}, tensorflow {tf.__version__}, keras {keras.__version__}")
PY

pinned_venv_done
