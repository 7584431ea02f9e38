/* bench_proc: samples the CPU use and resident memory of named processes from /proc
 * (Linux only), plus the whole machine's CPU busy time, once per call of
 * bench_proc_sample(). CPU is in percent of ONE core (a process using both cores of a
 * 2-core machine reads 200 %). Processes are given by pid (`--watch-pid NAME=PID`)
 * or found by their exact comm name (`--watch-proc NAME`, every match). Always
 * watched: "machine" (pid 0, all CPUs from /proc/stat), "others" (pid -1: machine
 * minus every watched process, i.e. what other programs and the kernel used) and
 * concert-bench itself. Statistics
 * cover the window since the last bench_proc_window_start(). Reads only /proc; owns
 * its table; never signals or otherwise touches the watched processes. */
#ifndef BENCH_PROC_H
#define BENCH_PROC_H

#include <stddef.h>
#include <stdint.h>

#define BENCH_PROC_MAX 16

typedef struct bench_proc bench_proc;

/** One watched process (or the machine, pid 0) and its window statistics. */
typedef struct {
    char name[40];
    int pid;                  /* 0: the whole machine (/proc/stat); -1: "others" */
    int alive;                /* readable at the last sample */
    double cpu_now;           /* % of one core over the last sample interval */
    uint64_t rss_now;         /* bytes at the last sample (0 for the machine) */
    double cpu_sum, cpu_max;  /* window */
    uint64_t rss_max;
    double rss_sum;
    int samples;              /* in the window */
} bench_proc_stat;

/** A table that watches the machine, "others" and this process ("concert-bench"). */
bench_proc *bench_proc_new(void);
void bench_proc_free(bench_proc *p);

/** Watches `pid` under `name`. Returns 0, or -1 with a reason in err. */
int bench_proc_add_pid(bench_proc *p, const char *name, int pid, char *err, size_t errlen);

/** Parses "NAME=PID" and watches it. */
int bench_proc_add_spec(bench_proc *p, const char *spec, char *err, size_t errlen);

/** Watches every process whose comm is exactly `comm` (several matches are named
 * comm[pid]). Returns how many were found (0 is an error for the caller to report). */
int bench_proc_add_comm(bench_proc *p, const char *comm);

/** Takes one sample of every watched process. */
void bench_proc_sample(bench_proc *p);

/** Starts a new statistics window (the next sample is its first). */
void bench_proc_window_start(bench_proc *p);

int bench_proc_count(const bench_proc *p);
const bench_proc_stat *bench_proc_get(const bench_proc *p, int i);

/** Machine facts for reports: online CPUs, the first "model name" of /proc/cpuinfo,
 * MemTotal in bytes. */
void bench_proc_machine(int *ncpu, char *model, size_t model_len, uint64_t *mem_bytes);

#endif
