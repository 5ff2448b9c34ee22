// How many CPUs this process may really use: its CPU affinity mask and its
// cgroup's CPU quota (a container started with --cpus=1.5), not the
// machine's core count. The default of every --threads flag.
//
// Why: an OpenMP program that starts one thread per core of the host inside
// a container limited to 1.5 CPUs runs 16 threads on 1.5 CPUs' worth of
// time: every barrier then waits for a descheduled or throttled sibling.
// Thread-safe (reads files; no state).
#pragma once

#include <optional>
#include <string>

namespace streamgen {

// CPUs in this process's affinity mask (sched_getaffinity); the hardware's
// count where the call fails; >= 1.
int AffinityCpuCount();

// The CPU time the process's cgroup may use, in CPUs (quota / period), the
// smallest over the cgroup and its ancestors; nullopt when unlimited or
// unknown. cgroup v2: `cpu.max` ("150000 100000"; "max 100000" is
// unlimited); v1: `cpu.cfs_quota_us` (-1: unlimited) / `cpu.cfs_period_us`
// in the cpu controller's hierarchy. `cgroup_root` (/sys/fs/cgroup) and
// `proc_self_cgroup` (/proc/self/cgroup) are parameters for tests.
std::optional<double> CgroupCpuLimit(const std::string& cgroup_root = "/sys/fs/cgroup",
                                     const std::string& proc_self_cgroup = "/proc/self/cgroup");

// The default thread count: min(AffinityCpuCount(), floor(CgroupCpuLimit()))
// and at least 1. Floor, not ceil: 2 threads on a 1.5-CPU quota are
// throttled in every period, and each throttle stalls the other thread at
// the next barrier (measured in bench/README.md, "Sharing a machine").
int DefaultThreadCount();

// A one-line account for the start-up log: "2 (affinity 2 CPUs, cgroup quota 1.50 CPUs)".
std::string DescribeDefaultThreads();

}  // namespace streamgen
