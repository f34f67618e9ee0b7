"""Messages per second of our ER7 parse + normalize versus hl7apy, on one core, same corpus.

    .venv/bin/python load_tests/bench_parse.py [--messages 5000] [--seed 1]

The corpus is simulator-generated ORU^R01 (one patient, 1–3 results, versions 2.3.1 / 2.5 / 2.5.1).
Figures: our parser alone; parse + normalize as the gateway runs it (sealing the identity for the
tracing service once per patient included: `services.core.sealing.Sealer`); the same without
sealing (to show its share); hl7apy `parse_message` with and without group finding (on a smaller
sample: it is slow). Writes
`load_tests/results/bench_parse.json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message as hl7apy_parse
from nacl.public import PrivateKey

from services.core.domain.model import PARIS, Transport
from services.gateway.hl7.normalize import normalize_oru
from services.gateway.hl7.parse import parse_message
from services.gateway.identity import IdentityProtector
from services.simulator.oru import build_oru_r01, random_order, random_patient

RESULTS = Path(__file__).resolve().parent / "results" / "bench_parse.json"
NOW = datetime(2024, 1, 16, tzinfo=UTC)


class _UnsealedProtector(IdentityProtector):
    """Same pseudonyms, sealing replaced by a constant: isolates the cost of the sealed box."""

    def seal(self, identity: dict[str, Any]) -> str:
        return "not-sealed"


def corpus(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    messages = []
    for index in range(count):
        result_time = datetime(2024, 1, 15, 10, tzinfo=PARIS) - timedelta(minutes=rng.randrange(24 * 60))
        results = rng.choice((1, 2, 3))
        if rng.random() < 0.5:
            orders = [random_order(rng, result_time, observations=results)]
        else:
            orders = [random_order(rng, result_time) for _ in range(results)]
        version = rng.choice(("2.3.1", "2.5", "2.5.1"))
        messages.append(build_oru_r01("LAB01", f"C{index}", [(random_patient(rng), orders)], version=version))
    return messages


def rate(label: str, messages: list[bytes], run: Callable[[bytes], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for message in messages:
            run(message)
        best = min(best, time.perf_counter() - start)
    per_second = len(messages) / best
    print(f"{label:48s} {per_second:>10,.0f} msg/s  ({best / len(messages) * 1e6:8.1f} µs/msg)")
    return per_second


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--hl7apy-messages", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    messages = corpus(args.messages, args.seed)
    sample = messages[: args.hl7apy_messages]
    texts = [m.decode("utf-8") for m in sample]
    tracing_key = bytes(PrivateKey.generate().public_key)
    sealed = IdentityProtector(b"bench-pseudonym-key-0123456789ab", tracing_key)
    unsealed = _UnsealedProtector(b"bench-pseudonym-key-0123456789ab", tracing_key)
    results_per_message = sum(
        len(normalize_oru(m, received_at=NOW, transport=Transport.MLLP, protector=sealed, now=NOW).results)
        for m in messages
    ) / len(messages)
    print(
        f"corpus: {len(messages)} messages, {sum(map(len, messages)) / len(messages):.0f} bytes "
        f"and {results_per_message:.2f} results per message on average; python {platform.python_version()}"
    )

    figures = {
        "ours_parse": rate("ours: parse", messages, parse_message),
        "ours_parse_normalize": rate(
            "ours: parse + normalize (sealed identity)",
            messages,
            lambda m: normalize_oru(m, received_at=NOW, transport=Transport.MLLP, protector=sealed, now=NOW),
        ),
        "ours_parse_normalize_without_sealing": rate(
            "ours: parse + normalize (sealing stubbed)",
            messages,
            lambda m: normalize_oru(
                m, received_at=NOW, transport=Transport.MLLP, protector=unsealed, now=NOW
            ),
        ),
        "hl7apy_parse_find_groups_false": rate(
            "hl7apy: parse_message(find_groups=False)",
            [t.encode() for t in texts],
            lambda m: hl7apy_parse(m.decode(), find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT),
            repeat=1,
        ),
        "hl7apy_parse_find_groups_true": rate(
            "hl7apy: parse_message (groups)",
            [t.encode() for t in texts],
            lambda m: hl7apy_parse(m.decode(), validation_level=VALIDATION_LEVEL.TOLERANT),
            repeat=1,
        ),
    }
    speedup = figures["ours_parse_normalize"] / figures["hl7apy_parse_find_groups_true"]
    print(f"parse + normalize (sealed) is {speedup:,.0f}× hl7apy's parse_message with groups")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "python": platform.python_version(),
                "messages": len(messages),
                "hl7apy_messages": len(sample),
                "mean_bytes": round(sum(map(len, messages)) / len(messages)),
                "mean_results": round(results_per_message, 2),
                "messages_per_second": {key: round(value) for key, value in figures.items()},
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
