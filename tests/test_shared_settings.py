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
    ("BROWSE_UPLOAD_SLOTS", "0"), ("BROWSE_MAX_UPLOAD_PIXELS", "lots"),
    ("BROWSE_MAX_UPLOAD_PIXELS", "999999999999"), ("BROWSE_DB_WAIT_S", "0"),
])
def test_every_number_is_checked_at_start_with_its_name_and_range(name, value):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({name: value})
    message = str(err.value)
    assert message.startswith(name) and " from " in message and " to " in message
    assert "\n" not in message


def test_web_settings_come_from_browse_variables():
    web = Settings.from_env({"BROWSE_PAGE_SIZE": "12", "BROWSE_EMBED_TIMEOUT_S": "2.5"}).web
    assert (web.page_size, web.embed_timeout_s, web.search_k) == (12, 2.5, 60)


def test_env_file_is_read_and_environment_wins(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("EXPECTED_VECTOR_DIM=512\nIMAGES_DIR=/from/file\n")
    monkeypatch.setenv("IMAGES_DIR", "/from/env")
    monkeypatch.delenv("EXPECTED_VECTOR_DIM", raising=False)
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
