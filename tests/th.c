/* th: see th.h. */
#define _GNU_SOURCE
#include "th.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"

int th_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0, "bind: %s", strerror(errno));
    getsockname(fd, (struct sockaddr *)&a, &len);
    int port = ntohs(a.sin_port);
    close(fd);
    return port;
}

uint64_t th_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void th_pause_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

int th_wait_for(int (*cond)(void *), void *arg, int every_ms, int limit_ms) {
    uint64_t end = th_now_ms() + (uint64_t)limit_ms;
    for (;;) {
        if (cond(arg)) return 1;
        if (th_now_ms() >= end) return 0;
        th_pause_ms(every_ms);
    }
}

static pid_t spawn(char *const argv[], const char *log_path) {
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork failed");
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        int fd = open(log_path ? log_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

pid_t th_spawn(char *const argv[], const char *log) { return spawn(argv, log); }

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    return remove(path);
}

void th_rmrf(const char *dir) {
    if (dir && *dir) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

redisContext *th_redis_connect(const th_redis *r) {
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (!c || c->err) {
        if (c) redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    return c;
}

static int redis_pings(void *arg) {
    redisContext *c = th_redis_connect(arg);
    if (!c) return 0;
    redisReply *rep = redisCommand(c, "PING");
    int ok = rep && rep->type == REDIS_REPLY_STATUS && !strcmp(rep->str, "PONG");
    if (rep) freeReplyObject(rep);
    redisFree(c);
    return ok;
}

void th_redis_start(th_redis *r) {
    if (!r->port) r->port = th_free_port();
    if (!r->dir[0]) {
        snprintf(r->dir, sizeof r->dir, "/tmp/concert-test-redis-XXXXXX");
        cr_assert(mkdtemp(r->dir), "mkdtemp");
    }
    snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d", r->port);
    char port[16], log[300], mem[32];
    snprintf(port, sizeof port, "%d", r->port);
    snprintf(log, sizeof log, "%s/redis.log", r->dir);
    snprintf(mem, sizeof mem, "%dmb", r->maxmemory_mb);
    char *argv[24];
    int n = 0;
    argv[n++] = "redis-server";
    argv[n++] = "--port", argv[n++] = port;
    argv[n++] = "--bind", argv[n++] = "127.0.0.1";
    argv[n++] = "--save", argv[n++] = "";
    argv[n++] = "--appendonly", argv[n++] = "no";
    argv[n++] = "--dir", argv[n++] = r->dir;
    argv[n++] = "--enable-debug-command", argv[n++] = "yes";
    if (r->maxmemory_mb) {
        argv[n++] = "--maxmemory", argv[n++] = mem;
        argv[n++] = "--maxmemory-policy", argv[n++] = "volatile-lru";
    }
    argv[n] = NULL;
    r->pid = spawn(argv, log);
    cr_assert(th_wait_for(redis_pings, r, 20, 10000), "redis-server on port %d did not answer PING", r->port);
}

void th_redis_kill(th_redis *r) {
    if (r->pid <= 0) return;
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
    r->pid = 0;
}

void th_redis_stop(th_redis *r) {
    th_redis_kill(r);
    th_rmrf(r->dir);
    r->dir[0] = '\0';
}

typedef struct {
    th_server *s;
    cc_client *c;
} health_arg;

static int server_exited(th_server *s) {
    int st;
    if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
        s->pid = 0;
        return 1;
    }
    return 0;
}

/* TCP first: a gRPC channel that failed to connect backs off for a second or more. */
static int port_accepts(void *arg) {
    th_server *s = arg;
    if (server_exited(s)) return 1; /* stop waiting, the caller asserts */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static int server_answers(void *arg) {
    health_arg *h = arg;
    if (server_exited(h->s)) return 1; /* stop waiting, the caller asserts */
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    cc_status status;
    cc_client_unary(h->c, "/grpc.health.v1.Health/Check", &req.base, NULL, NULL, NULL, 0, 500, &status);
    return status.code == GRPC_STATUS_OK;
}

void th_server_start(th_server *s, const char *redis_url, const char *const *extra) {
    s->port = th_free_port();
    snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", s->port);
    snprintf(s->log, sizeof s->log, "/tmp/concert-test-server-%d.log", s->port);
    char *argv[64];
    int n = 0;
    argv[n++] = TH_SERVER_BIN;
    argv[n++] = "--listen", argv[n++] = s->addr;
    argv[n++] = "--redis", argv[n++] = (char *)redis_url;
    argv[n++] = "--log-level", argv[n++] = "debug";
    argv[n++] = "--shutdown-grace-ms", argv[n++] = "2000";
    for (int i = 0; extra && extra[i] && n < 62; i++) argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    unlink(s->log);
    s->pid = spawn(argv, s->log);
    cr_assert(th_wait_for(port_accepts, s, 5, 15000) && s->pid > 0, "concert-server did not listen (log: %s)",
              s->log);
    health_arg h = {s, cc_client_open(s->addr)};
    int ok = th_wait_for(server_answers, &h, 20, 15000);
    cc_client_close(h.c);
    cr_assert(ok && s->pid > 0, "concert-server did not start (log: %s)", s->log);
}

int th_server_stop(th_server *s) {
    if (s->pid <= 0) return -1;
    kill(s->pid, SIGTERM);
    int st = 0;
    uint64_t end = th_now_ms() + 10000;
    while (waitpid(s->pid, &st, WNOHANG) == 0) {
        if (th_now_ms() > end) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &st, 0);
            s->pid = 0;
            return -1;
        }
        th_pause_ms(10);
    }
    s->pid = 0;
    if (WIFEXITED(st)) {
        if (WEXITSTATUS(st) == 0 && !getenv("TH_KEEP_LOGS")) unlink(s->log);
        return WEXITSTATUS(st);
    }
    return -1;
}

grpc_status_code th_issue(cc_client *c, const char *user, const char *concert, Concert__V1__QueueStatus **out,
                          cc_status *st) {
    Concert__V1__IssueTokenRequest req = CONCERT__V1__ISSUE_TOKEN_REQUEST__INIT;
    req.user_id = (char *)user;
    req.concert_id = (char *)concert;
    return cc_client_unary(c, "/concert.v1.QueueService/IssueToken", &req.base, &concert__v1__queue_status__descriptor,
                           (ProtobufCMessage **)out, NULL, 0, 5000, st);
}

grpc_status_code th_status(cc_client *c, const char *token, Concert__V1__QueueStatus **out, cc_status *st) {
    Concert__V1__GetQueueStatusRequest req = CONCERT__V1__GET_QUEUE_STATUS_REQUEST__INIT;
    req.token = (char *)token;
    return cc_client_unary(c, "/concert.v1.QueueService/GetQueueStatus", &req.base,
                           &concert__v1__queue_status__descriptor, (ProtobufCMessage **)out, NULL, 0, 5000, st);
}

grpc_status_code th_leave(cc_client *c, const char *token, int *prev, cc_status *st) {
    Concert__V1__LeaveQueueRequest req = CONCERT__V1__LEAVE_QUEUE_REQUEST__INIT;
    req.token = (char *)token;
    Concert__V1__LeaveQueueResponse *resp = NULL;
    grpc_status_code code =
        cc_client_unary(c, "/concert.v1.QueueService/LeaveQueue", &req.base, &concert__v1__leave_queue_response__descriptor,
                        (ProtobufCMessage **)&resp, NULL, 0, 5000, st);
    if (resp) {
        if (prev) *prev = resp->previous_state;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return code;
}

int th_state(cc_client *c, const char *token) {
    Concert__V1__QueueStatus *s = NULL;
    cc_status st;
    if (th_status(c, token, &s, &st) != GRPC_STATUS_OK) return -(int)st.code;
    int state = s->state;
    protobuf_c_message_free_unpacked(&s->base, NULL);
    return state;
}

/* ---- catalogue helpers ---- */
#include "concert/v1/admin.pb-c.h"

grpc_status_code th_admin_catalogue(cc_client *c, const char *admin_key, const char *concert, const char *schedule,
                                    int seats, int64_t price) {
    cc_md md[] = {{"x-admin-key", admin_key}};
    cc_status st;
    Concert__V1__CreateConcertRequest cr = CONCERT__V1__CREATE_CONCERT_REQUEST__INIT;
    cr.concert_id = (char *)concert;
    cr.name = "Test concert";
    grpc_status_code code =
        cc_client_unary(c, "/concert.v1.AdminService/CreateConcert", &cr.base, NULL, NULL, md, 1, 5000, &st);
    if (code != GRPC_STATUS_OK && code != GRPC_STATUS_ALREADY_EXISTS) return code;
    Concert__V1__SeatRange range = CONCERT__V1__SEAT_RANGE__INIT, *ranges[] = {&range};
    range.first_seat = 1;
    range.last_seat = seats;
    range.price = price;
    Concert__V1__CreateScheduleRequest sr = CONCERT__V1__CREATE_SCHEDULE_REQUEST__INIT;
    sr.concert_id = (char *)concert;
    sr.schedule_id = (char *)schedule;
    sr.starts_at_unix_ms = 1798000000000LL;
    sr.n_seats = 1;
    sr.seats = ranges;
    return cc_client_unary(c, "/concert.v1.AdminService/CreateSchedule", &sr.base, NULL, NULL, md, 1, 5000, &st);
}

typedef struct {
    cc_client *c;
    const char *token;
} active_arg;

static int is_active(void *arg) {
    active_arg *a = arg;
    return th_state(a->c, a->token) == CONCERT__V1__QUEUE_STATE__QUEUE_STATE_ACTIVE;
}

int th_active_token(cc_client *c, const char *user, const char *concert, char *token, size_t len) {
    Concert__V1__QueueStatus *s = NULL;
    if (th_issue(c, user, concert, &s, NULL) != GRPC_STATUS_OK) return -1;
    snprintf(token, len, "%s", s->token);
    protobuf_c_message_free_unpacked(&s->base, NULL);
    active_arg a = {c, token};
    return th_wait_for(is_active, &a, 10, 10000) ? 0 : -1;
}

int th_wait_active(cc_client *c, const char *token) {
    active_arg a = {c, token};
    return th_wait_for(is_active, &a, 10, 15000) ? 0 : -1;
}

char *th_redis_digest(const th_redis *r) {
    redisContext *rc = th_redis_connect(r);
    cr_assert(rc, "connect to redis");
    redisReply *keys = redisCommand(rc, "KEYS *");
    size_t cap = 64 + keys->elements * 96, used = 0;
    char *out = calloc(1, cap);
    /* Sorted for a stable digest; admission bookkeeping (q:adm) ticks on its own. */
    char **names = calloc(keys->elements + 1, sizeof *names);
    size_t n = 0;
    for (size_t i = 0; i < keys->elements; i++)
        if (!strstr(keys->element[i]->str, ":q:adm")) names[n++] = keys->element[i]->str;
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    for (size_t i = 0; i < n; i++) {
        redisReply *d = redisCommand(rc, "DEBUG DIGEST-VALUE %s", names[i]);
        cr_assert(d && d->type == REDIS_REPLY_ARRAY && d->elements == 1, "DEBUG DIGEST-VALUE needs enable-debug-command");
        used += (size_t)snprintf(out + used, cap - used, "%.40s=%.40s;", names[i], d->element[0]->str);
        freeReplyObject(d);
    }
    free(names);
    freeReplyObject(keys);
    redisFree(rc);
    return out;
}

/* ---- service scripts (scripts/kafka.sh, scripts/redis-cluster.sh) ---- */

#define TH_KAFKA_SH TH_SOURCE_DIR "/scripts/kafka.sh"
#define TH_RCLUSTER_SH TH_SOURCE_DIR "/scripts/redis-cluster.sh"

/* Runs `script` with `args` (NULL-terminated), stdout into out[outlen] (may be NULL),
 * stderr appended to DIR/<script name>.log. Returns its exit status (-1 if it died). */
static int run_script(const char *script, const char *dir, const char *const *args, char *out, size_t outlen) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) return -1;
    char log[300];
    const char *base = strrchr(script, '/');
    snprintf(log, sizeof log, "%s/%.*s-sh.log", dir, (int)strcspn(base ? base + 1 : script, "."),
             base ? base + 1 : script);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(fds[1], 1);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) dup2(fd, 2);
        char *argv[24];
        int n = 0;
        argv[n++] = (char *)script;
        for (int i = 0; args[i] && n < 23; i++) argv[n++] = (char *)args[i];
        argv[n] = NULL;
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    size_t used = 0;
    char buf[512];
    ssize_t r;
    while ((r = read(fds[0], buf, sizeof buf)) != 0) {
        if (r < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (out && used + 1 < outlen) {
            size_t take = (size_t)r < outlen - 1 - used ? (size_t)r : outlen - 1 - used;
            memcpy(out + used, buf, take);
            used += take;
        }
    }
    if (out && outlen) out[used] = '\0';
    close(fds[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int kafka_sh(const th_kafka *k, const char *const *args, char *out, size_t outlen) {
    return run_script(TH_KAFKA_SH, k->dir, args, out, outlen);
}

/* The reaper: a child in its own process group (a terminal's Ctrl-C does not reach
 * it) blocked on a pipe whose only writer is this process. EOF means we died without
 * the matching stop: it runs `script stop --dir DIR` (which signals only the pids in
 * DIR) and removes DIR. A byte means "all done, just exit". The services these
 * scripts start are not our children, so PR_SET_PDEATHSIG cannot do this. */
static void start_reaper(const char *script, const char *dir, int *fd_out, pid_t *pid_out) {
    int fds[2];
    *fd_out = -1;
    if (pipe2(fds, O_CLOEXEC) < 0) return;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]), close(fds[1]);
        return;
    }
    if (pid == 0) {
        setpgid(0, 0);
        signal(SIGINT, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        close(fds[1]);
        char c;
        ssize_t r;
        while ((r = read(fds[0], &c, 1)) < 0 && errno == EINTR) {
        }
        if (r == 1) _exit(0);
        int fd = open("/dev/null", O_RDWR);
        if (fd >= 0) dup2(fd, 0), dup2(fd, 1), dup2(fd, 2);
        execl("/bin/bash", "bash", "-c", "\"$0\" stop --dir \"$1\"; rm -rf -- \"$1\"", script, dir, (char *)NULL);
        _exit(127);
    }
    close(fds[0]);
    *fd_out = fds[1];
    *pid_out = pid;
}

/* Tells the reaper all is done and waits for it. */
static void dismiss_reaper(int *fd, pid_t pid) {
    if (*fd < 0) return;
    ssize_t w = write(*fd, "x", 1);
    (void)w;
    close(*fd);
    waitpid(pid, NULL, 0);
    *fd = -1;
}

int th_kafka_start(th_kafka *k, int nodes, const char *dir, char *err, size_t errlen) {
    memset(k, 0, sizeof *k);
    k->reaper_fd = -1;
    k->nodes = nodes;
    if (dir) {
        snprintf(k->dir, sizeof k->dir, "%s", dir);
        mkdir(k->dir, 0755);
    } else {
        snprintf(k->dir, sizeof k->dir, "/tmp/concert-test-kafka-XXXXXX");
        if (!mkdtemp(k->dir)) {
            snprintf(err, errlen, "mkdtemp: %s", strerror(errno));
            return -1;
        }
    }
    start_reaper(TH_KAFKA_SH, k->dir, &k->reaper_fd, &k->reaper);
    char n[8], out[sizeof k->bootstrap];
    snprintf(n, sizeof n, "%d", nodes);
    const char *args[] = {"start", "--nodes", n, "--dir", k->dir, NULL};
    int rc = kafka_sh(k, args, out, sizeof out);
    char *nl = strchr(out, '\n');
    if (nl) *nl = '\0';
    if (rc != 0 || !out[0]) {
        snprintf(err, errlen, "scripts/kafka.sh start failed (exit %d), see %s/kafka-sh.log", rc, k->dir);
        return -1;
    }
    snprintf(k->bootstrap, sizeof k->bootstrap, "%s", out);
    return 0;
}

void th_kafka_stop(th_kafka *k) {
    if (!k->dir[0]) return;
    const char *args[] = {"stop", "--dir", k->dir, NULL};
    kafka_sh(k, args, NULL, 0);
    if (getenv("TH_KEEP_LOGS")) fprintf(stderr, "th: kafka folder kept: %s\n", k->dir);
    else th_rmrf(k->dir);
    dismiss_reaper(&k->reaper_fd, k->reaper);
    k->dir[0] = '\0';
}

int th_kafka_kill_node(th_kafka *k, int node) {
    char n[8];
    snprintf(n, sizeof n, "%d", node);
    const char *args[] = {"kill-node", "--dir", k->dir, "--node", n, NULL};
    return kafka_sh(k, args, NULL, 0);
}

int th_kafka_start_node(th_kafka *k, int node) {
    char n[8];
    snprintf(n, sizeof n, "%d", node);
    const char *args[] = {"start-node", "--dir", k->dir, "--node", n, NULL};
    return kafka_sh(k, args, NULL, 0);
}

/* ---- payment-consumer ---- */

static int consumer_exited(th_consumer *c) {
    int st;
    if (c->pid > 0 && waitpid(c->pid, &st, WNOHANG) == c->pid) {
        c->pid = 0;
        return 1;
    }
    return c->pid <= 0;
}

typedef struct {
    th_consumer *c;
    const char *needle;
} log_arg;

static int file_has(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

static int consumer_logged(void *arg) {
    log_arg *a = arg;
    return file_has(a->c->log, a->needle);
}

int th_consumer_log_has(th_consumer *c, const char *needle, int limit_ms) {
    log_arg a = {c, needle};
    return th_wait_for(consumer_logged, &a, 20, limit_ms);
}

static int consumer_started_or_gone(void *arg) {
    log_arg *a = arg;
    return consumer_exited(a->c) || file_has(a->c->log, a->needle);
}

void th_consumer_start(th_consumer *c, const char *redis_url, const char *brokers, const char *group,
                       const char *const *extra) {
    static int seq;
    snprintf(c->group, sizeof c->group, "%s", group);
    c->keep_log = 0;
    snprintf(c->log, sizeof c->log, "/tmp/concert-test-consumer-%d-%d.log", (int)getpid(), ++seq);
    char *argv[64];
    int n = 0;
    argv[n++] = TH_CONSUMER_BIN;
    argv[n++] = "--redis", argv[n++] = (char *)redis_url;
    argv[n++] = "--kafka", argv[n++] = (char *)brokers;
    argv[n++] = "--group", argv[n++] = c->group;
    argv[n++] = "--log-level", argv[n++] = "debug";
    for (int i = 0; extra && extra[i] && n < 62; i++) argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    unlink(c->log);
    c->pid = spawn(argv, c->log);
    log_arg a = {c, "event=started"};
    th_wait_for(consumer_started_or_gone, &a, 10, 30000);
    cr_assert(c->pid > 0 && file_has(c->log, "event=started"), "payment-consumer did not start (log: %s)", c->log);
}

int th_consumer_stop(th_consumer *c) {
    if (c->pid <= 0) return -1;
    kill(c->pid, SIGTERM);
    int st = 0;
    uint64_t end = th_now_ms() + 15000;
    while (waitpid(c->pid, &st, WNOHANG) == 0) {
        if (th_now_ms() > end) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &st, 0);
            c->pid = 0;
            return -1;
        }
        th_pause_ms(10);
    }
    c->pid = 0;
    if (WIFEXITED(st)) {
        if (WEXITSTATUS(st) == 0 && !c->keep_log && !getenv("TH_KEEP_LOGS")) unlink(c->log);
        return WEXITSTATUS(st);
    }
    return -1;
}

