"""Stage 4: conflict rules, which turn a change into a conditional write.

``rule_for`` builds the rule a destination uses; ``squash_order`` tells the buffer how
two changes to one item squash without changing what the destinations end up holding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from replicator.buffer import Squash, SquashOrder, Supersedes
from replicator.config.model import ConflictConfig, ConflictPolicyName
from replicator.exceptions import MalformedImage
from replicator.images import Image
from replicator.records import Change
from replicator.rules.base import ConflictRule
from replicator.rules.custom import CustomRule, load_resolver
from replicator.rules.ordered import OrderedRule, Peers
from replicator.rules.overwrite import OverwriteRule
from replicator.rules.requests import Skip, Verdict, WriteRequest
from replicator.rules.ties import TIES

__all__ = [
    "BY_CREATION_TIME",
    "IN_STREAM_ORDER",
    "ConflictRule",
    "CustomRule",
    "OrderedRule",
    "OverwriteRule",
    "Skip",
    "Squash",
    "SquashOrder",
    "Verdict",
    "WriteRequest",
    "rule_for",
    "squash_order",
]


def rule_for(
    conflict: ConflictConfig, origin_attribute: str | None, peers: Peers | None = None
) -> ConflictRule:
    """``peers``: the job's and a destination's stamps (:class:`.ordered.Peers`)."""
    policy = conflict.policy
    if policy is ConflictPolicyName.LAST_WRITER_WINS:
        assert conflict.timestamp_attribute
        return OrderedRule(
            "last_writer_wins",
            conflict.timestamp_attribute,
            origin_attribute,
            numeric_only=False,
            peers=peers,
        )
    if policy is ConflictPolicyName.VERSION:
        assert conflict.version_attribute
        return OrderedRule("version", conflict.version_attribute, origin_attribute, True, peers)
    if policy is ConflictPolicyName.CUSTOM:
        assert conflict.resolver
        return CustomRule(load_resolver(conflict.resolver))
    return OverwriteRule()


def squash_order(rules: Sequence[ConflictRule], ordered_stream: bool) -> SquashOrder:
    """How the buffer squashes changes to one item written under ``rules`` (one per
    destination; the buffer is shared, so a squash must hold under each of them).

    The order that counts is the order in which the shard delivers the records: under
    ``overwrite``, ``last_writer_wins`` and ``version`` a squash never leaves a destination
    other than applying the records one at a time in that order would. On a DynamoDB
    stream that is the order of the changes at the source; on Kinesis Data Streams for
    DynamoDB an item's changes may arrive out of order or twice, and each record is
    applied as it arrives, with the rule's condition deciding.

    * ``overwrite`` on a DynamoDB stream: the later change replaces the earlier one
      (unconditional writes: the last one decides).
    * ``last_writer_wins`` and ``version``: by the rule's order, see :func:`_by_rank`.
    * ``custom`` (and ``overwrite`` on Kinesis, which the configuration refuses): the later
      change replaces the earlier one on a DynamoDB stream; on Kinesis the change created
      later wins, and two created in the same tick are both sent, in turn (which was made
      later cannot be told). The resolver sees only the change that remains, so this
      squash holds only for a resolver that decides from the incoming change and the
      destination's item.
    """
    orders = [_order_for(rule, ordered_stream) for rule in rules]
    if not orders:
        raise ValueError("a squash order needs the rule of at least one destination")
    if len(orders) == 1:
        return orders[0]

    def merge(queued: Change, incoming: Change) -> Squash:
        decisions = {order.merge(queued, incoming) for order in orders}
        return decisions.pop() if len(decisions) == 1 else Squash.BOTH

    def newer(skipped: Change, queued: Change) -> bool:
        return all(order.newer(skipped, queued) for order in orders)

    return SquashOrder(merge, newer)


def _order_for(rule: ConflictRule, ordered_stream: bool) -> SquashOrder:
    if isinstance(rule, OrderedRule):
        return SquashOrder(_by_rank(rule), _later if ordered_stream else _newer_by_rank(rule))
    if ordered_stream:
        return IN_STREAM_ORDER
    return BY_CREATION_TIME


def _later(newer: Change, older: Change) -> bool:
    """DynamoDB Streams deliver each item's changes in order: a later record is newer."""
    return True


def _replace(queued: Change, incoming: Change) -> Squash:
    return Squash.REPLACE


def _created_later(newer: Change, older: Change) -> bool:
    return (newer.created_us, newer.position) >= (older.created_us, older.position)


