"""The local stack's KRaft cluster id: `kafka-storage format -t ID` must never read it as an option."""

from __future__ import annotations

import base64

from services.stack.kafka import new_cluster_id


def test_cluster_ids_never_start_with_a_dash_and_decode_to_16_bytes() -> None:
    ids = [new_cluster_id() for _ in range(3000)]  # ~1 in 64 raw ids starts with "-"
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)