void th_consumer_kill(th_consumer *c) {
    if (c->pid <= 0) return;
    kill(c->pid, SIGKILL);
    waitpid(c->pid, NULL, 0);
    c->pid = 0;
}

/* ---- Redis Cluster ---- */

static int rcluster_sh(const th_rcluster *c, const char *const *args, char *out, size_t outlen) {
    return run_script(TH_RCLUSTER_SH, c->dir, args, out, outlen);
}

int th_rcluster_start(th_rcluster *c, int primaries, int replicas, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    c->reaper_fd = -1;
    snprintf(c->dir, sizeof c->dir, "/tmp/concert-test-rcluster-XXXXXX");
    if (!mkdtemp(c->dir)) {
        snprintf(err, errlen, "mkdtemp: %s", strerror(errno));
        return -1;
    }
    start_reaper(TH_RCLUSTER_SH, c->dir, &c->reaper_fd, &c->reaper);
    char p[8], r[8];
    snprintf(p, sizeof p, "%d", primaries);
    snprintf(r, sizeof r, "%d", replicas);
    const char *args[] = {"start", "--dir", c->dir, "--primaries", p, "--replicas", r, NULL};
    int rc = rcluster_sh(c, args, c->seeds, sizeof c->seeds);
    c->seeds[strcspn(c->seeds, "\n")] = '\0';
    if (rc != 0 || !c->seeds[0]) {
        snprintf(err, errlen, "scripts/redis-cluster.sh start failed (exit %d), see %s/redis-cluster-sh.log", rc,
                 c->dir);
        return -1;
    }
    c->nodes = primaries * (1 + replicas);
    snprintf(c->url, sizeof c->url, "redis-cluster://%s", c->seeds);
    return 0;
}

