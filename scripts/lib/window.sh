# Sourced by the A/B scripts. The load generators (bench's `loadgen`,
# `tls-load`) print MEASURE_START and MEASURE_END around their measured
# window.

# window_ticks PID OUT [END_POLLS]: waits (50 polls a second) for
# MEASURE_START in OUT, then for MEASURE_END (at most END_POLLS polls,
# default 500), and prints the clock ticks (utime+stime from
# /proc/PID/stat) process PID used in between.
window_ticks() {
    local pid=$1 out=$2 end_polls=${3:-500} s0 s1 i
    for i in $(seq 500); do grep -q MEASURE_START "$out" && break; sleep 0.02; done
    s0=$(awk '{print $14+$15}' "/proc/$pid/stat")
    for i in $(seq "$end_polls"); do grep -q MEASURE_END "$out" && break; sleep 0.02; done
    s1=$(awk '{print $14+$15}' "/proc/$pid/stat")
    echo $((s1 - s0))
}
