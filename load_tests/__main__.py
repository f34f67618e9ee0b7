"""`make bench`: the load profiles and the component benchmarks, and a report against the targets.

    .venv/bin/python -m load_tests [--quick | --full] [--only NAME ...]

--quick (the default, ≈ 18 minutes on 2 cores): constant 1,000 results/s for 60 s, a ramp 500 →
5,000 results/s over 90 s, the record day 2022-01-10 × 0.1 in 3 minutes, and shortened component
benchmarks. --full (≈ 1 hour): constant 1,000 results/s for 3 minutes, 5,000 results/s sustained for
10 minutes (issue #16; 3,000 before it), a ramp to 6,000 results/s over 5 minutes, the record day
× 0.5 in 12 minutes, and the component benchmarks at their default sizes. NAME: constant, sustained,
ramp, replay, parse, gateway, worker, opendata, dashboard. Writes `load_tests/results/<name>.json`
(+ `.png` for the profiles), `report.json` and `report.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from load_tests import profiles
from load_tests.simulate import RESULTS_DIR, RunOptions, run_profile, summary_line
from services.core.config import load_settings

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Component:
    module: str
    args: tuple[str, ...]
    output: str  # the JSON file the benchmark writes in results/


def components(full: bool) -> dict[str, list[Component]]:
    seconds = "60" if full else "15"
    return {
        "parse": [Component("bench_parse", () if full else ("--messages", "3000", "--hl7apy-messages", "150"),
                            "bench_parse.json")],
        "gateway": [
            Component("bench_gateway", ("--seconds", seconds), "bench_gateway.json"),
            Component("bench_gateway", ("--seconds", seconds, "--rate", "1000"), "bench_gateway-1000.json"),
            Component("bench_gateway", ("--seconds", "30" if full else "10", "--processes", "1", "2",
                                        "--passes", "3" if full else "2"), "bench_gateway-processes.json"),
        ],
        "labs5000": [Component("labs5000", () if full else ("--minutes", "3"), "labs5000.json")],
        "worker": [Component("bench_worker", () if full else ("--results", "50000", "--persons", "20000"),
                             "bench_worker.json")],
        "opendata": [Component("bench_opendata", (), "bench_opendata.json")],
        "dashboard": [Component("bench_dashboard", () if full else ("--days", "365", "--runs", "5"),
                                "bench_dashboard.json")],
    }


def load_profiles(full: bool) -> dict[str, Callable[[], profiles.Profile]]:
    reference = load_settings().reference_dir
    if full:
        return {
            "constant": lambda: profiles.constant(1000, 180),
            "sustained": lambda: profiles.constant(5000, 600, name="sustained"),
            "ramp": lambda: profiles.ramp(500, 6000, 300),
            "replay": lambda: profiles.replay(reference, scale=0.5, minutes=12),
        }
    return {
        "constant": lambda: profiles.constant(1000, 60),
        "ramp": lambda: profiles.ramp(500, 5000, 90),
        "replay": lambda: profiles.replay(reference, scale=0.1, minutes=3),
    }


def run_component(name: str, component: Component) -> dict[str, Any]:
    path = HERE / f"{component.module}.py"
    if not path.exists():
        return {"skipped": f"{path.name} is not there"}
    output = RESULTS_DIR / component.output
    before = output.stat().st_mtime if output.exists() else 0.0
    print(f"\n== {name}: {component.module} {' '.join(component.args)}", flush=True)
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", f"load_tests.{component.module}", *component.args],
        cwd=HERE.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800,
    )
    print(completed.stdout, end="", flush=True)
    if completed.returncode != 0:
        return {"error": f"exit {completed.returncode}", "output": completed.stdout[-2000:]}
    figures: dict[str, Any] = {"wall_time_s": round(time.monotonic() - started, 1)}
    if output.exists() and output.stat().st_mtime > before:
        figures |= json.loads(output.read_text())
    else:
        figures["output"] = completed.stdout[-2000:]
    return figures


def _get(document: dict[str, Any], *path: str) -> Any:
    value: Any = document
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _target(
    what: str, value: float | None, limit: float, at_most: bool, source: str, before: str | None = None
) -> dict[str, Any]:
    """One row of the report; `before`: the figure the target was set against, where one was measured."""
    met = None if value is None else (value <= limit if at_most else value >= limit)
    return {
        "target": what, "value": value, "limit": limit, "comparison": "≤" if at_most else "≥",
        "ratio": None if value is None or not limit else round(value / limit, 2),
        "met": met, "source": source, "before": before,
    }


# The figures issue #16 measured on the 2-core reference machine before its work (the "before" column).
BEFORE_16 = {
    "gateway_cpu": "0.33–0.39",
    "parse_normalize": "12,309",
    "worker": "15,000",
    "sustained": "3,000",
}


def performance_targets(parts: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #16's targets: CPU per message at the gateway, parse + normalize on one core, one worker."""
    by_processes = _get(parts, "gateway", "bench_gateway-processes.json", "summary") or {}
    rows = [
        _target(f"gateway: CPU ms per message, {n} process{'es' if n != '1' else ''} (closed loop)",
                _get(by_processes, n, "gateway_cpu_ms_per_message_median"), 0.12, True,
                "bench_gateway --processes 1 2", BEFORE_16["gateway_cpu"] if n == "1" else None)
        for n in ("1", "2")
    ]
    parse = _get(parts, "parse", "bench_parse.json", "messages_per_second") or {}
    rows.append(_target("parse + normalize, sealing on: messages/s on one core",
                        parse.get("ours_parse_normalize"), 30000, False, "bench_parse",
                        BEFORE_16["parse_normalize"]))
    rows.append(_target("worker: results/s, one process, deduplication on",
                        _get(parts, "worker", "bench_worker.json", "results_per_second_after_startup"), 25000,
                        False, "bench_worker", BEFORE_16["worker"]))
    return rows


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    runs, parts = report["profiles"], report["components"]
    rows = [
        _target("gateway: acknowledged messages/s, 100 connections (closed loop)",
                _get(parts, "gateway", "bench_gateway.json", "messages_per_second"), 5000, False,
                "bench_gateway"),
        _target("gateway: p99 ACK latency (ms) at 1,000 messages/s offered",
                _get(parts, "gateway", "bench_gateway-1000.json", "ack_p99_ms"), 50, True,
                "bench_gateway --rate 1000"),
        _target("full stack: p99 ACK latency (ms) at 1,000 results/s",
                _get(runs, "constant", "ack_latency", "p99_ms"), 50, True, "profile constant"),
    ]
    if "sustained" in runs:
        sustained = runs["sustained"]
        rows.append(_target("end to end: results/s stored, 5,000 offered for 10 min",
                            sustained.get("stored_results_per_second"), 5000, False, "profile sustained",
                            BEFORE_16["sustained"]))
        rows.append(_target("end to end: consumer lag at the end of the 10 min (messages; bounded = < 10 s "
                            "of traffic)", _get(sustained, "consumer_lag", "at_end_of_sending"), 50000, True,
                            "profile sustained"))
        rows.append(_target("end to end: handoff p99 ACK → tracing platform (ms), same 10 min",
                            _get(sustained, "handoff", "p99_ms"), 5000, True, "profile sustained"))
    elif "ramp" in runs:
        ramp = runs["ramp"]
        rows.append(_target(f"end to end: results/s stored, best {ramp['best_window_s']} s of the ramp's "
                            "sending (indicative; the 10-minute run is --full)",
                            ramp["stored_results_per_second_best_window"], 3000, False, "profile ramp"))
    labs = _get(parts, "labs5000", "labs5000.json") or {}
    rows += [
        _target("5,000 labs: connections the gateway held to the end (its gauge)",
                labs.get("gateway_connections_at_end"), 5000, False, "labs5000"),
        _target("5,000 labs: p99 ACK latency (ms), ≈ 1,000 messages/s", _get(labs, "ack_latency", "p99_ms"),
                100, True, "labs5000"),
        _target("5,000 labs: wrong ACKs + dropped connections",
                None if not labs else labs["wrong_acks"] + labs["dropped_connections"], 0, True, "labs5000"),
        _target("5,000 labs: gateway peak RSS (MB)", labs.get("gateway_peak_rss_mb"), 300, True, "labs5000"),
        _target("end to end: p99 ACK → committed (ms) at 1,000 results/s",
                _get(runs, "constant", "end_to_end", "p99_ms"), 2000, True, "profile constant"),
        _target("handoff: p99 ACK → tracing platform (ms) at 1,000 results/s",
                _get(runs, "constant", "handoff", "p99_ms"), 5000, True, "profile constant"),
    ]
    rows += performance_targets(parts)
    for service in ("gateway", "worker", "tracing"):
        peaks = [_get(run, "processes", service, "peak_rss_mb") for run in runs.values()]
        known = [p for p in peaks if p is not None]
        rows.append(_target(f"memory: {service} peak RSS (MB), all profiles", max(known) if known else None,
                            300, True, "profiles"))
    for name, run in runs.items():
        checked = run["correctness"]["ok"] is not None
        wrong = run["correctness"]["missing"] + run["correctness"]["stored_more_than_once"]
        rows.append(_target(f"correctness ({name}): AA results not stored exactly once"
                            + ("" if checked else " (not judged: not drained in time)"),
                            wrong if checked else None, 0, True, f"profile {name}"))
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):  # small figures (CPU ms per message, ratios) keep 3 significant digits
        return f"{value:.3g}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        f"# LabFlow benchmarks ({report['mode']}, {report['generated_at']})",
        "",
        f"Machine: {machine['cpus']} CPUs, Python {machine['python']}, load average at start "
        f"{machine['load_average_at_start']}. Kafka and PostgreSQL are the local stack, shared with other "
        "work on the machine: figures vary from run to run.",
        "",
        "## Targets",
        "",
        "| target | measured | target | ratio | met | before (issue #16) |",
        "|---|---:|---:|---:|:---:|---:|",
    ]
    for row in report["targets"]:
        met = {True: "yes", False: "**no**", None: "not run"}[row["met"]]
        lines.append(f"| {row['target']} | {_fmt(row['value'])} | {row['comparison']} {_fmt(row['limit'])} | "
                     f"{_fmt(row['ratio'])} | {met} | {row.get('before') or ''} |")
    lines += ["", "## Load profiles", "",
              "| profile | offered results/s (peak) | acknowledged results/s | "
              "stored results/s (best window) | ACK p50 / p99 / max ms | ACK → stored p50 / p99 ms | "
              "handoff p50 / p99 ms (cases) | "
              "max lag (lag > 5,000 at offered results/s) | "
              "CPU % gateway / worker / tracing / simulator / kafka / postgres | "
              "peak RSS MB gateway / worker / tracing | exactly once |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for name, run in report["profiles"].items():
        ack, e2e, handoff, procs = run["ack_latency"], run["end_to_end"], run["handoff"], run["processes"]
        cpu = " / ".join(_fmt(_get(procs, p, "cpu_mean_percent"))
                         for p in ("gateway", "worker", "tracing", "simulator", "kafka", "postgres"))
        rss = " / ".join(_fmt(procs[p]["peak_rss_mb"]) for p in ("gateway", "worker", "tracing"))
        lines.append(
            f"| {name}: {run['description']} | {_fmt(run['offered_results_per_second'])} "
            f"({_fmt(run['offered_peak_results_per_second'])}) | "
            f"{_fmt(run['achieved_results_per_second'])} | {_fmt(run['stored_results_per_second'])} "
            f"({_fmt(run['stored_results_per_second_best_window'])}) | "
            f"{_fmt(ack['p50_ms'])} / {_fmt(ack['p99_ms'])} / {_fmt(ack['max_ms'])} | "
            f"{_fmt(e2e['p50_ms'])} / {_fmt(e2e['p99_ms'])} | "
            f"{_fmt(handoff['p50_ms'])} / {_fmt(handoff['p99_ms'])} ({_fmt(handoff['count'])}) | "
            f"{_fmt(run['consumer_lag']['max'])} "
            f"({_fmt(run['consumer_lag'].get('above_5000_at_offered_results_per_second'))}) | "
            f"{cpu} | {rss} | {run['correctness']['ok']} |"
        )
    lines += ["", "Plots: " + ", ".join(f"`{name}.png`" for name in report["profiles"]), "",
              "## Component benchmarks", ""]
    parts = report["components"]
    parse = _get(parts, "parse", "bench_parse.json", "messages_per_second") or {}
    for key, value in parse.items():
        lines.append(f"- parse: {key}: {_fmt(value)} messages/s")
    for file, label in (("bench_gateway.json", "closed loop"),
                        ("bench_gateway-1000.json", "1,000 msg/s offered")):
        g = _get(parts, "gateway", file)
        if g and "messages_per_second" in g:
            lines.append(f"- gateway ({label}, {g['connections']} connections): "
                         f"{_fmt(g['messages_per_second'])} messages/s, ACK p50 / p99 / max "
                         f"{g['ack_p50_ms']} / {g['ack_p99_ms']} / {g['ack_max_ms']} ms, "
                         f"{g.get('gateway_cpu_ms_per_message')} CPU ms/message")
    processes = _get(parts, "gateway", "bench_gateway-processes.json", "summary") or {}
    for n, row in processes.items():
        lines.append(f"- gateway --processes {n} (closed loop, {row['passes']} interleaved passes, median): "
                     f"{_fmt(round(row['messages_per_second_median']))} messages/s, "
                     f"{_fmt(row['gateway_cpu_ms_per_message_median'])} CPU ms/message (load average "
                     f"{row['load_average_1min']})")
    labs = _get(parts, "labs5000", "labs5000.json")
    if labs and "ack_latency" in labs:
        lines.append(f"- 5,000 labs ({labs['steady_s'] / 60:g} min, {_fmt(labs['messages_per_second'])} "
                     f"messages/s): held {labs['gateway_connections_at_end']}, ACK p50 / p99 / max "
                     f"{labs['ack_latency']['p50_ms']} / {labs['ack_latency']['p99_ms']} / "
                     f"{labs['ack_latency']['max_ms']} ms, {labs['wrong_acks']} wrong ACKs, "
                     f"{labs['dropped_connections']} dropped, "
                     f"gateway peak RSS {labs['gateway_peak_rss_mb']} MB")
    w = _get(parts, "worker", "bench_worker.json")
    if w and "results_per_second" in w:
        lines.append(f"- worker: {_fmt(w['results_per_second'])} results/s ({_fmt(w['results'])} results, "
                     f"{_fmt(w['results_per_second_after_startup'])}/s after start-up)"
                     + "".join(f"; CPU ms per 1,000 results: {', '.join(f'{k} {v}' for k, v in cpu.items())}"
                               for cpu in [w.get("cpu_ms_per_1000_results")] if cpu))
    o = _get(parts, "opendata", "bench_opendata.json")
    if o and "publish_seconds" in o:
        lines.append(f"- open data: publication of {_fmt(o['days'])} days in {o['publish_seconds']} s "
                     f"(budget {o['budget_seconds']} s)")
    d = _get(parts, "dashboard", "bench_dashboard.json")
    if d and isinstance(d.get("endpoints"), dict):
        lines.append(f"- dashboard ({_fmt(d.get('days'))} days; budget {d.get('budget_ms')} ms), "
                     "median / p95 ms:")
        lines += [f"  - {name}: {_fmt(e.get('median_ms'))} / {_fmt(e.get('p95_ms'))}"
                  for name, e in d["endpoints"].items()]
    elif d:
        lines.append(f"- dashboard: {str(d.get('output', d))[-600:]}")
    for name, error in report["errors"].items():
        lines.append(f"- **{name} failed**: {error}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the shortened run (default)")
    mode.add_argument("--full", action="store_true", help="10-minute sustained run and full-size benchmarks")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only these (repeatable)")
    parser.add_argument("--labs", type=int, default=200, help="simulated labs (default 200)")
    args = parser.parse_args()

    plans = load_profiles(args.full)
    parts = components(args.full)
    known = set(plans) | set(parts)
    wanted = set(args.only or known)
    if unknown := wanted - known:
        parser.error(f"unknown NAME {sorted(unknown)}; choose from {sorted(known)}")

    report: dict[str, Any] = {
        "mode": "full" if args.full else "quick",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "profiles": {}, "components": {}, "errors": {},
    }
    started = time.monotonic()
    for name, make in plans.items():
        if name not in wanted:
            continue
        profile = make()
        print(f"\n== profile {name}: {profile.description}", flush=True)
        try:
            run = run_profile(profile, RunOptions(labs=args.labs, drain_s=600 if args.full else 180))
        except Exception as exc:  # one failed run must not lose the others' figures
            traceback.print_exc()
            report["errors"][name] = f"{type(exc).__name__}: {exc}"
            continue
        print(summary_line(run), flush=True)
        report["profiles"][name] = {k: v for k, v in run.items() if k != "series"}
    for name, benchmarks in parts.items():
        if name not in wanted:
            continue
        figures: dict[str, Any] = {}
        for component in benchmarks:
            try:
                figures[component.output] = run_component(name, component)
            except Exception as exc:
                report["errors"][f"{name} ({component.output})"] = f"{type(exc).__name__}: {exc}"
            if error := _get(figures, component.output, "error"):
                report["errors"][f"{name} ({component.output})"] = error
        report["components"][name] = figures
    report["targets"] = targets(report)
    report["wall_time_s"] = round(time.monotonic() - started, 1)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (RESULTS_DIR / "report.md").write_text(text)
    print("\n" + text)
    print(f"written to {RESULTS_DIR / 'report.json'} and report.md ({report['wall_time_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
