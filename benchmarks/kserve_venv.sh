#!/usr/bin/env bash
# Builds the virtual environment of the KServe peer of the serving benchmark (benchmarks/kserve_peer.py):
#   bash benchmarks/kserve_venv.sh [VENV]     (default .cache/bench/kserve-venv, relative to the repo root)
# KServe's Python model server (kserve, Apache-2.0, PyPI) with TensorFlow and Keras for the model, in a venv of
# its own so that none of KServe's dependencies (FastAPI, uvicorn, the Kubernetes client, ...) enter fpgaflow's
# environment. TensorFlow and Keras are the major versions fpgaflow's venv has (tensorflow 2.21, keras 3.15:
# the trial's model.keras loads in both); TensorFlow comes as tensorflow-cpu (it imports as `tensorflow`).
# Every package is pinned (the full set, installed with --no-deps), from PyPI only. ~600 MB of downloads,
# ~1.9 GB on disk.
# Idempotent: a complete venv has a marker file holding the hash of the pin list; it is then left alone.
# PYTHON=python3.11 picks the interpreter (CPython 3.10-3.12: the pins resolved on 3.11).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/pinned_venv.sh"
venv="$(pinned_venv_path "${1:-.cache/bench/kserve-venv}")"

# The pins: `pip freeze` of a venv where `pip install kserve==0.21.0 tensorflow-cpu==2.21.0 keras==3.15.1`
# resolved (`pip check` clean) and the peer served the bench's jet tagger (CPython 3.11); setuptools and wheel
# (which `pip freeze` leaves out) are pinned too: grpcio-tools and astunparse declare them.
read -r -d '' PINS <<'EOF' || true
kserve==0.21.0
tensorflow-cpu==2.21.0
keras==3.15.1
absl-py==2.5.1
aiohappyeyeballs==2.7.1
aiohttp==3.14.5
aiohttp-retry==2.9.1
aiosignal==1.4.0
annotated-doc==0.0.7
annotated-types==0.8.0
anyio==4.16.0
astunparse==1.6.3
attrs==26.1.0
certifi==2026.10.19.post1
cffi==2.1.1
charset-normalizer==3.5.3
click==8.5.1
cloudevents==1.13.0
cryptography==50.0.2
deprecation==2.1.0
durationpy==0.11
fastapi==0.165.0
flatbuffers==25.12.19
frozenlist==1.8.0
gast==0.7.0
google-pasta==0.2.0
grpc-interceptor==0.15.4
grpcio==1.85.3
grpcio-tools==1.81.1
h11==0.16.0
h5py==3.14.0
httpcore==1.0.9
httptools==0.9.0
httpx==0.28.1
idna==3.20
kubernetes==37.0.1
libclang==18.1.1
markdown-it-py==4.3.0
mdurl==0.1.2
ml_dtypes==0.6.0
multidict==7.2.1
namex==0.1.0
numpy==2.4.6
oauthlib==4.0.1
opentelemetry-api==1.45.2
opt_einsum==3.4.0
optree==0.20.0
orjson==3.13.0
packaging==26.4
pandas==2.3.3
pillow==13.0.0
prometheus_client==0.26.0
propcache==0.5.4
protobuf==6.33.6
psutil==5.9.8
pyasn1==0.6.5
pycparser==3.12
pydantic==2.14.4
pydantic_core==2.50.5
Pygments==2.21.0
PyJWT==2.15.1
python-dateutil==2.9.0.post0
python-dotenv==1.2.4
python-multipart==0.0.34
pytz==2026.6
PyYAML==6.0.4
requests==2.34.2
requests-oauthlib==2.0.0
rich==15.0.0
six==1.17.0
starlette==1.10.0
tabulate==0.10.0
termcolor==3.3.0
timing-asgi==0.3.2
typing-inspection==0.4.5
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
uvicorn==0.54.0
uvloop==0.23.0
watchfiles==1.3.0
websocket-client==1.9.2
websockets==17.4
wrapt==2.5.2
yarl==1.25.1
setuptools==84.2.1
wheel==0.48.0
EOF

pinned_venv_install kserve "$venv" 10 12 "the pinned wheels are for those" "$PINS" check || exit 0

echo "kserve venv: checking that kserve and TensorFlow import ..."
TF_CPP_MIN_LOG_LEVEL=3 "$venv/bin/python" - <<'PY' || pinned_venv_fail "smoke test: kserve or tensorflow does not import"
import sys
sys.argv = sys.argv[:1]  # kserve parses the command line when imported
import keras
import kserve
import tensorflow as tf
from kserve.protocol.infer_type import InferRequest, InferResponse  # noqa: F401
from importlib.metadata import version
print(f"kserve venv: ok: kserve {version('kserve')}, tensorflow {tf.__version__}, keras {keras.__version__}")
PY

pinned_venv_done