void th_rcluster_stop(th_rcluster *c) {
    if (!c->dir[0]) return;
    const char *args[] = {"stop", "--dir", c->dir, NULL};
    rcluster_sh(c, args, NULL, 0);
    if (getenv("TH_KEEP_LOGS")) fprintf(stderr, "th: redis cluster folder kept: %s\n", c->dir);
    else th_rmrf(c->dir);
    dismiss_reaper(&c->reaper_fd, c->reaper);
    c->dir[0] = '\0';
}

int th_rcluster_kill_node(th_rcluster *c, int node) {
    char n[8];
    snprintf(n, sizeof n, "%d", node);
    const char *args[] = {"kill-node", "--dir", c->dir, "--node", n, NULL};
    return rcluster_sh(c, args, NULL, 0);
}

int th_rcluster_start_node(th_rcluster *c, int node) {
    char n[8];
    snprintf(n, sizeof n, "%d", node);
    const char *args[] = {"start-node", "--dir", c->dir, "--node", n, NULL};
    return rcluster_sh(c, args, NULL, 0);
}

int th_rcluster_port(th_rcluster *c, int node) {
    char n[8], out[16] = "";
    snprintf(n, sizeof n, "%d", node);
    const char *args[] = {"port", "--dir", c->dir, "--node", n, NULL};
    if (rcluster_sh(c, args, out, sizeof out) != 0) return 0;
    return atoi(out);
}

