"""Provenance: the git state of a work tree, package versions and host facts."""

import subprocess

from fpgaflow.provenance import git_info, host_facts, package_versions


def _git(folder, *args):
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)


def test_git_info_names_commit_branch_dirty_and_remote(tmp_path):
    assert git_info(tmp_path)["commit"] is None  # not a work tree: said, not guessed
    _git(tmp_path, "init", "-q", "-b", "trunk")
    _git(tmp_path, "remote", "add", "origin", "https://example.org/physics/tagger.git")
    (tmp_path / "manifest.yaml").write_text("kind: Experiment\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "first")
    info = git_info(tmp_path)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert info == {"commit": head, "branch": "trunk", "dirty": False,
                    "remote": "https://example.org/physics/tagger.git", "root": str(tmp_path.resolve())}
    (tmp_path / "manifest.yaml").write_text("kind: Experiment\nspec: {}\n")
    assert git_info(tmp_path)["dirty"] is True


def test_host_facts_and_versions(tmp_path):
    facts = host_facts(tmp_path, gpus=["/physical_device:GPU:0"])
    assert facts["cpus"] >= 1 and facts["memory_bytes"]["total"] > 0 and facts["disk_bytes"]["free"] > 0
    assert facts["gpus"] == ["/physical_device:GPU:0"]
    versions = package_versions()
    assert versions["fpgaflow"] and versions["tensorflow"] and versions["hls4ml"]
    assert package_versions(("no-such-package-here",)) == {"no-such-package-here": None}
