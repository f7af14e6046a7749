#!/bin/bash
# One job of a throughput pool, run by `xargs -P CONCURRENCY -n 1 bash job.sh MODE WORKDIR ...`
# (xargs appends the job's number, ID):
#   job.sh container WORKDIR RUNTIME-ARGV...        ID  create, start, wait, delete container jID
#   job.sh floor WORKDIR FLOOR NAMESPACES PROGRAM PARENT... ID   bench/floor.c's container,
#                                                    its cgroup PARENT/fID in each hierarchy
# Prints "ID START END" (bash's $EPOCHREALTIME: no fork) for the latency percentiles.
set -euo pipefail
trap 'echo "job.sh: job ${id:-?}: \"$BASH_COMMAND\" failed ($?)" >&2' ERR
mode=$1 work=$2
shift 2
id=${!#}
set -- "${@:1:$#-1}"
t0=$EPOCHREALTIME
case $mode in
container)
  "$@" create --bundle "$work/bundles/j$id" --pid-file "$work/pids/j$id" "j$id"
  read -r pid < "$work/pids/j$id" || [[ -n $pid ]]  # no newline at its end
  "$@" start "j$id"
  # The pool's helper, a subreaper, reaps the init as soon as it exits: wait for that, 1 ms
  # between checks, without forking (read -t on a fifo that nobody writes to).
  exec 9<>"$work/never"
  while kill -0 "$pid" 2>/dev/null; do read -rt 0.001 -u 9 _ || :; done
  "$@" delete "j$id"
  ;;
floor)
  floor=$1 namespaces=$2 program=$3
  shift 3
  "$floor" "$namespaces" "$program" "${@/%//f$id}"
  ;;
*)
  echo "job.sh: MODE must be container or floor, not '$mode'" >&2
  exit 2
  ;;
esac
echo "$id $t0 $EPOCHREALTIME"
