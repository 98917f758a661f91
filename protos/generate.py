"""Generate the Python gRPC stubs of every .proto here into services/inference/fpgaflow_inference/v2 (``make proto``).

Run from the repository root: ``python protos/generate.py [OUTDIR]``. The generated modules import
each other through the installed package path (``fpgaflow_inference.v2``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROTOS = Path(__file__).resolve().parent
DEFAULT_OUT = PROTOS.parent / "services" / "inference" / "fpgaflow_inference" / "v2"
PACKAGE = "fpgaflow_inference.v2"


def generate(out: Path = DEFAULT_OUT) -> list[Path]:
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(PROTOS.glob("*.proto"))
    args = ["protoc", f"-I{PROTOS}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", *map(str, sources)]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = []
    for path in sorted(out.glob("*_pb2*.py*")):
        text = path.read_text()
        text = re.sub(r"^import (\w+_pb2) as", rf"from {PACKAGE} import \1 as", text, flags=re.M)
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT):
        print(f"wrote {p}")
