#!/usr/bin/env bash
# A single-node Slurm cluster with accounting for CI (Debian 12, as root, no systemd):
#   bash .ci/slurm.sh start   installs when missing, starts MariaDB, munged, slurmdbd, slurmctld, slurmd
#                              and waits until the node is idle; exits 1 with one line if it does not come up
#   bash .ci/slurm.sh stop    stops every daemon this script started (by its pid file)
# Both are idempotent. Every wait is bounded so that CI never hangs here.
set -uo pipefail

CLUSTER=benchci
STATE=/var/spool/bench-slurm          # our state, logs and pid files
CONF=/etc/slurm                       # where Debian's slurm looks for slurm.conf
DB_PASS=bench-ci-only                 # a throwaway database on a throwaway CI machine
MARIADB_PID=/run/mysqld/bench-ci.pid   # mariadbd runs as mysql: its pid file lives in its own directory
WAIT_S=${SLURM_CI_WAIT_S:-60}         # the longest any single wait may take
export PATH="$PATH:/usr/sbin:/sbin"

T0=$(date +%s)
NODE=
say() { echo "slurm.sh: $*"; }
fail() { say "cluster not started: $*"; exit 1; }

# wait_for SECONDS CMD...: true as soon as CMD succeeds, false after SECONDS
wait_for() {
  local limit=$1; shift
  local end=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.5
  done
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v munged >/dev/null \
    && command -v mariadbd >/dev/null && return 0
  say "installing slurm-wlm, slurmdbd, munge, mariadb-server"
  # .ci/run may have just updated the package lists (for chromium): once is enough
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -1)" ]; then
    timeout 300 apt-get update -q >/dev/null || return 1
  fi
  # policy-rc.d / no systemd: the packages' own service starts fail harmlessly; this script starts them
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q slurm-wlm slurmdbd munge mariadb-server \
    >/dev/null || return 1
}

write_config() {
  local host node
  host=$(hostname -s)
  node=$(timeout 30 slurmd -C 2>/dev/null | grep "^NodeName=") || return 1
  [ -n "$node" ] || return 1
  NODE=${node#NodeName=}; NODE=${NODE%% *}   # the name slurmd registers under
  mkdir -p "$STATE/ctld" "$STATE/d" "$STATE/log" "$CONF"
  cat > "$CONF/slurm.conf" <<EOF
# written by .ci/slurm.sh: a single-node CI cluster
ClusterName=$CLUSTER
# the addresses are given so that this works where the host name does not resolve
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# no cgroups in CI containers
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MaxArraySize=1001
# short timers: a cancelled job is gone in seconds
KillWait=2
MinJobAge=60
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=ci Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  cat > "$CONF/slurmdbd.conf" <<EOF
# written by .ci/slurm.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  chown root:root "$CONF/slurmdbd.conf"
  chmod 600 "$CONF/slurmdbd.conf"
}

start_mariadb() {
  alive "$MARIADB_PID" && return 0
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null 2>&1 || return 1
  setsid mariadbd --user=mysql --pid-file="$MARIADB_PID" --socket=/run/mysqld/mysqld.sock \
    --skip-networking=0 --bind-address=127.0.0.1 >"$STATE/log/mariadb.log" 2>&1 < /dev/null &
  wait_for "$WAIT_S" timeout 10 mariadb-admin --socket=/run/mysqld/mysqld.sock ping || return 1
  timeout 30 mariadb --socket=/run/mysqld/mysqld.sock -e "
    CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
    FLUSH PRIVILEGES;" || return 1
}

start_munge() {
  alive "$STATE/munged.pid" && return 0
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key || return 1
  chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  timeout 30 runuser -u munge -- munged --pid-file=/run/munge/munged.pid || return 1
  wait_for 10 test -s /run/munge/munged.pid || return 1
  cp /run/munge/munged.pid "$STATE/munged.pid"
  wait_for 10 bash -c 'munge -n | unmunge' || return 1
}

start_slurm() {
  if ! alive "$STATE/slurmdbd.pid"; then
    timeout 60 slurmdbd || return 1
  fi
  # slurmdbd answers once it has connected to MariaDB and created its tables
  wait_for "$WAIT_S" timeout 15 sacctmgr -n list cluster || fail "slurmdbd does not answer (see $STATE/log/slurmdbd.log)"
  if ! timeout 15 sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    timeout 30 sacctmgr -i add cluster "$CLUSTER" >/dev/null || return 1
  fi
  alive "$STATE/slurmctld.pid" || timeout 60 slurmctld || return 1
  wait_for "$WAIT_S" timeout 15 scontrol ping || fail "slurmctld does not answer (see $STATE/log/slurmctld.log)"
  alive "$STATE/slurmd.pid" || timeout 60 slurmd || return 1
}

node_idle() {
  timeout 15 sinfo -h -N -o '%T' | grep -qxE 'idle|idle~'
}

start() {
  [ "$(id -u)" = 0 ] || fail "run as root"
  install_packages || fail "apt-get install failed"
  mkdir -p "$STATE/log"
  write_config || fail "slurmd -C did not describe this node"
  start_mariadb || fail "MariaDB did not start (see $STATE/log/mariadb.log)"
  start_munge || fail "munged did not start"
  start_slurm || fail "a Slurm daemon did not start (see $STATE/log)"
  if ! wait_for "$WAIT_S" node_idle; then
    # a node left DOWN/DRAIN by an earlier run: bring it back once, then wait again
    timeout 15 scontrol update nodename="$NODE" state=resume >/dev/null 2>&1
    wait_for "$WAIT_S" node_idle || fail "the node is not idle after ${WAIT_S}s: $(timeout 15 sinfo -h -N -o '%T %E' | head -1)"
  fi
  say "cluster $CLUSTER up in $(( $(date +%s) - T0 ))s: $(timeout 15 sinfo -h -N -o '%N %T %c CPUs')"
}

# stop_all NAME:PIDFILE...: TERM them all, wait up to 20 s for each to exit, then KILL what is left
stop_all() {
  local item name pidfile pid pids=()
  for item in "$@"; do
    name=${item%%:*} pidfile=${item#*:}
    [ -s "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    rm -f "$pidfile"
    kill -0 "$pid" 2>/dev/null || continue
    kill -TERM "$pid" 2>/dev/null && pids+=("$name:$pid")
  done
  for item in "${pids[@]}"; do
    name=${item%%:*} pid=${item#*:}
    wait_for 20 bash -c "! kill -0 $pid" || { say "$name ignored TERM, killing it"; kill -KILL "$pid" 2>/dev/null; }
  done
}

stop() {
  # jobs still running would outlive slurmd (proctrack/linuxproc): cancel them first
  if alive "$STATE/slurmctld.pid"; then
    timeout 10 scancel --full --quiet --user=root >/dev/null 2>&1
  fi
  stop_all "slurmd:$STATE/slurmd.pid" "slurmctld:$STATE/slurmctld.pid" "slurmdbd:$STATE/slurmdbd.pid"
  stop_all "munged:$STATE/munged.pid" "mariadb:$MARIADB_PID"
  rm -f /run/munge/munged.pid
  say "stopped in $(( $(date +%s) - T0 ))s"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
