"""Search from Python, without Flask: by text, by image, similar images, and the README's snippet."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from browse_support import WordEmbedder, build_library, png_bytes
from click.testing import CliRunner

from shared.imagefile import ImageProblem
from shared.search import ImageNotFound, SearchUnavailable, open_search
from shared.store import Catalogue, connect

from conftest import WILD

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def library(pg_url, tmp_path_factory):
    return build_library(pg_url, tmp_path_factory.mktemp("search"), n_fillers=5)


def filenames(hits) -> list[str]:
    return [hit.row.filename for hit in hits]


def test_by_text_by_image_and_similar_rank_by_meaning(library):
    search = open_search(library, embedder=WordEmbedder())
    hits = search.by_text("red bicycle in the snow", k=3)
    assert filenames(hits)[0] == "red-bicycle-snow.jpg"
    assert hits[0].similarity > hits[1].similarity >= hits[2].similarity
    assert filenames(search.by_image(png_bytes((20, 60, 220)), k=1)) == ["blue-sea.jpg"]
    with connect(library.database_url) as conn:
        car = Catalogue(conn).get_image_by_filename("red-car.jpg")
        waiting = Catalogue(conn).get_image_by_filename("waiting.jpg")
    similar = search.similar_to(car.id, k=2)
    assert car.id not in [h.row.id for h in similar] and filenames(similar)[0] == "red-bicycle-snow.jpg"
    assert search.similar_to(waiting.id) is None  # not embedded yet
    with pytest.raises(ImageNotFound):
        search.similar_to(10**9)


def test_what_cannot_be_searched_says_why(library):
    off = open_search(dataclasses.replace(library, embedder="none"))
    assert "EMBEDDER=none" in off.off_reason
    with pytest.raises(SearchUnavailable, match="EMBEDDER=none"):
        off.by_text("cat")
    narrow = open_search(library, embedder=WordEmbedder(dimensions=512))
    with pytest.raises(SearchUnavailable, match="512"):
        narrow.by_text("cat")
    with pytest.raises(ImageProblem):
        open_search(library, embedder=WordEmbedder()).by_image(b"not a picture")


def test_the_readme_snippet_runs_as_written(db_url, tmp_path, tiny_clip):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    snippet = re.search(r"```python\n(from shared.search import.*?)```", readme, re.S).group(1)
    assert len(snippet.strip().splitlines()) == 3
    images = tmp_path / "images"
    shutil.copytree(WILD / "photos", images)
    env = {**os.environ, "SUPABASE_DB_URL": db_url, "IMAGES_DIR": str(images),
           "DATA_DIR": str(tmp_path / "data"), "EXPECTED_VECTOR_DIM": "24",
           "CLIP_MODEL_PATH": str(tiny_clip[0]), "REPLICATE_API_TOKEN": "", "EMBEDDER": "mlx"}
    from loader.cli import main as loader_cli

    for command in (["sync"], ["embed"]):
        result = CliRunner().invoke(loader_cli, command, env=env)
        assert result.exit_code == 0, result.output
    done = subprocess.run([sys.executable, "-c", snippet], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 5  # k=5 of the six photos
    similarities = [float(line.split()[0]) for line in lines]
    assert similarities == sorted(similarities, reverse=True)
    assert {line.split(maxsplit=1)[1] for line in lines} <= {p.relative_to(images).as_posix()
                                                              for p in images.rglob("*") if p.is_file()}


def test_search_turns_on_at_runtime_from_another_thread(pg_url, tmp_path):
    import threading

    library = build_library(pg_url, tmp_path, n_fillers=0)
    search = open_search(dataclasses.replace(library, embedder="none"))
    search.set_off("the search model is downloading (40%)", "downloading (40%)")
    assert search.off_summary == "downloading (40%)" and "40%" in search.off_reason
    with pytest.raises(SearchUnavailable, match="downloading"):
        search.by_text("cat")
    answers: list[str] = []

    def ask_while_it_turns_on() -> None:
        for _ in range(200):
            try:
                answers.append(filenames(search.by_text("red bicycle", k=1))[0])
            except SearchUnavailable:
                answers.append("off")

    asking = threading.Thread(target=ask_while_it_turns_on)
    asking.start()
    search.turn_on(WordEmbedder())
    asking.join(timeout=60)
    assert set(answers) <= {"off", "red-bicycle-snow.jpg"}  # never a half-turned state
    assert search.off_reason is None and search.off_summary is None
    assert filenames(search.by_text("red bicycle snow", k=1)) == ["red-bicycle-snow.jpg"]
