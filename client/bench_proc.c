/* bench_proc: see bench_proc.h. */
#include "bench_proc.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    bench_proc_stat st;
    uint64_t last_ticks;      /* process: utime+stime; machine: busy jiffies */
    uint64_t last_total;      /* machine only: all jiffies */
    double last_t;            /* seconds, monotonic; 0 before the first sample */
} entry;

struct bench_proc {
    entry e[BENCH_PROC_MAX];
    int n;
    long hz;
    long page;
};

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static entry *add(bench_proc *p, const char *name, int pid) {
    if (p->n >= BENCH_PROC_MAX) return NULL;
    entry *e = &p->e[p->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->st.name, sizeof e->st.name, "%s", name);
    e->st.pid = pid;
    return e;
}

bench_proc *bench_proc_new(void) {
    bench_proc *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->hz = sysconf(_SC_CLK_TCK);
    if (p->hz <= 0) p->hz = 100;
    p->page = sysconf(_SC_PAGESIZE);
    if (p->page <= 0) p->page = 4096;
    add(p, "machine", 0);
    add(p, "others", -1);
    add(p, "concert-bench", (int)getpid());
    return p;
}

void bench_proc_free(bench_proc *p) { free(p); }

/* utime + stime of a pid in clock ticks; -1 if it is gone. */
static int read_ticks(int pid, uint64_t *ticks) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* comm may hold spaces and parentheses: fields resume after the last ')'. */
    char *s = strrchr(buf, ')');
    if (!s) return -1;
    s++;
    /* After ')': state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
     * cmajflt utime(14) stime(15). */
    unsigned long long ut = 0, st = 0;
    if (sscanf(s, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) return -1;
    *ticks = ut + st;
    return 0;
}

static int read_rss(const bench_proc *p, int pid, uint64_t *bytes) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/statm", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    unsigned long long size = 0, res = 0;
    int ok = fscanf(f, "%llu %llu", &size, &res) == 2;
    fclose(f);
    if (!ok) return -1;
    *bytes = res * (uint64_t)p->page;
    return 0;
}

/* Machine: busy and total jiffies summed over all CPUs (first line of /proc/stat). */
static int read_machine(uint64_t *busy, uint64_t *total) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    unsigned long long v[10] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7], &v[8], &v[9]);
    fclose(f);
    if (n < 5) return -1;
    /* user nice system idle iowait irq softirq steal (guest is inside user). Steal (the
     * hypervisor running someone else) is in the total but is nobody's busy time here. */
    uint64_t all = 0;
    for (int i = 0; i < 8 && i < n; i++) all += v[i];
    *busy = v[0] + v[1] + v[2] + v[5] + v[6];
    *total = all;
    return 0;
}

int bench_proc_add_pid(bench_proc *p, const char *name, int pid, char *err, size_t errlen) {
    uint64_t t;
    if (pid <= 0 || read_ticks(pid, &t) < 0) {
        snprintf(err, errlen, "no process with pid %d", pid);
        return -1;
    }
    if (!add(p, name, pid)) {
        snprintf(err, errlen, "too many watched processes (at most %d)", BENCH_PROC_MAX - 2);
        return -1;
    }
    return 0;
}

int bench_proc_add_spec(bench_proc *p, const char *spec, char *err, size_t errlen) {
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec || !eq[1]) {
        snprintf(err, errlen, "--watch-pid: expected NAME=PID, got '%s'", spec);
        return -1;
    }
    char *end;
    errno = 0;
    long pid = strtol(eq + 1, &end, 10);
    if (errno || *end || pid <= 0 || pid > 4194304) {
        snprintf(err, errlen, "--watch-pid: bad pid in '%s'", spec);
        return -1;
    }
    char name[40];
    size_t nl = (size_t)(eq - spec);
    if (nl >= sizeof name) nl = sizeof name - 1;
    memcpy(name, spec, nl);
    name[nl] = '\0';
    return bench_proc_add_pid(p, name, (int)pid, err, errlen);
}

