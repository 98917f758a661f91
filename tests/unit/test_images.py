"""The images: `make images` builds exactly what the chart's defaults name (charts/images.py), tagged with
the package version, and what the operator uses when the chart passes nothing; each Dockerfile installs the
shared core and its own service only, runs as a non-root user and takes its base and CA certificates as
build arguments."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml

from fpgaflow import __version__
from fpgaflow_operator.manifests import ClusterSettings
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "charts"))
import images  # noqa: E402  (charts/images.py: what `make images` builds)


def test_make_images_builds_what_the_chart_names_tagged_with_the_version():
    built = images.builds()
    values = yaml.safe_load((ROOT / "charts" / "fpgaflow" / "values.yaml").read_text())
    chart = yaml.safe_load((ROOT / "charts" / "fpgaflow" / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    named = {values["operator"]["image"]["repository"] + ":" + values["operator"]["image"]["tag"],
             *values["stageImages"].values()}
    assert {image for image, _, _ in built} == named
    for image, dockerfile, _ in built:
        assert image.startswith("docker.io/") and image.endswith(f":{__version__}"), image
        assert (ROOT / dockerfile).is_file()
    listed = subprocess.run([sys.executable, str(ROOT / "charts" / "images.py")], capture_output=True, text=True,
                            check=True).stdout.splitlines()
    assert [line.split()[0] for line in listed] == [image for image, _, _ in built]


def test_the_operator_defaults_are_the_chart_defaults():
    named = images.images()
    settings = ClusterSettings()
    assert settings.images == {"train": named["trainer"], "convert": named["converter"], "serve": named["inference"],
                               "bench": named["inference"]}
    assert settings.gpu_image == named["inferenceGpu"]


def test_each_dockerfile_installs_the_core_and_its_own_service_only():
    for _, dockerfile, _ in images.builds():
        text = (ROOT / dockerfile).read_text()
        folder = dockerfile.rsplit("/", 1)[0]
        assert re.search(r"^ARG BASE_IMAGE=\S+\nFROM \$\{BASE_IMAGE\}$", text, re.M), dockerfile
        assert "ARG EXTRA_CA_CERTS" in text and "USER 10001" in text, dockerfile
        copied = set(re.findall(r"^COPY (\S+) ", text, re.M))
        outside = {c for c in copied if not c.startswith(f"{folder}/")}  # (the inference image's native front is built there)
        assert outside <= {"pyproject.toml", "README.md", "fpgaflow", folder}, (dockerfile, copied)
        assert f"pip install --no-cache-dir . ./{folder} " in text, dockerfile
