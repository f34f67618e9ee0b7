"""`make bench`'s report: issue #16's performance targets next to the figures they were set against."""

from __future__ import annotations

from typing import Any

from load_tests.__main__ import markdown, targets


def _report(components: dict[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = {
        "mode": "quick", "generated_at": "2026-12-01T12:00:00+00:00",
        "machine": {"cpus": 2, "python": "3.11", "load_average_at_start": [0.5, 0.5, 0.5]},
        "profiles": {}, "components": components, "errors": {},
    }
    report["targets"] = targets(report)
    return report


def _processes(cpu_ms: float) -> dict[str, Any]:
    """One entry of bench_gateway's `--processes` summary."""
    return {"gateway_cpu_ms_per_message_median": cpu_ms, "passes": 2, "messages_per_second_median": 3397.5,
            "load_average_1min": [0.4, 1.2]}


def _row(report: dict[str, Any], starts: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = [r for r in report["targets"] if r["target"].startswith(starts)]
    assert len(rows) == 1
    return rows[0]


def test_the_performance_targets_read_each_benchmark_and_carry_the_figure_before() -> None:
    report = _report({
        "gateway": {"bench_gateway-processes.json": {"summary": {
            "1": _processes(0.11), "2": _processes(0.338),
        }}},
        "parse": {"bench_parse.json": {"messages_per_second": {"ours_parse_normalize": 10071}}},
        "worker": {"bench_worker.json": {"results_per_second_after_startup": 26000, "results": 100000,
                                         "results_per_second": 24000,
                                         "cpu_ms_per_1000_results": {"worker": 49.4, "postgresql": 39.6}}},
    })
    one = _row(report, "gateway: CPU ms per message, 1 ")
    two = _row(report, "gateway: CPU ms per message, 2 ")
    assert (one["value"], one["met"], one["before"]) == (0.11, True, "0.33–0.39")
    assert (two["value"], two["met"], two["before"]) == (0.338, False, None)
    parse = _row(report, "parse + normalize")
    assert (parse["value"], parse["met"], parse["before"]) == (10071, False, "12,309")
    worker = _row(report, "worker: results/s")
    assert (worker["value"], worker["met"], worker["before"]) == (26000, True, "15,000")

    text = markdown(report)
    assert "| gateway: CPU ms per message, 2 processes (closed loop) | 0.338 | ≤ 0.12 | 2.82 | **no** |  |" \
        in text
    assert ("| parse + normalize, sealing on: messages/s on one core | 10,071 | ≥ 30,000 | 0.34 | **no** "
            "| 12,309 |") in text
    assert "gateway --processes 1 (closed loop, 2 interleaved passes, median): 3,398 messages/s, 0.11 CPU" \
        in text
    assert "CPU ms per 1,000 results: worker 49.4, postgresql 39.6" in text


def test_a_benchmark_that_did_not_run_is_not_run_not_failed() -> None:
    report = _report({})
    for starts in ("gateway: CPU ms per message, 1 ", "parse + normalize", "worker: results/s"):
        row = _row(report, starts)
        assert row["value"] is None and row["met"] is None
    assert "| worker: results/s, one process, deduplication on | – | ≥ 25,000 | – | not run | 15,000 |" \
        in markdown(report)


def test_the_sustained_profile_is_held_to_throughput_lag_and_handoff() -> None:
    report = _report({})
    report["profiles"] = {"sustained": {
        "stored_results_per_second": 3000, "consumer_lag": {"at_end_of_sending": 0},
        "handoff": {"p99_ms": 145064.4},
        "correctness": {"ok": True, "missing": 0, "stored_more_than_once": 0},
    }}
    report["targets"] = targets(report)
    stored = _row(report, "end to end: results/s stored, 5,000 offered")
    assert (stored["value"], stored["met"], stored["before"]) == (3000, False, "3,000")
    assert _row(report, "end to end: consumer lag")["met"] is True
    handoff = _row(report, "end to end: handoff p99")
    assert (handoff["value"], handoff["met"]) == (145064.4, False)
