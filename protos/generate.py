"""Generate the Python gRPC stubs of every .proto here into the package that serves it (``make proto``).

Run from the repository root: ``python protos/generate.py [OUTDIR]``; with OUTDIR, each package's stubs go to
``OUTDIR/<package path>`` (what the freshness test compares). The generated modules import each other
through the installed package path (``fpgaflow_inference.v2``, ``fpgaflow_manager.rpc``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROTOS = Path(__file__).resolve().parent
ROOT = PROTOS.parent
# each .proto: the package its stubs belong to, and that package's folder in the repository
PACKAGES = {
    "grpc_predict_v2.proto": ("fpgaflow_inference.v2", Path("services/inference/fpgaflow_inference/v2")),
    "fpgaflow_manager.proto": ("fpgaflow_manager.rpc", Path("services/manager/fpgaflow_manager/rpc")),
}


def generate(out_root: Path | None = None) -> list[Path]:
    """Write every .proto's stubs; ``out_root`` None: into the repository, else under out_root/<package path>."""
    from grpc_tools import protoc

    written = []
    for proto in sorted(PROTOS.glob("*.proto")):
        if proto.name not in PACKAGES:
            raise SystemExit(f"{proto.name}: add it to PACKAGES in {Path(__file__).name} (which package serves it)")
        package, folder = PACKAGES[proto.name]
        out = (ROOT / folder) if out_root is None else out_root / package.replace(".", "/")
        out.mkdir(parents=True, exist_ok=True)
        args = ["protoc", f"-I{PROTOS}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", str(proto)]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto.name}")
        for path in sorted(out.glob(f"{proto.stem}_pb2*.py*")):
            text = path.read_text()
            text = re.sub(r"^import (\w+_pb2) as", rf"from {package} import \1 as", text, flags=re.M)
            path.write_text(text)
            written.append(path)
    return written


if __name__ == "__main__":
    for p in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else None):
        print(f"wrote {p}")
