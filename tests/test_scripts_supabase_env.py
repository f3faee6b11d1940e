import stat
import subprocess

from dotenv import dotenv_values

import importlib.util
from pathlib import Path

from shared.redact import mask_url as masked

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "supabase_env", Path(__file__).resolve().parent.parent / "scripts" / "supabase_env.py")
supabase_env = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(supabase_env)
SetupError, setup = supabase_env.SetupError, supabase_env.setup

SECRET = "s3cr#t:pa@ss"
URL = f"postgresql://postgres.abc:{SECRET.replace('#', '%23').replace(':', '%3A').replace('@', '%40')}@db.example.com:5432/postgres"


def fake_cli(stdout: str, returncode: int = 0):
    def run(args, **kwargs):
        assert args == ["supabase", "status", "-o", "env"]
        return subprocess.CompletedProcess(args, returncode, stdout, "")
    return run


@pytest.fixture
def repo(tmp_path, monkeypatch):
    (tmp_path / "loader").mkdir()
    (tmp_path / "mlx-local").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no supabase CLI unless a test adds one
    return tmp_path


def test_url_from_loader_env_keeps_other_lines(repo):
    (repo / "loader" / ".env").write_text(f"SUPABASE_DB_URL={URL}\nR2_BUCKET=x\n")
    (repo / "mlx-local" / ".env").write_text("# my settings\nCLIP_MODEL=openai/clip-vit-base-patch32\nDB_URL=old\n")
    shown, source = setup(repo)
    assert "loader/.env" in source
    assert "****" in shown and "pa" not in shown.split("@")[0]
    env_file = repo / "mlx-local" / ".env"
    text = env_file.read_text()
    assert text.startswith("# my settings\nCLIP_MODEL=openai/clip-vit-base-patch32\n")
    assert text.count("DB_URL=") == 1
    assert dotenv_values(env_file)["DB_URL"] == URL
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600


def test_supabase_cli_wins_when_installed(repo, monkeypatch):
    bin_dir = repo / "bin"
    bin_dir.mkdir()
    (bin_dir / "supabase").write_text("#!/bin/sh\n")
    (bin_dir / "supabase").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    (repo / "loader" / ".env").write_text("SUPABASE_DB_URL=postgresql://other/db\n")
    local = "postgresql://postgres:postgres@127.0.0.1:54322/postgres"
    shown, source = setup(repo, run=fake_cli(f'API_URL="http://127.0.0.1:54321"\nDB_URL="{local}"\n'))
    assert source == "supabase status"
    assert shown == "postgresql://postgres:****@127.0.0.1:54322/postgres"
    assert dotenv_values(repo / "mlx-local" / ".env")["DB_URL"] == local


def test_nothing_found_is_a_clear_error(repo):
    with pytest.raises(SetupError, match="SUPABASE_DB_URL"):
        setup(repo)
    assert not (repo / "mlx-local" / ".env").exists()


def test_masked_never_shows_the_password():
    assert SECRET not in masked(URL)
    assert "%23" not in masked(URL).split("@")[0]
