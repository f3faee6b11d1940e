"""browse.filters: query parameters in, links and chips out."""

from __future__ import annotations

from datetime import date

import pytest
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest

from browse.filters import chips, filter_args, parse_filters
from shared.store import Filters

FULL = {"folder": "Italy/Rome", "taken_after": "2019-07-01", "taken_before": "2019-07-31",
        "camera": "FUJIFILM X-T3", "has_location": "false"}


def test_parameters_round_trip_through_links():
    filters = parse_filters(MultiDict(FULL))
    assert filters == Filters("Italy/Rome", date(2019, 7, 1), date(2019, 7, 31), "FUJIFILM X-T3", False)
    assert filter_args(filters) == FULL
    assert parse_filters(MultiDict({"has_location": "YES", "folder": " /a/ "})) == Filters(folder="a", has_location=True)
    assert parse_filters(MultiDict({name: "" for name in FULL})) == Filters()


def test_each_chip_removes_only_itself():
    found = chips(parse_filters(MultiDict(FULL)))
    assert [c.label for c in found] == ["Folder: Italy/Rome", "From 2019-07-01", "Until 2019-07-31",
                                        "Camera: FUJIFILM X-T3", "Without a place"]
    for chip in found:
        assert chip.without == {k: v for k, v in FULL.items() if k != chip.name}
    assert chips(Filters()) == []


@pytest.mark.parametrize("args, named", [
    ({"taken_after": "2019-02-29"}, "taken_after"),
    ({"taken_before": "20190101"}, "taken_before"),
    ({"has_location": "2"}, "has_location"),
    ({"camera": "a\x00b"}, "camera"),
    ({"folder": "\ud800"}, "folder"),
    ({"taken_after": "2019-02-02", "taken_before": "2019-02-01"}, "taken_after"),
])
def test_malformed_filters_are_a_400_naming_the_parameter(args, named):
    with pytest.raises(BadRequest) as error:
        parse_filters(MultiDict(args))
    assert named in error.value.description
