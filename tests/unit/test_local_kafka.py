"""The local stack's KRaft cluster id: `kafka-storage format -t ID` must never read it as an option."""

from __future__ import annotations

import base64
from pathlib import Path

from services.stack.kafka import new_cluster_id


def test_cluster_ids_never_start_with_a_dash_and_decode_to_16_bytes() -> None:
    ids = [new_cluster_id() for _ in range(3000)]  # ~1 in 64 raw ids starts with "-"
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_three_node_cluster_has_three_voters_distinct_ports_and_a_proxied_listener(tmp_path: Path) -> None:
    from services.core.config import Settings
    from services.stack.kafka import LocalKafka

    settings = Settings(
        state_dir=tmp_path, kafka_port=19500, kafka_controller_port=19501, kafka_proxy_port=19520
    )
    kafka = LocalKafka(settings, brokers=3)
    ports = [p for n in kafka.nodes for p in (n.broker_port, n.controller_port, n.proxy_port, n.proxied_port)]
    assert len(set(ports)) == 12
    assert kafka.bootstrap == "127.0.0.1:19500,127.0.0.1:19502,127.0.0.1:19504"
    assert kafka.proxied_bootstrap == "127.0.0.1:19520,127.0.0.1:19522,127.0.0.1:19524"
    assert len({n.data for n in kafka.nodes}) == 3
    kafka._write_config(kafka.nodes[1])
    config = dict(
        line.split("=", 1) for line in kafka.nodes[1].config.read_text().splitlines() if "=" in line
    )
    assert config["controller.quorum.voters"] == "1@127.0.0.1:19501,2@127.0.0.1:19503,3@127.0.0.1:19505"
    assert config["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19502,PROXIED://127.0.0.1:19522"
    assert "PROXIED://127.0.0.1:19523" in config["listeners"]
    assert config["offsets.topic.replication.factor"] == "3"
    assert config["transaction.state.log.min.isr"] == "2"
