#!/usr/bin/env bash
# Installs everything the test suite needs (Debian packages, npm/PyPI test peers), then
# runs the whole test suite. Safe to run again: installed packages are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real servers and tools the tests start (see tests/common). Keep in sync with README.
PACKAGES=(
  postgresql redis-server            # postgres / redis checks
  openssl                            # test certificates (postgres / redis TLS tests)
  sip-tester kamailio                # sip checks (SIPp, Kamailio)
  kamailio-tls-modules openssl       # sip over TLS (Kamailio tls.so, test certificate)
  kamailio-websocket-modules         # sip REGISTER over ws/wss (Kamailio websocket.so + xhttp.so)
  prometheus prometheus-alertmanager # promtool check metrics, dashboards, alertmanager notifier
  prometheus-blackbox-exporter       # side-by-side benchmark
  python3-aiosmtpd                   # email notifier
  monitoring-plugins-basic           # exec checks (check_tcp, check_dummy)
  chromium                           # status page in a headless browser
  gcc                                # C plugin example
  dnsmasq                            # dns: a real resolver on a free port
  mariadb-server                     # mysql checks (mariadb-install-db, mariadbd, mariadb client)
  mosquitto                          # mqtt checks (mosquitto, mosquitto_passwd)
  python3-venv                       # grpc checks: a venv for PyPI grpcio (scripts/test-deps/grpc.sh)
  mount                              # data_dir faults: read-only bind mounts, a full tmpfs (run as root)
  iproute2 nftables iptables util-linux # chaos: network namespaces, veth pairs, DROP rules; icmp: blackhole routes, iptables DROP rules, setpriv without CAP_NET_RAW (run as root)
  lighttpd                           # chaos tests: the tcp/http peer that is killed and restarted
  etcd-server etcd-client            # cluster: a 3-member etcd on loopback, etcdctl to inspect it
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get -o Acquire::Retries=3 -o Acquire::http::Timeout=60 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o Acquire::Retries=3 -o Acquire::http::Timeout=60 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Extra per-area set-up scripts (npm/PyPI test peers), if present.
for s in scripts/test-deps/*.sh; do
  [ -e "$s" ] && bash "$s"
done

# reap.py stops any process a test left running, so nothing holds the output open after
# the run (CI reads it to the end); it lists each one it stops as a leak.
python3 scripts/reap.py cargo test --workspace "$@"
