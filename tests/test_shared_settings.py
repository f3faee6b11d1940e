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


def test_mlx_local_reads_db_url():
    settings = Settings.from_env({"DB_URL": "postgresql://u@h/db"}, db_url_var="DB_URL")
    assert settings.database_url == "postgresql://u@h/db"


def test_env_file_is_read_and_environment_wins(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("EXPECTED_VECTOR_DIM=512\nIMAGES_DIR=/from/file\n")
    monkeypatch.setenv("IMAGES_DIR", "/from/env")
    monkeypatch.delenv("EXPECTED_VECTOR_DIM", raising=False)
    settings = load_settings(tmp_path)
    assert settings.expected_vector_dim == 512
    assert settings.images_dir == Path("/from/env")
