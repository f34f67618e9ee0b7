"""One worker process with two results consumers (`worker_consumers`): they share the partitions like two
worker processes would, every result counts once, and SIGTERM stops both."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from labflow_testkit.infrastructure import settings_env
from labflow_testkit.processes import ServiceProcess, free_port, http_status, wait_until
from labflow_testkit.results import full_recomputation, random_result_stream, stored_aggregates
from services.core.config import Settings
from services.core.db.engine import libpq_url
from tests.integration.test_worker_crash import end_offsets, stored_offsets
from tests.oracles import expected_winners
from tests.support import produce_results

pytestmark = pytest.mark.integration


def test_two_consumers_in_one_worker_share_the_partitions_and_count_every_result_once(
    fresh_settings: Settings, tmp_path: Path
) -> None:
    settings = fresh_settings.model_copy(update={"worker_batch_size": 300})
    stream = random_result_stream(6_000, persons=1_500, seed=33)
    url = settings.require_database()
    port = free_port()
    worker = ServiceProcess(
        "worker",
        settings_env(settings, LABFLOW_WORKER_OPS_PORT=str(port), LABFLOW_WORKER_CONSUMERS="2"),
        tmp_path,
    )

    def assignments() -> list[str]:  # the first consumer may hold all the partitions for a while
        return [line for line in worker.log_path.read_text(errors="replace").splitlines()
                if "partitions assigned" in line and "lab.results.v1" in line
                and '"partitions": []' not in line]

    try:
        produce_results(settings, stream[:2_000])
        wait_until(lambda: len(assignments()) >= 2, timeout_s=60, what=f"both consumers with partitions:\n"
                   f"{worker.log()}")
        produce_results(settings, stream[2_000:])  # while both hold partitions
        ends = {p: o for p, o in end_offsets(settings).items() if o > 0}
        wait_until(lambda: stored_offsets(settings) == ends, timeout_s=120, interval_s=0.5,
                   what=f"every partition stored:\n{worker.log()}")
        assert http_status(f"http://127.0.0.1:{port}/readyz") == 200
    finally:
        worker.stop()
    assert worker.proc.returncode == 0, worker.log()

    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute("SELECT result_id, patient_pseudonym, version_key FROM results").fetchall()
    assert {(r[0], r[1]): r[2] for r in rows} == expected_winners(stream)
    assert stored_aggregates(url) == full_recomputation(url)
