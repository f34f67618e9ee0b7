#!/bin/bash
# One KRaft node (broker + controller) configured from the environment, storage formatted on first start.
#   KAFKA_NODE_ID            node id (default 1)
#   KAFKA_CLUSTER_ID         the cluster's id, the same on every node (default: a fixed one for a lone node)
#   KAFKA_QUORUM_VOTERS      id@host:port,… (default: this node alone)
#   KAFKA_CLIENT_PORT        PLAINTEXT listener (9092), KAFKA_CONTROLLER_PORT (9093)
#   KAFKA_ADVERTISED_HOST    the name clients reach this node by (default: the hostname)
#   KAFKA_ADVERTISED_PORT    the port clients reach it on (default KAFKA_CLIENT_PORT; a published port)
#   KAFKA_EXTERNAL_PORT      optional second listener for clients outside the network (e.g. 19092), advertised
#   KAFKA_EXTERNAL_ADVERTISED  as this host:port (the port published on the host, e.g. 127.0.0.1:22192)
#   KAFKA_REPLICATION        internal topics' replication (1), KAFKA_MIN_ISR (1)
#   KAFKA_HEAP               -Xmx (512m)
#   KAFKA_CFG_SOME_KEY=v     any other broker setting, as some.key=v
set -euo pipefail
id=${KAFKA_NODE_ID:-1}
client=${KAFKA_CLIENT_PORT:-9092}
controller=${KAFKA_CONTROLLER_PORT:-9093}
host=${KAFKA_ADVERTISED_HOST:-$(hostname)}
voters=${KAFKA_QUORUM_VOTERS:-${id}@127.0.0.1:${controller}}
replication=${KAFKA_REPLICATION:-1}
min_isr=${KAFKA_MIN_ISR:-1}
data=/var/lib/kafka/data
config=/var/lib/kafka/server.properties
listeners="PLAINTEXT://0.0.0.0:${client},CONTROLLER://0.0.0.0:${controller}"
advertised="PLAINTEXT://${host}:${KAFKA_ADVERTISED_PORT:-$client}"
protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
if [ -n "${KAFKA_EXTERNAL_PORT:-}" ]; then
  listeners="${listeners},EXTERNAL://0.0.0.0:${KAFKA_EXTERNAL_PORT}"
  advertised="${advertised},EXTERNAL://${KAFKA_EXTERNAL_ADVERTISED:?KAFKA_EXTERNAL_ADVERTISED is required}"
  protocols="${protocols},EXTERNAL:PLAINTEXT"
fi
{
  echo "process.roles=broker,controller"
  echo "node.id=${id}"
  echo "controller.quorum.voters=${voters}"
  echo "listeners=${listeners}"
  echo "advertised.listeners=${advertised}"
  echo "controller.listener.names=CONTROLLER"
  echo "listener.security.protocol.map=${protocols}"
  echo "inter.broker.listener.name=PLAINTEXT"
  echo "log.dirs=${data}"
  echo "offsets.topic.replication.factor=${replication}"
  echo "offsets.topic.num.partitions=12"
  echo "transaction.state.log.replication.factor=${replication}"
  echo "transaction.state.log.min.isr=${min_isr}"
  echo "share.coordinator.state.topic.replication.factor=${replication}"
  echo "share.coordinator.state.topic.min.isr=${min_isr}"
  echo "default.replication.factor=${replication}"
  echo "min.insync.replicas=${min_isr}"
  echo "group.initial.rebalance.delay.ms=0"
  echo "auto.create.topics.enable=false"
  echo "log.retention.hours=168"
  for var in $(compgen -e | grep '^KAFKA_CFG_' || true); do
    key=$(echo "${var#KAFKA_CFG_}" | tr 'A-Z_' 'a-z.')
    echo "${key}=${!var}"
  done
} > "$config"
java=(java -Xms128m "-Xmx${KAFKA_HEAP:-512m}" -XX:+UseG1GC -Dlog4j2.configurationFile=/opt/kafka/log4j2.xml
      -cp '/opt/kafka/libs/*')
if [ ! -e "$data/meta.properties" ]; then
  "${java[@]}" kafka.tools.StorageTool format -t "${KAFKA_CLUSTER_ID:-labflowlocalkafka00001}" -c "$config"
fi
exec "${java[@]}" kafka.Kafka "$config"
