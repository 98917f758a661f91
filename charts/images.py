"""The images `make images` builds: the ones the chart's values.yaml names, so that `helm install` with
default values finds exactly what was built (one place for names and tags; the tag is the package version).

    python charts/images.py            one line per image: NAME DOCKERFILE [BUILD-ARG...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "charts" / "fpgaflow" / "values.yaml"
# values.yaml key -> (Dockerfile, build arguments)
BUILDS = {
    "operator": ("operator/Dockerfile", ()),
    "trainer": ("services/trainer/Dockerfile", ()),
    "converter": ("services/converter/Dockerfile", ()),
    "inference": ("services/inference/Dockerfile", ()),
    "inferenceGpu": ("services/inference/Dockerfile", ("GPU=1",)),
}


def images(values_path: Path = VALUES) -> dict[str, str]:
    """values.yaml key -> the image reference the chart's defaults name."""
    values = yaml.safe_load(values_path.read_text())
    operator = values["operator"]["image"]
    return {"operator": f"{operator['repository']}:{operator['tag']}", **values["stageImages"]}


def builds(values_path: Path = VALUES) -> list[tuple[str, str, tuple[str, ...]]]:
    """(image, Dockerfile, build arguments) of every image, the gpu variant last."""
    named = images(values_path)
    return [(named[key], dockerfile, args) for key, (dockerfile, args) in BUILDS.items()]


if __name__ == "__main__":
    for image, dockerfile, args in builds():
        print(image, dockerfile, *args)
    sys.exit(0)
