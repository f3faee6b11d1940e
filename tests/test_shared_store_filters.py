"""shared.store.filters: each filter's meaning, checked on real rows in Postgres."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from shared.photo_metadata import PhotoMetadata
from shared.store import Filters, ImageRecord

DAY = date(2019, 6, 1)
NAMES = [
    "top.jpg", "Italy.jpg", "Italy/a.jpg", "Italy/Rome/b.jpg", "Italy/Rome/deeper/c.jpg",
    "Italy2/d.jpg", "Italy-x/e.jpg", "Italy.old/f.jpg", "Ital/g.jpg",
    "2019 – Été/h.jpg", "100%_sure/i.jpg", "100x_sure/j.jpg",
]


def meta(taken: datetime, camera: str | None = None, place: bool = False) -> PhotoMetadata:
    return PhotoMetadata(taken_at=taken, taken_offset_minutes=None, taken_at_is_fallback=False,
                         camera_model=camera, latitude=45.0 if place else None,
                         longitude=9.0 if place else None)


@pytest.fixture
def rows(catalogue):
    """One row per name (no date), and rows around the edges of June 2019."""
    records = [ImageRecord(name, 1, 1, 1, f"{i:064x}", "JPEG", 1, None)
               for i, name in enumerate(NAMES)]
    edges = {
        "may-last.jpg": meta(datetime(2019, 5, 31, 23, 59, 59, 999999)),
        "june-first.jpg": meta(datetime(2019, 6, 1), "Canon EOS 40D", place=True),
        "june-last.jpg": meta(datetime(2019, 6, 30, 23, 59, 59, 999999), "canon eos 40d"),
        "july-first.jpg": meta(datetime(2019, 7, 1), "Canon EOS 40D", place=True),
    }
    records += [ImageRecord(f"dates/{name}", 1, 1, 1, f"{i + 100:064x}", "JPEG", 1, None, m)
                for i, (name, m) in enumerate(edges.items())]
    catalogue.upsert_images(records)
    return catalogue


def names(catalogue, **filters) -> set[str]:
    return {row.filename for row in catalogue.list_images(100, filters=Filters(**filters))}


def test_a_folder_is_its_whole_subtree_and_nothing_beside_it(rows):
    assert names(rows, folder="Italy") == {"Italy/a.jpg", "Italy/Rome/b.jpg", "Italy/Rome/deeper/c.jpg"}
    assert names(rows, folder="/Italy/Rome/") == {"Italy/Rome/b.jpg", "Italy/Rome/deeper/c.jpg"}
    assert names(rows, folder="Ital") == {"Ital/g.jpg"}
    assert names(rows, folder="2019 – Été") == {"2019 – Été/h.jpg"}
    assert names(rows, folder="100%_sure") == {"100%_sure/i.jpg"}  # no LIKE wildcards
    assert names(rows, folder="Nowhere") == set()
    assert len(names(rows, folder="/")) == len(NAMES) + 4  # the top: everything


def test_days_are_inclusive_at_both_ends(rows):
    june = names(rows, taken_after=DAY, taken_before=date(2019, 6, 30))
    assert june == {"dates/june-first.jpg", "dates/june-last.jpg"}
    assert names(rows, taken_after=date(2019, 7, 1)) == {"dates/july-first.jpg"}
    assert names(rows, taken_before=date(2019, 5, 31)) == {"dates/may-last.jpg"}
    assert names(rows, taken_before=date.max) == {f"dates/{n}" for n in (
        "may-last.jpg", "june-first.jpg", "june-last.jpg", "july-first.jpg")}  # undated rows: out
    assert names(rows, taken_after=date.min) == names(rows, taken_before=date.max)


def test_camera_is_exact_and_location_either_way(rows):
    assert names(rows, camera="Canon EOS 40D") == {"dates/june-first.jpg", "dates/july-first.jpg"}
    assert names(rows, has_location=True) == {"dates/june-first.jpg", "dates/july-first.jpg"}
    assert len(names(rows, has_location=False)) == len(NAMES) + 2
    assert names(rows, camera="Canon EOS 40D", has_location=True, taken_before=date(2019, 6, 30),
                 folder="dates") == {"dates/june-first.jpg"}


def test_filters_value_object():
    assert not Filters() and not Filters(folder="/") and Filters(has_location=False)
    both = Filters(folder="a/", camera="X")
    assert both.folder == "a" and both.without("camera") == Filters(folder="a")
