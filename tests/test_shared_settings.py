import os
from pathlib import Path

import pytest

from shared.settings import Settings, SettingsError, load_settings

R2 = {
    "R2_ACCOUNT_ID": "acct",
    "R2_ACCESS_KEY_ID": "key",
    "R2_SECRET_ACCESS_KEY": "secret",
    "R2_BUCKET": "photos",
    "IMAGE_BASE_URL": "https://img.example.com",
}


def test_defaults_use_embedded_database_and_local_storage():
    settings = Settings.from_env({})
    assert settings.embedded_database
    assert settings.r2 is None
    assert settings.expected_vector_dim == 768
    assert settings.images_dir == Path("images").absolute()


def test_full_r2_configuration():
    settings = Settings.from_env({**R2, "R2_PREFIX": "/library/"})
    assert settings.r2.endpoint == "https://acct.r2.cloudflarestorage.com"
    assert settings.r2.prefix == "library/"
    assert settings.image_base_url == "https://img.example.com/"
    assert "secret" not in repr(settings)


def test_half_r2_configuration_names_what_is_missing():
    env = {"R2_BUCKET": "photos", "R2_ACCOUNT_ID": "acct"}
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert "R2_ACCESS_KEY_ID" in str(err.value) and "R2_SECRET_ACCESS_KEY" in str(err.value)


def test_r2_without_public_url_is_refused():
    env = {k: v for k, v in R2.items() if k != "IMAGE_BASE_URL"}
    with pytest.raises(SettingsError, match="IMAGE_BASE_URL"):
        Settings.from_env(env)


@pytest.mark.parametrize("value", ["seven", "7.5", "-3", "0"])
def test_bad_dimension_is_refused(value):
    with pytest.raises(SettingsError, match="EXPECTED_VECTOR_DIM"):
        Settings.from_env({"EXPECTED_VECTOR_DIM": value})


def test_the_database_variable_can_be_named_by_the_app():
    settings = Settings.from_env({"DB_URL": "postgresql://u@h/db"}, database_setting="DB_URL")
    assert settings.database_url == "postgresql://u@h/db" and settings.database_setting == "DB_URL"


def test_mlx_local_reads_db_url_from_its_env_file(tmp_path, monkeypatch):
    import mlx_local

    (tmp_path / ".env").write_text("DB_URL=postgresql://u@h/from-file\n")
    monkeypatch.setattr(mlx_local, "APP_DIR", tmp_path)
    monkeypatch.delenv("DB_URL", raising=False)
    monkeypatch.delenv("SUPABASE_DB_URL", raising=False)
    try:
        assert mlx_local.load_settings().database_url == "postgresql://u@h/from-file"
    finally:
        os.environ.pop("DB_URL", None)  # load_dotenv put it in the environment


@pytest.mark.parametrize("name, value", [
    ("BROWSE_PAGE_SIZE", "abc"), ("BROWSE_PAGE_SIZE", "0"), ("BROWSE_MAX_UPLOAD_BYTES", "abc"),
    ("BROWSE_EMBED_TIMEOUT_S", "abc"), ("BROWSE_EMBED_TIMEOUT_S", "nan"),
    ("EXPECTED_VECTOR_DIM", "20000"), ("MAX_IMAGE_PIXELS", "-1"),
    ("BROWSE_EXACT_SEARCH_ROWS", "-1"), ("BROWSE_EXACT_SEARCH_ROWS", "1e3"),
    ("BROWSE_HNSW_MAX_SCAN_TUPLES", "99"),
    ("BROWSE_UPLOAD_SLOTS", "0"), ("BROWSE_MAX_UPLOAD_PIXELS", "lots"),
    ("BROWSE_MAX_UPLOAD_PIXELS", "999999999999"), ("BROWSE_DB_WAIT_S", "0"),
    ("INDEX_BUILD_MEMORY_MB", "32"), ("INDEX_BUILD_MEMORY_MB", "2GB"),
])
def test_every_number_is_checked_at_start_with_its_name_and_range(name, value):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({name: value})
    message = str(err.value)
    assert message.startswith(name) and " from " in message and " to " in message
    assert "\n" not in message


def test_embedding_storage_and_index_memory():
    assert Settings.from_env({}).embedding_storage == "halfvec-index"
    assert Settings.from_env({}).index_build_memory_mb is None  # sized by the database's host
    chosen = Settings.from_env({"EMBEDDING_STORAGE": "float32", "INDEX_BUILD_MEMORY_MB": "4096"})
    assert (chosen.embedding_storage, chosen.index_build_memory_mb) == ("float32", 4096)
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"EMBEDDING_STORAGE": "halfvec"})
    assert "EMBEDDING_STORAGE" in str(err.value) and "halfvec-index" in str(err.value)


def test_web_settings_come_from_browse_variables():
    web = Settings.from_env({"BROWSE_PAGE_SIZE": "12", "BROWSE_EMBED_TIMEOUT_S": "2.5"}).web
    assert (web.page_size, web.embed_timeout_s, web.search_k) == (12, 2.5, 60)


