"""A pass's statements on SQLite's driver bind timestamps as SQLAlchemy would have: the same
text, so that they compare and sort with every other row's."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects.sqlite import pysqlite

from apps.orchestrator.model.models import UTCDateTime
from apps.orchestrator.model.prepared import _bind_processor


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 1, 1, 1, 0, 0, 7, tzinfo=timezone(timedelta(hours=5))),
        None,
    ],
)
def test_timestamps_are_bound_as_sqlalchemy_binds_them(value: datetime | None) -> None:
    dialect = pysqlite.dialect()
    stored = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    ours = _bind_processor(UTCDateTime(), dialect)
    assert stored is not None and ours is not None
    assert ours(value) == stored(value)


def test_a_naive_timestamp_is_refused() -> None:
    ours = _bind_processor(UTCDateTime(), pysqlite.dialect())
    assert ours is not None
    with pytest.raises(ValueError, match="naive"):
        ours(datetime(2026, 1, 2))
