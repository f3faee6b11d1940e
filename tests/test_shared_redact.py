"""No password is ever shown: the masking helpers, and every command run for real with bad URLs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.redact import MASK, mask_url, scrub

ROOT = Path(__file__).resolve().parents[1]
SECRET = "S3cretPass"

# (value, what must not show): the cases probing found, and their cousins.
BAD_URLS = {
    "mysql": ("mysql://root:S3cretPass@127.0.0.1/db", ["S3cretPass"]),
    "not-a-url": ("S3cretPass", ["S3cretPass"]),
    "words": ("not a url S3cretPass", ["S3cretPass"]),
    "stray-word": ("host=127.0.0.1 port=9 S3cretPass", ["S3cretPass"]),
    "unescaped-at": ("postgresql://root:S3cret@Pass123@127.0.0.1:9/db", ["S3cret", "Pass123"]),
    "unescaped-slash": ("postgresql://root:S3cret/Pass123@127.0.0.1:9/db", ["S3cret", "Pass123"]),
    "unescaped-hash": ("postgresql://root:S3cret#Pass123@127.0.0.1:9/db", ["S3cret", "Pass123"]),
    "bad-escape": ("postgresql://root:S3cret%ZZPass@127.0.0.1:9/db", ["S3cret", "ZZPass"]),
    "escaped-at": ("postgresql://root:S3cret%40Pass123@127.0.0.1:9/db", ["S3cret", "Pass123"]),
    "broken-ipv6": ("postgresql://root:S3cretPass@[::1/db", ["S3cretPass"]),
    "keyword": ("host=127.0.0.1 port=9 password=S3cretPass connect_timeout=2", ["S3cretPass"]),
    "refused": ("postgresql://root:S3cretPass@127.0.0.1:9/db?connect_timeout=2", ["S3cretPass"]),
}


@pytest.mark.parametrize("url, hidden", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_mask_url_and_scrub_hide_every_piece(url, hidden):
    from shared.redact import url_secrets

    masked = mask_url(url)
    assert MASK in masked
    for word in hidden:
        assert word not in masked
        assert word not in scrub(f"libpq said {word!r} somewhere", *url_secrets(url))


def test_masking_keeps_what_helps_to_fix_the_url():
    assert mask_url("postgresql://postgres.abc:pw@db.example.com:6543/postgres") == (
        "postgresql://postgres.abc:****@db.example.com:6543/postgres")
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert mask_url("host=db port=5432 password='a b' dbname=x") == (
        "host=db port=5432 password=**** dbname=x")


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("R2_", "SUPABASE", "DB_URL", "IMAGE", "BROWSE_", "EMBEDDER"))}
    (tmp_path / "images").mkdir(exist_ok=True)
    env.update(IMAGES_DIR=str(tmp_path / "images"), DATA_DIR=str(tmp_path / "data"),
               REPLICATE_API_TOKEN="", EMBEDDER="none", **extra)
    return env


def run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    # cwd is a scratch folder so that no app's .env file in the checkout is read.
    return subprocess.run([sys.executable, "-m", *command], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def assert_one_clean_line(done: subprocess.CompletedProcess, setting: str, hidden: list[str]):
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    lines = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and setting in lines[0], output
    for word in hidden:
        assert word not in output, output


@pytest.mark.parametrize("url, hidden", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_loader_commands_say_one_line_without_the_password(tmp_path, url, hidden):
    from click.testing import CliRunner

    from loader.cli import main

    env = clean_env(tmp_path, SUPABASE_DB_URL=url)
    for command in (["status"], ["sync"], ["ensure-schema"]):
        result = CliRunner().invoke(main, command, env=env)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        (line,) = result.output.splitlines()
        assert line.startswith("Error:") and "SUPABASE_DB_URL" in line
        assert all(word not in line for word in hidden), line


@pytest.mark.parametrize("case", ["not-a-url", "unescaped-at"])
def test_the_loader_process_says_it_too(tmp_path, case):
    url, hidden = BAD_URLS[case]
    env = clean_env(tmp_path, SUPABASE_DB_URL=url)
    assert_one_clean_line(run(["loader", "sync"], env, tmp_path), "SUPABASE_DB_URL", hidden)


@pytest.mark.parametrize("case", ["mysql", "unescaped-at"])
def test_browse_says_one_line_without_the_password(tmp_path, case):
    url, hidden = BAD_URLS[case]
    env = clean_env(tmp_path, SUPABASE_DB_URL=url)
    assert_one_clean_line(run(["browse", "--port", "0"], env, tmp_path), "SUPABASE_DB_URL", hidden)


@pytest.mark.parametrize("case", ["words"])
def test_mlx_local_says_one_line_without_the_password(tmp_path, case):
    url, hidden = BAD_URLS[case]
    env = clean_env(tmp_path, DB_URL=url)
    assert_one_clean_line(run(["mlx_local", "--port", "0"], env, tmp_path), "DB_URL", hidden)


def test_the_library_entry_point_says_it_too(tmp_path):
    from shared.search import open_search
    from shared.settings import Settings
    from shared.store import DatabaseError

    url, hidden = BAD_URLS["unescaped-at"]
    settings = Settings(images_dir=tmp_path, data_dir=tmp_path, database_url=url)
    with pytest.raises(DatabaseError) as caught:
        open_search(settings, embedder=None)
    assert all(word not in str(caught.value) for word in hidden)
