"""The load simulator's ACK records load into the table its analysis reads (the profiles' figures)."""

from __future__ import annotations

import csv
import io

from load_tests.simulate import ACK_COLUMNS, ack_record


def test_an_ack_record_has_one_value_per_column_of_bench_acks() -> None:
    line = ack_record("A06F000000002", "LT-LAB-0001", "new", "AA", 3, 0.002237, 0.049372, 0.173365, True)
    (row,) = csv.reader(io.StringIO(line))
    assert dict(zip((name for name, _ in ACK_COLUMNS), row, strict=True)) == {
        "control_id": "A06F000000002", "lab": "LT-LAB-0001", "kind": "new", "code": "AA", "results": "3",
        "scheduled": "0.002237", "sent": "0.049372", "acked": "0.173365", "send_again": "1",
    }