/* ---- metrics endpoint ---- */

static int logged_metrics_port(void *arg) {
    th_server *s = arg;
    FILE *fp = fopen(s->log, "r");
    if (!fp) return 0;
    char line[1024];
    int port = 0;
    while (fgets(line, sizeof line, fp)) {
        const char *p = strstr(line, "event=metrics_listening");
        if (p && (p = strstr(p, " port="))) port = atoi(p + 6);
    }
    fclose(fp);
    s->metrics_port = port;
    return port > 0;
}

int th_metrics_port(th_server *s) {
    s->metrics_port = 0;
    th_wait_for(logged_metrics_port, s, 10, 5000);
    return s->metrics_port;
}

char *th_http(int port, const char *method, const char *path) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect to 127.0.0.1:%d", port);
    char req[256];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: x\r\n\r\n", method, path);
    cr_assert(write(fd, req, (size_t)n) == n);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    cr_assert(buf);
    ssize_t r;
    while ((r = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (cap - len < 4096) {
            cap *= 2;
            buf = realloc(buf, cap);
            cr_assert(buf);
        }
    }
    buf[len] = '\0';
    close(fd);
    return buf;
}

int th_log_port(const char *log, const char *event) {
    FILE *fp = fopen(log, "r");
    if (!fp) return 0;
    char line[2048], want[128];
    snprintf(want, sizeof want, "event=%s", event);
    int port = 0;
    while (fgets(line, sizeof line, fp)) {
        const char *p = strstr(line, want);
        if (p && (p = strstr(p, " port="))) port = atoi(p + 6);
    }
    fclose(fp);
    return port;
}
