"""``--destination`` finds a destination by its name, its table or its ``<region>/<table>``:
no name may be another destination's ``<region>/<table>``, and a spelling that fits
several destinations is refused with spellings that each find the one they are offered
for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from replicator.config.destinations import resolve_destination
from replicator.config.loader import parse_job
from replicator.exceptions import ConfigError
from tests.config.test_job_checks import _refused

SOURCE = "source: {region: us-east-1, table: src}\n"
ROLE_222 = "arn:aws:iam::222222222222:role/replica-writer"
ROLE_333 = "arn:aws:iam::333333333333:role/replica-writer"


def test_a_name_that_is_another_destinations_region_and_table_is_refused(
    tmp_path: Path,
) -> None:
    """It was accepted, and ``-d ap-southeast-2/ttt`` (which the refusal of ``-d ttt``
    suggested) then chose the eu-west-1 destination."""
    line = _refused(
        tmp_path,
        SOURCE
        + "destinations:\n"
        + "  - {region: eu-west-1, table: ttt, name: ap-southeast-2/ttt}\n"
        + "  - {region: ap-southeast-2, table: ttt, name: apdest}\n",
        "destinations[0].name",
        "(line 3)",
        "'ap-southeast-2/ttt' is the <region>/<table> of destinations[1]",
    )
    assert "give this destination another name" in line, line


def test_a_name_that_is_its_own_region_and_table_is_accepted(tmp_path: Path) -> None:
    """The default name, written out, even where a destination of the same region and
    table in another account goes by a name: each is found by its own name."""
    resolved = parse_job(
        SOURCE
        + "destinations:\n"
        + f"  - {{region: eu-west-1, table: ttt, name: eu-west-1/ttt, role_arn: '{ROLE_222}'}}\n"
        + f"  - {{region: eu-west-1, table: ttt, name: other, role_arn: '{ROLE_333}'}}\n",
        tmp_path / "job.yaml",
    )
    assert resolve_destination(resolved, "eu-west-1/ttt").role_arn == ROLE_222
    assert resolve_destination(resolved, "other").role_arn == ROLE_333


def _offered(message: str) -> list[str]:
    """The spellings a refusal offers: quoted, after '; give '."""
    return re.findall(r"'([^']+)'", message.partition("; give ")[2])


@pytest.mark.parametrize(
    ("destinations", "given", "offered"),
    [
        (  # a name that is another's table: the named one by its <region>/<table>
            "  - {region: eu-west-1, table: orders-eu, name: orders}\n"
            "  - {region: us-west-2, table: orders}\n",
            "orders",
            ["eu-west-1/orders-eu", "us-west-2/orders"],
        ),
        (  # one region and table in two accounts: by name alone
            f"  - {{region: us-west-2, table: orders, name: dr-222, role_arn: '{ROLE_222}'}}\n"
            f"  - {{region: us-west-2, table: orders, name: dr-333, role_arn: '{ROLE_333}'}}\n",
            "us-west-2/orders",
            ["dr-222", "dr-333"],
        ),
        (  # one table in two regions, one named
            "  - {region: eu-west-1, table: ttt, name: eudest}\n"
            "  - {region: ap-southeast-2, table: ttt}\n",
            "ttt",
            ["eudest", "ap-southeast-2/ttt"],
        ),
    ],
    ids=["name-is-a-table", "two-accounts", "one-table-two-regions"],
)
def test_a_spelling_that_fits_several_is_refused_offering_one_that_finds_each(
    tmp_path: Path, destinations: str, given: str, offered: list[str]
) -> None:
    resolved = parse_job(SOURCE + "destinations:\n" + destinations, tmp_path / "job.yaml")
    with pytest.raises(ConfigError, match="fits several destinations") as refused:
        resolve_destination(resolved, given)
    assert _offered(str(refused.value)) == offered, refused.value
    found = [resolve_destination(resolved, spelling) for spelling in offered]
    assert len({id(destination) for destination in found}) == len(offered)


def test_a_destination_no_spelling_finds_is_named_rather_than_offered_by_another_spelling(
    tmp_path: Path,
) -> None:
    """Its name is another destination's table, and its <region>/<table> is the (default)
    name of the one of the same region and table in another account: the refusal offered
    "<region>/<table>", which finds that other one."""
    resolved = parse_job(
        SOURCE + "destinations:\n"
        f"  - {{region: eu-west-1, table: orders, role_arn: '{ROLE_222}'}}\n"
        f"  - {{region: eu-west-1, table: orders, name: items, role_arn: '{ROLE_333}'}}\n"
        "  - {region: us-west-2, table: items}\n",
        tmp_path / "job.yaml",
    )
    assert resolve_destination(resolved, "eu-west-1/orders").role_arn == ROLE_222
    with pytest.raises(ConfigError) as refused:
        resolve_destination(resolved, "items")
    message = str(refused.value)
    assert "'eu-west-1/orders'" not in message, message
    assert _offered(message.partition("; items (")[0]) == ["us-west-2/items"], message
    assert message.endswith(
        "; items (eu-west-1/orders) is found by no spelling: its name is another "
        "destination's table and its <region>/<table> another's name; give it a name "
        "no other destination has as its table"
    ), message
