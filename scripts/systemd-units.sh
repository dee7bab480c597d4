#!/usr/bin/env bash
# Writes Shop's systemd units (docs/DEPLOY.md, "Running the programs under
# systemd") into DIR, default deploy/systemd/:
#
#   scripts/systemd-units.sh [DIR]
#
# - shop-<program>@.service for every program of
#   internal/config/programs.list (the one list scripts/services.sh starts):
#   instance %i is the program's K as in services.sh's NAME@K;
# - shop-topics.service, the one-shot `shop-admin topics` that
#   scripts/infra.sh runs before the programs start;
# - shop.target, which groups what is enabled on the host.
#
# The units are the same supervision as make run's (scripts/lib/supervise.sh
# under scripts/services.sh) in systemd's terms, so they are written from one
# text here: deploy/systemd/ is this script's output, and the test
# tests/deploy/systemd_units.sh fails when the two differ, when a program
# has no unit, or when a unit's command line is not one its program accepts.
# Installed paths: programs and the probe in /opt/shop/bin, the config
# /etc/shop/shop.yaml, state in /var/lib/shop (StateDirectory).
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

dir=${1:-$SHOP_REPO/deploy/systemd}
mkdir -p "$dir"
bin=/opt/shop/bin
config=/etc/shop/shop.yaml

# What every unit runs with: the user, where it may write, the hardening.
common() {
	cat <<EOF
User=shop
Group=shop
WorkingDirectory=/var/lib/shop
StateDirectory=shop
StateDirectoryMode=0750
UMask=0027
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
CapabilityBoundingSet=
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
EOF
}

# shop-<program>@.service.
program_unit() {
	local prog=$1
	cat <<EOF
# Written by scripts/systemd-units.sh from internal/config/programs.list;
# edit that script, not this file. docs/DEPLOY.md says how to install it.
[Unit]
Description=Shop $prog, instance %i
PartOf=shop.target
Wants=network-online.target
After=network-online.target mariadb.service shop-topics.service
# Like make run's supervisor: never give up restarting.
StartLimitIntervalSec=0

[Service]
# Ready when /readyz answers 200 from this process (shop-ready), within the
# 60 s scripts/services.sh gives; the programs do not speak sd_notify.
Type=exec
EnvironmentFile=-/etc/shop/shop.env
# Instance settings, e.g. for a second instance on the host:
#   SHOP_ARGS=--listen tcp://HOST:PORT --admin-port N
EnvironmentFile=-/etc/shop/%N.env
ExecStart=$bin/$prog --config $config \$SHOP_ARGS
ExecStartPost=$bin/shop-ready $bin/$prog --config $config \$SHOP_ARGS
TimeoutStartSec=60s
# Restarted 1 s after any exit, as make run's supervisor does (its backoff
# to 30 s needs systemd 254's RestartSteps: docs/DEPLOY.md).
Restart=always
RestartSec=1s
# SIGTERM: the program drains and exits 0; SIGKILL after 30 s.
KillSignal=SIGTERM
TimeoutStopSec=30s
# Every log line is kept, as in make run's log files.
LogRateLimitIntervalSec=0
$(common)

[Install]
WantedBy=shop.target
DefaultInstance=1
EOF
}

# shop-topics.service.
topics_unit() {
	cat <<EOF
# Written by scripts/systemd-units.sh; edit that script, not this file.
[Unit]
Description=Shop: create the Kafka topics (shop-admin topics)
Wants=network-online.target
After=network-online.target kafka.service

[Service]
# Idempotent: a topic that exists is left as it is.
Type=oneshot
RemainAfterExit=yes
EnvironmentFile=-/etc/shop/shop.env
ExecStart=$bin/shop-admin topics --config $config
Restart=on-failure
RestartSec=5s
$(common)

[Install]
WantedBy=shop.target
EOF
}

shop_target() {
	cat <<EOF
# Written by scripts/systemd-units.sh; edit that script, not this file.
[Unit]
Description=Shop: the programs enabled on this host
Wants=shop-topics.service

[Install]
WantedBy=multi-user.target
EOF
}

for prog in $(shop_programs); do
	program_unit "$prog" >"$dir/$(shop_unit_of "$prog")@.service"
done
topics_unit >"$dir/shop-topics.service"
shop_target >"$dir/shop.target"
