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

long long th_info_int(int port, const char *field) {
    th_redis r = {.port = port};
    redisContext *c = th_redis_connect(&r);
    if (!c) return -1;
    redisReply *rep = redisCommand(c, "INFO everything");
    long long v = -1;
    if (rep && rep->type == REDIS_REPLY_STRING) {
        size_t fl = strlen(field);
        for (const char *p = rep->str; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
            if (!strncmp(p, field, fl) && p[fl] == ':') {
                v = strtoll(p + fl + 1, NULL, 10);
                break;
            }
        }
    }
    if (rep) freeReplyObject(rep);
    redisFree(c);
    return v;
}

long long th_redis_info_int(const th_redis *r, const char *field) { return th_info_int(r->port, field); }

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

static int server_serving(void *arg) {
    health_arg *h = arg;
    if (server_exited(h->s)) return 1; /* stop waiting, the caller asserts */
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *r = NULL;
    cc_status status;
    cc_client_unary(h->c, "/grpc.health.v1.Health/Check", &req.base, &grpc__health__v1__health_check_response__descriptor,
                    (ProtobufCMessage **)&r, NULL, 0, 500, &status);
    int ok = status.code == GRPC_STATUS_OK && r &&
             r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    if (r) protobuf_c_message_free_unpacked(&r->base, NULL);
    return ok;
}

int th_server_wait_serving(th_server *s, int limit_ms) {
    health_arg h = {s, cc_client_open(s->addr)};
    int ok = th_wait_for(server_serving, &h, 10, limit_ms) && s->pid > 0;
    cc_client_close(h.c);
    return ok;
}

const char *th_server_bin(void) {
    const char *b = getenv("CONCERT_TEST_SERVER_BIN");
    return b && *b ? b : TH_SERVER_BIN;
}

const char *th_ctl_bin(void) { return TH_CTL_BIN; }

void th_server_spawn(th_server *s, const char *listen, const char *redis_url, const char *const *extra) {
    static int seq;
    snprintf(s->addr, sizeof s->addr, "%s", listen);
    const char *colon = strrchr(listen, ':');
    s->port = colon ? atoi(colon + 1) : 0;
    snprintf(s->log, sizeof s->log, "/tmp/concert-test-server-%d-%d-%d.log", s->port, (int)getpid(), ++seq);
    char *argv[64];
    int n = 0;
    argv[n++] = (char *)th_server_bin();
    argv[n++] = "--listen", argv[n++] = s->addr;
    argv[n++] = "--redis", argv[n++] = (char *)redis_url;
    argv[n++] = "--log-level", argv[n++] = "debug";
    argv[n++] = "--shutdown-grace-ms", argv[n++] = "2000";
    for (int i = 0; extra && extra[i] && n < 62; i++) argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    unlink(s->log);
    s->pid = spawn(argv, s->log);
}

