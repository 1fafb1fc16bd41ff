"""The client distribution installs on a training machine without the server: into a fresh
virtualenv, it pulls httpx and tqdm and none of the server's packages, and imports without any
framework."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[2] / "client"
SERVER_ONLY = {"fastapi", "sqlalchemy", "psycopg", "psycopg-binary", "jinja2", "alembic",
               "uvicorn", "orjson", "pydantic-settings", "typer", "torch",
               "torchvision"}  # fmt: skip


def test_the_client_installs_alone_into_a_fresh_virtualenv(tmp_path: Path) -> None:
    # A copy, so that building the package writes nothing into the source tree.
    source = shutil.copytree(
        CLIENT, tmp_path / "client", ignore=shutil.ignore_patterns("build", "*.egg-info")
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", str(source)], check=True, capture_output=True, timeout=600)
    listed = subprocess.run(
        [*pip, "list", "--format=json"], check=True, capture_output=True, text=True
    )
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"overfit-advisor-client", "httpx", "tqdm"} <= installed
    assert not installed & SERVER_ONLY, installed & SERVER_ONLY
    probe = (
        "import sys, overfit_advisor; "
        "from overfit_advisor import Client, AsyncClient, track; "
        "print(sorted(m for m in ('torch', 'fastai', 'keras', 'lightning', 'transformers', "
        "'fastapi', 'sqlalchemy') if m in sys.modules))"
    )
    imported = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, check=False
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "[]"