def _replace_if_created_later(queued: Change, incoming: Change) -> Squash:
    """On Kinesis, without a rank: the change created later stands for both. Two created
    in the same tick (a millisecond, the default precision) cannot be told apart, and
    Kinesis may deliver either first: both are sent, in turn, for the rule (a custom
    resolver) to decide each."""
    if incoming.created_us == queued.created_us:
        # A record delivered twice (Kinesis may) is one change: the copy stands for both.
        return Squash.REPLACE if _same_change(queued, incoming) else Squash.BOTH
    return Squash.REPLACE if incoming.created_us > queued.created_us else Squash.DROP


def _same_change(one: Change, other: Change) -> bool:
    """Whether two records carry one change: the same event and images, byte for byte."""
    return (
        one.event is other.event
        and _wire(one.new) == _wire(other.new)
        and _wire(one.old) == _wire(other.old)
    )


def _wire(image: Image | None) -> object:
    return None if image is None else (image.wire if image.wire is not None else image.item)


def _created_strictly_later(newer: Change, older: Change) -> bool:
    return newer.created_us > older.created_us


IN_STREAM_ORDER = SquashOrder(_replace, _later)
BY_CREATION_TIME = SquashOrder(_replace_if_created_later, _created_strictly_later)


def _by_rank(rule: OrderedRule) -> Callable[[Change, Change], Squash]:
    """Squash under a conditional rule so that the outcome is that of both writes in turn.

    With ``r`` the rank of a change's image (:meth:`OrderedRule.order` of the new image of
    a put, of the old image of a delete), and a put or delete applying when the
    destination's item ranks at or below its image:

    * a put after a queued delete is sent after it (delete then re-create): the delete
      clears items the put alone could not overwrite, and with ``active_active.tombstones``
      the delete's tombstone decides whether the re-create may land;
    * otherwise the incoming change replaces the queued one when ``r(incoming) >=
      r(queued)``: any item the queued write would have overwritten or deleted, the
      incoming one does too;
    * a put or delete that ranks below a queued put, or a delete that ranks below a queued
      delete, changes nothing after it and is dropped;
    * except that a delete of an image the job's or the destination's region wrote (it
      applies to that image only, :meth:`OrderedRule.deletes_only_its_image`) is never
      squashed,
      and a delete tying with the other change on (value, origin), with another
      image, sends both in order: a delete's condition also holds on an item that is its
      image with more attributes, or for an image too wide to compare whole, on one that
      agrees with it on the attributes compared (:meth:`OrderedRule.not_above`), so
      whether it applies after the other write depends on the destination's item, not on
      the two ranks.

    Changes whose rank is unknown (no write can be planned for them) or of two ordering
    types are both sent, in order.
    """

    def merge(queued: Change, incoming: Change) -> Squash:
        old = rule.order(queued.ranked)
        new = rule.order(incoming.ranked)
        if old is None or new is None or (old[0] and new[0] and old[0] != new[0]):
            return Squash.BOTH
        if queued.op_is_delete and not incoming.op_is_delete:
            return Squash.BOTH
        if rule.deletes_only_its_image(queued) or rule.deletes_only_its_image(incoming):
            return Squash.BOTH  # it applies to one image only, whatever the ranks
        try:
            if (queued.op_is_delete or incoming.op_is_delete) and new[:3] == old[:3] and new != old:
                return Squash.BOTH
            if new >= old:
                return Squash.REPLACE
            if new[:3] == old[:3]:  # two puts (a tie with a delete is sent both ways)
                TIES.later_put_lost(
                    rule.attribute,
                    incoming.keys,
                    lambda: rule.shown_apart(queued.ranked, incoming.ranked),
                    "squash",
                )
            return Squash.DROP
        except MalformedImage:  # a tie broken by the digest of an image that is not one
            return Squash.BOTH

    return merge


def _newer_by_rank(rule: OrderedRule) -> Supersedes:
    """Kinesis: a loop-skipped change is newer than a queued one that ranks below it (a
    delete just above the image it deleted), then by creation time."""

    def newer(skipped: Change, queued: Change) -> bool:
        mine = rule.order(skipped.ranked)
        theirs = rule.order(queued.ranked)
        if mine is None or theirs is None or (mine[0] and theirs[0] and mine[0] != theirs[0]):
            return _created_later(skipped, queued)
        try:
            return (mine, skipped.op_is_delete, skipped.created_us, skipped.position) >= (
                theirs,
                queued.op_is_delete,
                queued.created_us,
                queued.position,
            )
        except MalformedImage:  # a tie broken by the digest of an image that is not one
            return _created_later(skipped, queued)

    return newer
