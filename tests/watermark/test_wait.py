"""``wait_until_replicated`` as an application calls it: what it refuses before reading
anything, and how long it may take when the status table does not answer."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from replicator.watermark import wait_until_replicated
from tests.support.aws import client

PLUS_ONE = timezone(timedelta(hours=1))
MINUS_ONE = timezone(timedelta(hours=-1))


@pytest.mark.parametrize(
    ("times", "message"),
    [
        (
            {"until": 1796097900000},
            "until 1796097900000: looks like epoch milliseconds: give seconds, e.g. 1796097900",
        ),
        ({"until": 1796097900123456}, "looks like epoch microseconds"),
        ({"until": 1e20}, "until 1e+20: out of range"),
        ({"until": datetime(1, 1, 1, tzinfo=PLUS_ONE)}, "until 0001-01-01T00:00:00+01:00: before"),
        ({"until": datetime(9999, 12, 31, 23, 59, 59, tzinfo=MINUS_ONE)}, "out of range"),
        ({"until": 1e9, "since": datetime(1960, 1, 1, tzinfo=UTC)}, "since 1960-01-01"),
        ({"until": -1.0}, "until -1.0: not a time"),
        ({"until": datetime(2026, 1, 1)}, "has no time zone"),
    ],
)
def test_a_time_it_cannot_wait_for_is_refused_before_waiting(
    moto_endpoint: str, times: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        wait_until_replicated(
            **times,
            destination="eu-west-1/replica",
            status_table="wm-times-watermark",
            client=client("dynamodb", "eu-west-1", moto_endpoint),
            timeout=1,
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"until": 1e9, "since": 1e9 + 100}, "since 1000000100.0 is after until 1000000000.0"),
        ({"until": 1e9, "poll_interval": math.nan}, "poll_interval nan: must be a positive"),
        ({"until": 1e9, "poll_interval": math.inf}, "poll_interval inf: must be a positive"),
        ({"until": 1e9, "poll_interval": 0}, "poll_interval 0: must be a positive"),
        ({"until": 1e9, "timeout": math.nan}, "timeout nan: not a number of seconds"),
    ],
)
def test_an_inverted_window_or_a_poll_or_timeout_that_is_no_number_is_refused(
    moto_endpoint: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        wait_until_replicated(
            **{"timeout": 1, **options},
            destination="eu-west-1/replica",
            status_table="wm-options-watermark",
            client=client("dynamodb", "eu-west-1", moto_endpoint),
        )