int th_server_wait_exit(th_server *s, int limit_ms) {
    if (s->pid <= 0) return -1;
    uint64_t end = th_now_ms() + (uint64_t)limit_ms;
    int st = 0;
    while (waitpid(s->pid, &st, WNOHANG) == 0) {
        if (th_now_ms() >= end) return -2;
        th_pause_ms(5);
    }
    s->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int file_has(const char *path, const char *needle);

int th_server_log_has(const th_server *s, const char *needle) { return file_has(s->log, needle); }

void th_server_start(th_server *s, const char *redis_url, const char *const *extra) {
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", th_free_port());
    th_server_spawn(s, listen, redis_url, extra);
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

void th_server_start_with(th_server *s, const char *redis_url, const char *const *base, const char *const *extra) {
    const char *flags[64];
    int n = 0;
    for (int i = 0; base && base[i]; i++) {
        if (n >= 63) cr_assert_fail("th_server_start_with: too many flags");
        flags[n++] = base[i];
    }
    for (int i = 0; extra && extra[i]; i++) {
        if (n >= 63) cr_assert_fail("th_server_start_with: too many flags");
        flags[n++] = extra[i];
    }
    flags[n] = NULL;
    th_server_start(s, redis_url, flags);
}

int th_server_close(th_server *s, cc_client **cli) {
    if (cli && *cli) cc_client_close(*cli);
    if (cli) *cli = NULL;
    return th_server_stop(s);
}

void th_free_msg(void *m) {
    if (m) protobuf_c_message_free_unpacked(m, NULL);
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
#include "concert/v1/booking.pb-c.h"

grpc_status_code th_admin_concert(cc_client *c, const char *admin_key, const char *concert) {
    cc_md md[] = {{"x-admin-key", admin_key}};
    cc_status st;
    Concert__V1__CreateConcertRequest cr = CONCERT__V1__CREATE_CONCERT_REQUEST__INIT;
    cr.concert_id = (char *)concert;
    cr.name = "Test concert";
    grpc_status_code code =
        cc_client_unary(c, "/concert.v1.AdminService/CreateConcert", &cr.base, NULL, NULL, md, 1, 5000, &st);
    return code == GRPC_STATUS_ALREADY_EXISTS ? GRPC_STATUS_OK : code;
}

grpc_status_code th_admin_admit_rate(cc_client *c, const char *admin_key, const char *concert, int64_t rate,
                                     cc_status *st) {
    cc_md md[] = {{"x-admin-key", admin_key}};
    Concert__V1__QueuePolicy p = CONCERT__V1__QUEUE_POLICY__INIT;
    p.concert_id = (char *)concert;
    p.admit_rate = rate;
    char *f[] = {"admit_rate"};
    Concert__V1__SetQueuePolicyRequest req = CONCERT__V1__SET_QUEUE_POLICY_REQUEST__INIT;
    req.policy = &p;
    req.n_update_fields = 1;
    req.update_fields = f;
    cc_status local;
    return cc_client_unary(c, "/concert.v1.AdminService/SetQueuePolicy", &req.base, NULL, NULL, md, 1, 5000,
                           st ? st : &local);
}

grpc_status_code th_admin_catalogue(cc_client *c, const char *admin_key, const char *concert, const char *schedule,
                                    int seats, int64_t price) {
    cc_md md[] = {{"x-admin-key", admin_key}};
    cc_status st;
    grpc_status_code code = th_admin_concert(c, admin_key, concert);
    if (code != GRPC_STATUS_OK) return code;
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

grpc_status_code th_reserve_seat(cc_client *c, const char *token, const char *schedule, int seat, char *rid,
                                 size_t len, cc_status *st) {
    char auth[320];
    snprintf(auth, sizeof auth, "Bearer %s", token);
    cc_md md[] = {{"authorization", auth}};
    Concert__V1__ReserveSeatsRequest rq = CONCERT__V1__RESERVE_SEATS_REQUEST__INIT;
    rq.schedule_id = (char *)schedule;
    rq.n_seat_numbers = 1;
    rq.seat_numbers = &seat;
    Concert__V1__Reservation *r = NULL;
    cc_status local;
    grpc_status_code code = cc_client_unary(c, "/concert.v1.BookingService/ReserveSeats", &rq.base,
                                            &concert__v1__reservation__descriptor, (ProtobufCMessage **)&r, md, 1,
                                            5000, st ? st : &local);
    if (code == GRPC_STATUS_OK) {
        snprintf(rid, len, "%s", r->reservation_id);
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    return code;
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
    /* Sorted for a stable digest; admission bookkeeping (q:adm) and the idle sweep's
     * cursor (q:ep) tick on their own. */
    char **names = calloc(keys->elements + 1, sizeof *names);
    size_t n = 0;
    for (size_t i = 0; i < keys->elements; i++)
        if (!strstr(keys->element[i]->str, ":q:adm") && !strstr(keys->element[i]->str, ":q:ep"))
            names[n++] = keys->element[i]->str;
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

/* ---- raw gRPC calls ---- */
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "cc_pb.h"

struct th_raw {
    grpc_channel *ch;
    grpc_completion_queue *cq;
};

th_raw *th_raw_open(const char *addr) {
    grpc_init();
    th_raw *t = calloc(1, sizeof *t);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_arg arg = {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                    .value.integer = 64 << 20};
    grpc_channel_args args = {1, &arg};
    t->ch = grpc_channel_create(addr, creds, &args);
    grpc_channel_credentials_release(creds);
    t->cq = grpc_completion_queue_create_for_pluck(NULL);
    return t;
}

void th_raw_close(th_raw *t) {
    if (!t) return;
    grpc_channel_destroy(t->ch);
    grpc_completion_queue_shutdown(t->cq);
    grpc_completion_queue_destroy(t->cq);
    free(t);
    grpc_shutdown();
}

static gpr_timespec th_deadline(int timeout_ms) {
    return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

static void th_fill_status(cc_status *st, grpc_status_code code, grpc_slice details) {
    if (!st) return;
    st->code = code;
    size_t dl = GRPC_SLICE_LENGTH(details);
    if (dl >= sizeof st->message) dl = sizeof st->message - 1;
    memcpy(st->message, GRPC_SLICE_START_PTR(details), dl);
    st->message[dl] = '\0';
}

static void th_find_md(const grpc_metadata_array *a, const char *key, char *out, size_t len) {
    if (!out || !len) return;
    out[0] = '\0';
    for (size_t i = 0; key && i < a->count; i++) {
        const grpc_metadata *m = &a->metadata[i];
        if (GRPC_SLICE_LENGTH(m->key) == strlen(key) && !memcmp(GRPC_SLICE_START_PTR(m->key), key, strlen(key))) {
            size_t vl = GRPC_SLICE_LENGTH(m->value);
            if (vl >= len) vl = len - 1;
            memcpy(out, GRPC_SLICE_START_PTR(m->value), vl);
            out[vl] = '\0';
            return;
        }
    }
}

grpc_status_code th_raw_unary(th_raw *t, const char *method, const void *req, size_t len, const cc_md *md,
                              int n_md, int timeout_ms, cc_status *st, const char *trailer_key, char *trailer,
                              size_t trailer_len) {
    grpc_slice m = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(t->ch, NULL, GRPC_PROPAGATE_DEFAULTS, t->cq, m, NULL,
                                               th_deadline(timeout_ms), NULL);
    grpc_slice_unref(m);
    grpc_metadata mds[8];
    if (n_md > 8) n_md = 8;
    for (int i = 0; i < n_md; i++) {
        memset(&mds[i], 0, sizeof mds[i]);
        mds[i].key = grpc_slice_from_copied_string(md[i].key);
        mds[i].value = grpc_slice_from_copied_string(md[i].value);
    }
    grpc_metadata_array init_md, trail;
    grpc_metadata_array_init(&init_md);
    grpc_metadata_array_init(&trail);
    grpc_byte_buffer *bb = cc_pb_pack_raw(req, len), *resp = NULL;
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    size_t n = cc_ops_request(ops, mds, (size_t)n_md, bb, &init_md);
    n += cc_ops_unary_reply(ops + n, &resp, &trail, &code, &details);
    int tag;
    grpc_call_error e = grpc_call_start_batch(call, ops, n, &tag, NULL);
    grpc_byte_buffer_destroy(bb);
    for (int i = 0; i < n_md; i++) grpc_slice_unref(mds[i].key), grpc_slice_unref(mds[i].value);
    if (e == GRPC_CALL_OK) grpc_completion_queue_pluck(t->cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    else code = GRPC_STATUS_INTERNAL;
    th_fill_status(st, code, details);
    th_find_md(&trail, trailer_key, trailer, trailer_len);
    if (resp) grpc_byte_buffer_destroy(resp);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&init_md);
    grpc_metadata_array_destroy(&trail);
    grpc_call_unref(call);
    return code;
}

grpc_status_code th_raw_unary_pb(th_raw *t, const char *method, const ProtobufCMessage *req, const cc_md *md,
                                 int n_md, int timeout_ms, cc_status *st, const char *trailer_key, char *trailer,
                                 size_t trailer_len) {
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    protobuf_c_message_pack(req, buf);
    grpc_status_code code =
        th_raw_unary(t, method, buf, len, md, n_md, timeout_ms, st, trailer_key, trailer, trailer_len);
    free(buf);
    return code;
}

int th_raw_bidi(th_raw *t, const char *method, grpc_byte_buffer *const *msgs, int n, grpc_byte_buffer **out,
                int max_out, int timeout_ms, cc_status *st) {
    grpc_slice m = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(t->ch, NULL, GRPC_PROPAGATE_DEFAULTS, t->cq, m, NULL,
                                               th_deadline(timeout_ms), NULL);
    grpc_slice_unref(m);
    grpc_metadata_array init_md, trail;
    grpc_metadata_array_init(&init_md);
    grpc_metadata_array_init(&trail);
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    int tag_start, tag_status;
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[1].data.recv_initial_metadata.recv_initial_metadata = &init_md;
    grpc_call_start_batch(call, ops, 2, &tag_start, NULL);
    grpc_completion_queue_pluck(t->cq, &tag_start, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[0].data.recv_status_on_client.trailing_metadata = &trail;
    ops[0].data.recv_status_on_client.status = &code;
    ops[0].data.recv_status_on_client.status_details = &details;
    grpc_call_start_batch(call, ops, 1, &tag_status, NULL);
    /* Every request back to back: one SEND_MESSAGE in flight at a time, but without
     * reading a single answer in between. */
    for (int i = 0; i < n; i++) {
        int tag_send;
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_SEND_MESSAGE;
        ops[0].data.send_message.send_message = msgs[i];
        grpc_call_start_batch(call, ops, 1, &tag_send, NULL);
        grpc_completion_queue_pluck(t->cq, &tag_send, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    }
    int tag_close;
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    grpc_call_start_batch(call, ops, 1, &tag_close, NULL);
    grpc_completion_queue_pluck(t->cq, &tag_close, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    int got = 0;
    for (;;) {
        grpc_byte_buffer *bb = NULL;
        int tag_recv;
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_RECV_MESSAGE;
        ops[0].data.recv_message.recv_message = &bb;
        grpc_call_start_batch(call, ops, 1, &tag_recv, NULL);
        grpc_completion_queue_pluck(t->cq, &tag_recv, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (!bb) break;
        if (out && got < max_out) out[got] = bb;
        else grpc_byte_buffer_destroy(bb);
        got++;
    }
    grpc_completion_queue_pluck(t->cq, &tag_status, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    th_fill_status(st, code, details);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&init_md);
    grpc_metadata_array_destroy(&trail);
    grpc_call_unref(call);
    return got;
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

/* ---- JWTs ---- */
#include <openssl/evp.h>
#include <openssl/hmac.h>

void th_b64url(const unsigned char *in, size_t len, char *out) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < len ? in[i + 2] : 0);
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        if (i + 1 < len) out[o++] = t[v >> 6 & 63];
        if (i + 2 < len) out[o++] = t[v & 63];
    }
    out[o] = '\0';
}

void th_jwt_hs256(const void *key, size_t keylen, const char *header, const char *payload, char *out) {
    size_t hl = strlen(header), pl = strlen(payload);
    th_b64url((const unsigned char *)header, hl, out);
    size_t o = strlen(out);
    out[o++] = '.';
    th_b64url((const unsigned char *)payload, pl, out + o);
    o += strlen(out + o);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int ml = 0;
    HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)out, o, mac, &ml);
    out[o++] = '.';
    th_b64url(mac, ml, out + o);
}