int bench_proc_add_comm(bench_proc *p, const char *comm) {
    DIR *d = opendir("/proc");
    if (!d) return 0;
    int pids[BENCH_PROC_MAX];
    int n = 0;
    struct dirent *de;
    int scanned = 0;
    while ((de = readdir(d)) && scanned < 1000000) {
        scanned++;
        if (!isdigit((unsigned char)de->d_name[0])) continue;
        char path[300], buf[64];
        snprintf(path, sizeof path, "/proc/%s/comm", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = '\0';
        if (len && buf[len - 1] == '\n') buf[len - 1] = '\0';
        if (strcmp(buf, comm) != 0) continue;
        int pid = atoi(de->d_name);
        if (pid == (int)getpid()) continue;
        if (n < BENCH_PROC_MAX) pids[n++] = pid;
    }
    closedir(d);
    int added = 0;
    for (int i = 0; i < n; i++) {
        char name[40];
        if (n == 1) snprintf(name, sizeof name, "%.39s", comm);
        else snprintf(name, sizeof name, "%.28s[%d]", comm, pids[i]);
        if (add(p, name, pids[i])) added++;
    }
    return added;
}

void bench_proc_sample(bench_proc *p) {
    double now = mono_s();
    for (int i = 0; i < p->n; i++) {
        entry *e = &p->e[i];
        uint64_t ticks = 0, total = 0, rss = 0;
        int ok;
        if (e->st.pid < 0) continue; /* "others": derived below */
        if (e->st.pid == 0) ok = read_machine(&ticks, &total) == 0;
        else ok = read_ticks(e->st.pid, &ticks) == 0 && read_rss(p, e->st.pid, &rss) == 0;
        e->st.alive = ok;
        if (!ok) continue;
        if (e->last_t > 0 && now > e->last_t) {
            double dt = now - e->last_t;
            double cpu;
            if (e->st.pid == 0) {
                /* Busy share of all jiffies, scaled to "percent of one core". */
                uint64_t dtot = total - e->last_total;
                long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
                if (ncpu < 1) ncpu = 1;
                cpu = dtot ? 100.0 * (double)ncpu * (double)(ticks - e->last_ticks) / (double)dtot : 0.0;
            } else {
                cpu = 100.0 * (double)(ticks - e->last_ticks) / ((double)p->hz * dt);
            }
            e->st.cpu_now = cpu;
            e->st.cpu_sum += cpu;
            if (cpu > e->st.cpu_max) e->st.cpu_max = cpu;
            e->st.samples++;
            e->st.rss_sum += (double)rss;
        }
        e->st.rss_now = rss;
        if (rss > e->st.rss_max) e->st.rss_max = rss;
        e->last_ticks = ticks;
        e->last_total = total;
        e->last_t = now;
    }
    /* "others": the machine's busy time not explained by the watched processes (other
     * programs, kernel threads, interrupts), so a noisy neighbour shows in the report. */
    entry *m = NULL, *o = NULL;
    double watched = 0;
    for (int i = 0; i < p->n; i++) {
        entry *e = &p->e[i];
        if (e->st.pid == 0) m = e;
        else if (e->st.pid < 0) o = e;
        else if (e->st.alive) watched += e->st.cpu_now;
    }
    if (m && o && m->last_t > 0) {
        double cpu = m->st.cpu_now - watched;
        if (cpu < 0) cpu = 0;
        o->st.alive = 1;
        if (o->last_t > 0) {
            o->st.cpu_now = cpu;
            o->st.cpu_sum += cpu;
            if (cpu > o->st.cpu_max) o->st.cpu_max = cpu;
            o->st.samples++;
        }
        o->last_t = now;
    }
}

void bench_proc_window_start(bench_proc *p) {
    for (int i = 0; i < p->n; i++) {
        bench_proc_stat *s = &p->e[i].st;
        s->cpu_sum = s->cpu_max = s->rss_sum = 0;
        s->rss_max = s->rss_now;
        s->samples = 0;
    }
}

int bench_proc_count(const bench_proc *p) { return p->n; }

const bench_proc_stat *bench_proc_get(const bench_proc *p, int i) {
    return i >= 0 && i < p->n ? &p->e[i].st : NULL;
}

void bench_proc_machine(int *ncpu, char *model, size_t model_len, uint64_t *mem_bytes) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    *ncpu = n > 0 ? (int)n : 1;
    snprintf(model, model_len, "unknown");
    *mem_bytes = 0;
    char line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "model name", 10) != 0) continue;
            char *c = strchr(line, ':');
            if (!c) continue;
            c++;
            while (*c == ' ' || *c == '\t') c++;
            size_t l = strlen(c);
            while (l && (c[l - 1] == '\n' || c[l - 1] == ' ')) c[--l] = '\0';
            snprintf(model, model_len, "%s", c);
            break;
        }
        fclose(f);
    }
    f = fopen("/proc/meminfo", "r");
    if (f) {
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) {
                *mem_bytes = (uint64_t)kb * 1024;
                break;
            }
        fclose(f);
    }
}