def test_env_file_is_read_and_environment_wins(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("EXPECTED_VECTOR_DIM=512\nIMAGES_DIR=/from/file\n")
    monkeypatch.setenv("IMAGES_DIR", "/from/env")
    # setenv first so that monkeypatch removes what load_dotenv writes into the environment.
    monkeypatch.setenv("EXPECTED_VECTOR_DIM", "")
    monkeypatch.delenv("EXPECTED_VECTOR_DIM")
    settings = load_settings(tmp_path)
    assert settings.expected_vector_dim == 512
    assert settings.images_dir == Path("/from/env")


@pytest.mark.parametrize("value", [
    "photos.example.com", "ftp://photos.example.com", "https://", "https://photos.example.com/sub",
    "https://photos.example.com/?x=1", "https://user:pw@photos.example.com", "http://[::1",
])
def test_the_public_url_must_be_an_origin(value):
    with pytest.raises(SettingsError, match="BROWSE_PUBLIC_URL") as err:
        Settings.from_env({"BROWSE_PUBLIC_URL": value})
    assert ":pw@" not in str(err.value) and "\n" not in str(err.value)


def test_the_public_url_is_kept_without_its_trailing_slash():
    assert Settings.from_env({}).web.public_url is None
    web = Settings.from_env({"BROWSE_PUBLIC_URL": "https://photos.example.com:8443/"}).web
    assert web.public_url == "https://photos.example.com:8443"


# Each bad value as probing found it (and the gaps found since), through the real commands.
BAD_SETTINGS = [
    ("EXPECTED_VECTOR_DIM", "20000"), ("BROWSE_PAGE_SIZE", "abc"), ("BROWSE_PAGE_SIZE", "0"),
    ("BROWSE_MAX_UPLOAD_BYTES", "abc"), ("BROWSE_EMBED_TIMEOUT_S", "abc"),
    ("BROWSE_SEARCH_K", "500"),  # above BROWSE_MAX_K (200)
    ("REPLICATE_POLL_INTERVAL", "abc"), ("REPLICATE_BASE_URL", "replicate.example"),
    ("R2_ENDPOINT_URL", "not a url"), ("EMBEDDING_STORAGE", "fp16"),
]
R2_ON = {**R2, "R2_ACCOUNT_ID": "acct"}
UNREACHABLE = "postgresql://nobody@127.0.0.1:9/none?connect_timeout=2"


def command_env(tmp_path: Path, name: str, value: str) -> dict[str, str]:
    # A database nobody answers: a setting wrongly let through fails later, with another message.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("R2_", "SUPABASE", "DB_URL", "IMAGE", "BROWSE_", "REPLICATE"))}
    env.update(SUPABASE_DB_URL=UNREACHABLE, IMAGES_DIR=str(tmp_path), DATA_DIR=str(tmp_path / "d"),
               **(R2_ON if name.startswith("R2_") else {}), **{name: value})
    return env


@pytest.mark.parametrize("name, value", BAD_SETTINGS)
def test_loader_and_browse_refuse_a_bad_setting_in_one_line(tmp_path, name, value):
    from click.testing import CliRunner

    from browse.cli import main as browse_main
    from loader.cli import main as loader_main

    env = command_env(tmp_path, name, value)
    for main, args in ((loader_main, ["status"]), (browse_main, ["--port", "0"])):
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        lines = [line for line in result.output.splitlines() if not line.startswith("20")]  # logs
        assert len(lines) == 1 and name in lines[0] and lines[0].startswith("Error:"), lines


@pytest.mark.parametrize("app", ["loader", "browse"])
def test_the_processes_print_that_line_and_nothing_else(tmp_path, app):
    import subprocess
    import sys

    args = ["status"] if app == "loader" else ["--port", "0"]
    done = subprocess.run([sys.executable, "-m", app, *args], cwd=tmp_path, text=True,
                          capture_output=True, timeout=120,
                          env=command_env(tmp_path, "BROWSE_PAGE_SIZE", "0"))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().endswith(
        "BROWSE_PAGE_SIZE must be a whole number from 1 to 200, got '0'"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_every_web_limit_and_its_maximum_agree():
    with pytest.raises(SettingsError, match="BROWSE_PAGE_SIZE must be at most BROWSE_MAX_PAGE_SIZE"):
        Settings.from_env({"BROWSE_MAX_PAGE_SIZE": "10"})
    with pytest.raises(SettingsError, match="BROWSE_SIMILAR_K must be at most BROWSE_MAX_K"):
        Settings.from_env({"BROWSE_MAX_K": "12", "BROWSE_SEARCH_K": "12"})
    assert Settings.from_env({"BROWSE_MAX_K": "24", "BROWSE_SEARCH_K": "24"}).web.max_k == 24


def test_the_replicate_poll_interval_reaches_the_client():
    from shared.embedders.factory import make_embedder

    settings = Settings.from_env({"REPLICATE_API_TOKEN": "r8_x", "REPLICATE_POLL_INTERVAL": "0.05"})
    assert make_embedder(settings).client.poll_interval == 0.05
