/* storm_client: simulated PXE nodes for benchmarks/bootstorm.py (compiled there with gcc -O2).
 *
 * usage: storm_client PLAN OUT        then "go T0" on stdin (T0: CLOCK_REALTIME ns, shared by
 *                                      every client process so their nodes start together)
 *
 * The plan (written by benchmarks/storm/plan.py) lists reference files, nodes with their own IP
 * address and power-on offset, and the ordered requests each node makes:
 *   ref  ID PATH
 *   node ID IP START_MS
 *   step tftp HOST PORT REF RESTART DELAY_MS LABEL FILENAME BLKSIZE WINDOWSIZE
 *   step http HOST PORT REF RESTART DELAY_MS LABEL MODE PATH      MODE: pool | fresh | priv
 *   option NAME VALUE                  stall_ms, max_attempts, priv_port, ipxe_window
 * Each node is a state machine in one epoll loop:
 *   tftp  RRQ with blksize (+ windowsize) and tsize 0; an ACK per block (lock-step) or per window,
 *         a re-ACK of the last in-order block on a duplicate or a gap; iPXE's retry timer (250 ms,
 *         smoothed towards the RTT, doubled on each expiry; past 10 s the transfer fails).
 *   http  GET on the node's pooled keep-alive connection to that server (iPXE keeps one and
 *         reopens it if the server closed it while idle; its receive window is iPXE's, at most
 *         256 KiB, where the kernel would let one socket grow to tcp_rmem's 32 MB), or on a fresh
 *         connection from an ephemeral port, or from a privileged port (the node agent in secure
 *         mode, a Linux curl: the kernel's own window).
 * Every byte received is compared with the step's reference file (bootstorm.py checked each
 * reference's sha256 against the manifest) and the length must match it. A failed step waits
 * DELAY_MS and restarts the node at step RESTART (the iPXE script's retry loop), at most
 * max_attempts times in all; then the node has failed.
 * OUT gets one line per attempt:  NODE LABEL START_NS END_NS BYTES RESULT SRCPORT EXTRA
 * (EXTRA: TFTP retransmissions, or 1 when an HTTP request went on a reused connection).
 * stdout gets one summary line of key=value pairs, with this process's own CPU seconds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MS 1000000LL
#define RTO_MIN (250 * MS)       /* iPXE DEFAULT_MIN_TIMEOUT */
#define RTO_MAX (10000 * MS)     /* iPXE DEFAULT_MAX_TIMEOUT */
#define RECV_BUF (256 * 1024)

enum { TFTP, HTTP };
enum { POOL, FRESH, PRIV };
enum { WAITING, RUNNING, DONE, FAILED };
enum { H_CONNECT, H_HEADERS, H_BODY };

struct ref { const unsigned char *data; long long size; };

struct step {
    int kind, mode, ref, restart, delay_ms, blksize, window;
    struct sockaddr_in srv;
    char label[24];
    char *req;                  /* TFTP: the RRQ; HTTP: the request */
    int req_len;
};

struct node {
    int id, nsteps, cur, state, attempts;
    struct in_addr ip;
    struct step *steps;
    long long timer_ns;         /* WAITING: when to begin the current step */
    long long step_start, got, last_progress;
    int fd, pool_fd, srcport, extra;
    /* TFTP */
    int got_tid, since_ack, blksize, window, tcount, timer_on;
    struct sockaddr_in tid;
    long long expected, rto, sent_ns;
    unsigned char last[4];
    int last_len;
    /* HTTP */
    int hstate, reused, close_after;
    long long clen;
    char hbuf[4096];
    int hlen;
};

static struct ref *refs;
static int nrefs;
static struct node *nodes;
static int nnodes;
static long long stall_ns = 120000 * MS;
static int max_attempts = 10, priv_port = 1023;
static int ipxe_window = 256 * 1024;    /* iPXE's TCP_MAX_WINDOW_SIZE */
static int ep, running;
static FILE *out;
static unsigned char buf[RECV_BUF];
static long long n_done, n_failed, bytes_total;

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) { perror(what); exit(2); }

/* ---------------------------------------------------------------- plan */
static void load_plan(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die(path);
    char line[8192];
    int cap_refs = 64, cap_nodes = 64;
    refs = calloc(cap_refs, sizeof *refs);
    nodes = calloc(cap_nodes, sizeof *nodes);
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *save, *w = strtok_r(line, " ", &save);
        if (!w) continue;
        if (!strcmp(w, "option")) {
            char *name = strtok_r(NULL, " ", &save), *val = strtok_r(NULL, " ", &save);
            if (!strcmp(name, "stall_ms")) stall_ns = atoll(val) * MS;
            else if (!strcmp(name, "max_attempts")) max_attempts = atoi(val);
            else if (!strcmp(name, "priv_port")) priv_port = atoi(val);
            else if (!strcmp(name, "ipxe_window")) ipxe_window = atoi(val);
        } else if (!strcmp(w, "ref")) {
            int id = atoi(strtok_r(NULL, " ", &save));
            char *p = strtok_r(NULL, " ", &save);
            if (id >= cap_refs) { cap_refs = id * 2 + 1; refs = realloc(refs, cap_refs * sizeof *refs); }
            int fd = open(p, O_RDONLY);
            struct stat st;
            if (fd < 0 || fstat(fd, &st) < 0) die(p);
            refs[id].size = st.st_size;
            refs[id].data = st.st_size ? mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0) : NULL;
            if (refs[id].data == MAP_FAILED) die("mmap");
            close(fd);
            if (id >= nrefs) nrefs = id + 1;
        } else if (!strcmp(w, "node")) {
            if (nnodes == cap_nodes) { cap_nodes *= 2; nodes = realloc(nodes, cap_nodes * sizeof *nodes); }
            struct node *n = &nodes[nnodes++];
            memset(n, 0, sizeof *n);
            n->id = atoi(strtok_r(NULL, " ", &save));
            if (inet_pton(AF_INET, strtok_r(NULL, " ", &save), &n->ip) != 1) { fprintf(stderr, "bad ip\n"); exit(2); }
            n->timer_ns = atoll(strtok_r(NULL, " ", &save)) * MS;   /* offset; made absolute at go */
            n->fd = n->pool_fd = -1;
        } else if (!strcmp(w, "step")) {
            struct node *n = &nodes[nnodes - 1];
            n->steps = realloc(n->steps, (n->nsteps + 1) * sizeof *n->steps);
            struct step *s = &n->steps[n->nsteps++];
            memset(s, 0, sizeof *s);
            char *kind = strtok_r(NULL, " ", &save), *host = strtok_r(NULL, " ", &save);
            s->kind = !strcmp(kind, "tftp") ? TFTP : HTTP;
            s->srv.sin_family = AF_INET;
            inet_pton(AF_INET, host, &s->srv.sin_addr);
            s->srv.sin_port = htons(atoi(strtok_r(NULL, " ", &save)));
            s->ref = atoi(strtok_r(NULL, " ", &save));
            s->restart = atoi(strtok_r(NULL, " ", &save));
            s->delay_ms = atoi(strtok_r(NULL, " ", &save));
            snprintf(s->label, sizeof s->label, "%s", strtok_r(NULL, " ", &save));
            char tmp[8192];
            if (s->kind == TFTP) {
                char *file = strtok_r(NULL, " ", &save);
                s->blksize = atoi(strtok_r(NULL, " ", &save));
                s->window = atoi(strtok_r(NULL, " ", &save));
                int len = 2 + snprintf(tmp + 2, sizeof tmp - 2, "%s%coctet%cblksize%c%d%ctsize%c0%c",
                                       file, 0, 0, 0, s->blksize, 0, 0, 0);
                if (s->window > 1)
                    len += snprintf(tmp + len, sizeof tmp - len, "windowsize%c%d%c", 0, s->window, 0);
                tmp[0] = 0; tmp[1] = 1;
                s->req = malloc(len); memcpy(s->req, tmp, len); s->req_len = len;
            } else {
                char *mode = strtok_r(NULL, " ", &save), *p = strtok_r(NULL, " ", &save);
                s->mode = !strcmp(mode, "pool") ? POOL : !strcmp(mode, "priv") ? PRIV : FRESH;
                if (s->mode == POOL)   /* as iPXE asks */
                    s->req_len = snprintf(tmp, sizeof tmp, "GET %s HTTP/1.1\r\nConnection: keep-alive\r\n"
                                          "Host: %s:%d\r\nUser-Agent: iPXE/1.21.1+\r\n\r\n", p, host,
                                          ntohs(s->srv.sin_port));
                else                   /* as the node agent's curl asks */
                    s->req_len = snprintf(tmp, sizeof tmp, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n"
                                          "User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n", p, host,
                                          ntohs(s->srv.sin_port));
                s->req = strdup(tmp);
            }
        }
    }
    fclose(f);
}

/* ---------------------------------------------------------------- steps */
static void record(struct node *n, const char *result, long long now) {
    fprintf(out, "%d %s %lld %lld %lld %s %d %d\n", n->id, n->steps[n->cur].label, n->step_start, now,
            n->got, result, n->srcport, n->extra);
}

static void drop_fd(int *fd) {
    if (*fd >= 0) { close(*fd); *fd = -1; }
}

static void begin_step(struct node *n, long long now);

static void finish_step(struct node *n, long long now) {
    record(n, "ok", now);
    bytes_total += n->got;
    n->fd = -1;
    if (++n->cur == n->nsteps) {
        n->state = DONE; n_done++; running--;
        return;
    }
    begin_step(n, now);
}

/* Why an HTTP step stalled, from the kernel's view of its connection: still in the handshake, or
 * connected with the request sent and no reply yet, or mid-reply. A report can then tell SYNs lost
 * before the server from requests the server holds. */
static const char *stalled_why(struct node *n) {
    struct tcp_info ti;
    socklen_t tl = sizeof ti;
    if (n->steps[n->cur].kind == TFTP || n->fd < 0) return "stalled";
    if (getsockopt(n->fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) < 0) return "stalled";
    if (ti.tcpi_state == TCP_SYN_SENT) return "stalled_in_handshake";
    if (ti.tcpi_state != TCP_ESTABLISHED) return "stalled_closing";
    if (n->hstate == H_CONNECT) return "stalled_connected_unsent";
    if (n->hlen == 0) return ti.tcpi_unacked ? "stalled_request_unacked" : "stalled_no_reply";
    return "stalled_in_reply";
}

static void fail_step(struct node *n, const char *why, long long now) {
    if (!strcmp(why, "stalled")) why = stalled_why(n);
    record(n, why, now);
    drop_fd(&n->fd);
    drop_fd(&n->pool_fd);           /* iPXE drops the connection a failed request used */
    struct step *s = &n->steps[n->cur];
    if (++n->attempts >= max_attempts) {
        n->state = FAILED; n_failed++; running--;
        return;
    }
    n->cur = s->restart;
    n->state = WAITING;
    n->timer_ns = now + s->delay_ms * MS;
}

static int watch(int fd, struct node *n, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)(n - nodes)};
    return epoll_ctl(ep, op, fd, &ev);
}

static void tftp_send(struct node *n, const void *pkt, int len, const struct sockaddr_in *to, long long now) {
    sendto(n->fd, pkt, len, 0, (const struct sockaddr *)to, sizeof *to);
    n->sent_ns = now;
    n->timer_on = 1;
}

static void tftp_ack(struct node *n, long long block, long long now) {
    n->last[0] = 0; n->last[1] = 4; n->last[2] = (block >> 8) & 0xff; n->last[3] = block & 0xff;
    n->last_len = 4;
    n->since_ack = 0;
    tftp_send(n, n->last, 4, &n->tid, now);
}

/* iPXE's stop_timer: smooth the timeout towards twice the round trip, unless it backed off */
static void tftp_progress(struct node *n, long long now) {
    if (n->tcount) n->tcount--;
    else {
        n->rto += (now - n->sent_ns) / 2 - n->rto / 8;
        if (n->rto < RTO_MIN) n->rto = RTO_MIN;
    }
    n->timer_on = 0;
    n->last_progress = now;
}

static int open_socket(struct node *n, int type, int port) {
    int fd = socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    if (type == SOCK_STREAM && port == 0)
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (port) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_addr = n->ip, .sin_port = htons(port)};
    if (bind(fd, (struct sockaddr *)&me, sizeof me) < 0) { close(fd); return -1; }
    return fd;
}

/* A TCP connection to the step's server; from a port below 1024 in PRIV mode (like curl's
 * --local-port 1-1023: try the next port while one is taken). */
static int http_connect(struct node *n, struct step *s, long long now) {
    for (int tries = 0; tries < 424; tries++) {
        int port = 0;
        if (s->mode == PRIV) {
            port = priv_port--;
            if (priv_port < 600) priv_port = 1023;
        }
        int fd = open_socket(n, SOCK_STREAM, port);
        if (fd < 0) {
            if (s->mode == PRIV && errno == EADDRINUSE) continue;
            return -1;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        /* before connect, so the window scale is chosen for it; the kernel doubles the value for
         * its bookkeeping, and advertises about the asked size */
        if (s->mode == POOL && ipxe_window > 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &ipxe_window, sizeof ipxe_window);
        if (connect(fd, (struct sockaddr *)&s->srv, sizeof s->srv) < 0 && errno != EINPROGRESS) {
            close(fd);
            if (s->mode == PRIV && (errno == EADDRNOTAVAIL || errno == EADDRINUSE)) continue;
            return -1;
        }
        struct sockaddr_in me;
        socklen_t ml = sizeof me;
        getsockname(fd, (struct sockaddr *)&me, &ml);
        n->srcport = ntohs(me.sin_port);
        n->fd = fd;
        n->hstate = H_CONNECT;
        watch(fd, n, EPOLLOUT, EPOLL_CTL_ADD);
        return 0;
    }
    (void)now;
    return -1;
}

static void http_send_request(struct node *n, long long now) {
    struct step *s = &n->steps[n->cur];
    ssize_t w = send(n->fd, s->req, s->req_len, MSG_NOSIGNAL);
    if (w != s->req_len) {
        if (n->reused) {            /* the pooled connection died while idle: reopen it */
            drop_fd(&n->fd);
            n->reused = 0;
            if (http_connect(n, s, now) < 0) fail_step(n, "connect", now);
            return;
        }
        fail_step(n, "send", now);
        return;
    }
    n->hstate = H_HEADERS;
    n->hlen = 0;
    watch(n->fd, n, EPOLLIN | EPOLLRDHUP, EPOLL_CTL_MOD);
}

static void begin_step(struct node *n, long long now) {
    struct step *s = &n->steps[n->cur];
    n->state = RUNNING;
    n->step_start = n->last_progress = now;
    n->got = 0; n->extra = 0; n->srcport = 0;
    if (s->kind == TFTP) {
        n->fd = open_socket(n, SOCK_DGRAM, 0);
        if (n->fd < 0) { fail_step(n, "socket", now); return; }
        struct sockaddr_in me;
        socklen_t ml = sizeof me;
        getsockname(n->fd, (struct sockaddr *)&me, &ml);
        n->srcport = ntohs(me.sin_port);
        watch(n->fd, n, EPOLLIN, EPOLL_CTL_ADD);
        n->got_tid = 0; n->expected = 1; n->since_ack = 0; n->blksize = 512; n->window = 1;
        n->rto = RTO_MIN; n->tcount = 0; n->last_len = 0;
        tftp_send(n, s->req, s->req_len, &s->srv, now);
        return;
    }
    n->clen = -1; n->close_after = 0; n->reused = 0;
    if (s->mode == POOL && n->pool_fd >= 0) {
        n->fd = n->pool_fd; n->pool_fd = -1; n->reused = 1; n->extra = 1;
        struct sockaddr_in me;
        socklen_t ml = sizeof me;
        getsockname(n->fd, (struct sockaddr *)&me, &ml);
        n->srcport = ntohs(me.sin_port);
        watch(n->fd, n, EPOLLIN | EPOLLRDHUP, EPOLL_CTL_MOD);
        http_send_request(n, now);
        return;
    }
    if (http_connect(n, s, now) < 0) fail_step(n, errno == EADDRNOTAVAIL ? "no_port" : "connect", now);
}

/* ---------------------------------------------------------------- TFTP */
static void tftp_readable(struct node *n, long long now) {
    struct step *s = &n->steps[n->cur];
    struct ref *r = &refs[s->ref];
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t len = recvfrom(n->fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
    if (len < 4 || from.sin_addr.s_addr != s->srv.sin_addr.s_addr) return;
    if (!n->got_tid) { n->tid = from; n->got_tid = 1; }
    else if (from.sin_port != n->tid.sin_port) return;        /* another TID: not ours */
    int op = buf[1];
    if (op == 5) { fail_step(n, "tftp_error", now); return; }
    if (op == 6) {                                          /* OACK: take what the server granted */
        if (n->expected != 1) return;
        tftp_progress(n, now);
        for (unsigned char *p = buf + 2; p < buf + len;) {
            char *name = (char *)p; p += strnlen(name, buf + len - p) + 1;
            if (p >= buf + len) break;
            char *val = (char *)p; p += strnlen(val, buf + len - p) + 1;
            if (!strcasecmp(name, "blksize")) n->blksize = atoi(val);
            else if (!strcasecmp(name, "windowsize")) n->window = atoi(val);
            else if (!strcasecmp(name, "tsize") && atoll(val) != r->size) { fail_step(n, "tsize", now); return; }
        }
        tftp_ack(n, 0, now);
        return;
    }
    if (op != 3) return;
    int block = (buf[2] << 8) | buf[3];
    if (block != (n->expected & 0xffff)) {                 /* duplicate or gap: say where we are */
        tftp_ack(n, n->expected - 1, now);
        return;
    }
    tftp_progress(n, now);
    long long off = (n->expected - 1) * (long long)n->blksize, data = len - 4;
    if (off + data > r->size || (data && memcmp(r->data + off, buf + 4, data))) {
        fail_step(n, "bad_bytes", now);
        return;
    }
    n->got = off + data;
    n->expected++;
    n->since_ack++;
    if (data < n->blksize) {
        if (n->got != r->size) { fail_step(n, "short", now); return; }
        tftp_ack(n, n->expected - 1, now);
        n->timer_on = 0;
        watch(n->fd, n, 0, EPOLL_CTL_DEL);
        close(n->fd);
        finish_step(n, now);
        return;
    }
    if (n->since_ack >= n->window) tftp_ack(n, n->expected - 1, now);
}

static void tftp_timer(struct node *n, long long now) {
    if (!n->timer_on || now - n->sent_ns < n->rto) return;
    n->tcount++;
    n->rto <<= 1;
    if (n->rto > RTO_MAX) { fail_step(n, "tftp_timeout", now); return; }
    n->extra++;
    struct step *s = &n->steps[n->cur];
    if (n->last_len) tftp_send(n, n->last, n->last_len, &n->tid, now);
    else tftp_send(n, s->req, s->req_len, &s->srv, now);
}

/* ---------------------------------------------------------------- HTTP */
static int body_bytes(struct node *n, const unsigned char *p, long long len, long long now) {
    struct ref *r = &refs[n->steps[n->cur].ref];
    if (n->got + len > n->clen || n->got + len > r->size || memcmp(r->data + n->got, p, len)) {
        fail_step(n, "bad_bytes", now);
        return -1;
    }
    n->got += len;
    n->last_progress = now;
    if (n->got < n->clen) return 0;
    struct step *s = &n->steps[n->cur];
    if (n->got != r->size) { fail_step(n, "short", now); return -1; }
    if (s->mode == POOL && !n->close_after) {
        n->pool_fd = n->fd;                 /* back to the pool, idle (not watched) */
        watch(n->fd, n, 0, EPOLL_CTL_MOD);
    } else {
        close(n->fd);
    }
    finish_step(n, now);
    return 1;
}

static int parse_headers(struct node *n, long long now) {
    char *end = memmem(n->hbuf, n->hlen, "\r\n\r\n", 4);
    if (!end) {
        if (n->hlen == (int)sizeof n->hbuf - 1) { fail_step(n, "headers", now); return -1; }
        return 0;
    }
    *end = 0;
    int code = 0;
    if (sscanf(n->hbuf, "HTTP/1.%*d %d", &code) != 1) { fail_step(n, "bad_status", now); return -1; }
    for (char *line = strstr(n->hbuf, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        char *h = line + 2;
        if (!strncasecmp(h, "content-length:", 15)) n->clen = atoll(h + 15);
        else if (!strncasecmp(h, "connection:", 11) && strcasestr(h, "close")) n->close_after = 1;
    }
    if (code != 200) {
        char why[32];
        snprintf(why, sizeof why, "http_%d", code);
        fail_step(n, why, now);
        return -1;
    }
    if (n->clen < 0) { fail_step(n, "no_length", now); return -1; }
    n->hstate = H_BODY;
    long long rest = n->hlen - (end + 4 - n->hbuf);
    if (rest > 0 || n->clen == 0) return body_bytes(n, (unsigned char *)end + 4, rest, now) < 0 ? -1 : 1;
    return 0;
}

static void http_event(struct node *n, uint32_t events, long long now) {
    if (n->hstate == H_CONNECT) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(n->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) { errno = err; fail_step(n, "connect", now); return; }
        http_send_request(n, now);
        return;
    }
    if (n->hstate == H_HEADERS) {
        ssize_t r = recv(n->fd, n->hbuf + n->hlen, sizeof n->hbuf - 1 - n->hlen, 0);
        if (r < 0 && errno == EAGAIN) return;
        if (r <= 0) {
            if (n->reused && n->hlen == 0) {       /* closed while pooled: iPXE reopens */
                drop_fd(&n->fd);
                n->reused = 0;
                if (http_connect(n, &n->steps[n->cur], now) < 0) fail_step(n, "connect", now);
                return;
            }
            fail_step(n, r == 0 ? "eof" : "reset", now);
            return;
        }
        n->hlen += r;
        n->hbuf[n->hlen] = 0;
        n->last_progress = now;
        parse_headers(n, now);
        return;
    }
    ssize_t r = recv(n->fd, buf, sizeof buf, 0);
    if (r < 0 && errno == EAGAIN) return;
    if (r <= 0) { fail_step(n, r == 0 ? "eof" : "reset", now); return; }
    body_bytes(n, buf, r, now);
    (void)events;
}

/* ---------------------------------------------------------------- main */
int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PLAN OUT (then 'go T0' on stdin)\n", argv[0]);
        return 2;
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    load_plan(argv[1]);
    out = fopen(argv[2], "w");
    if (!out) die(argv[2]);
    ep = epoll_create1(EPOLL_CLOEXEC);
    printf("ready nodes=%d refs=%d\n", nnodes, nrefs);
    fflush(stdout);
    char go[64];
    long long t0;
    if (!fgets(go, sizeof go, stdin) || sscanf(go, "go %lld", &t0) != 1) return 2;
    for (int i = 0; i < nnodes; i++) { nodes[i].timer_ns += t0; nodes[i].state = WAITING; }
    running = nnodes;
    struct rusage ru0;
    getrusage(RUSAGE_SELF, &ru0);
    static struct epoll_event evs[1024];
    long long next_scan = 0;
    while (running > 0) {
        int k = epoll_wait(ep, evs, 1024, 2);
        long long now = now_ns();
        for (int e = 0; e < k; e++) {
            /* each event's own time: a batch of reads takes milliseconds, and a step's end must not
             * be stamped before the read that completed it */
            if (e) now = now_ns();
            struct node *n = &nodes[evs[e].data.u32];
            if (n->state != RUNNING || n->fd < 0) continue;
            if (n->steps[n->cur].kind == TFTP) tftp_readable(n, now);
            else http_event(n, evs[e].events, now);
        }
        if (now < next_scan) continue;
        next_scan = now + 2 * MS;
        for (int i = 0; i < nnodes; i++) {
            struct node *n = &nodes[i];
            if (n->state == WAITING && now >= n->timer_ns) begin_step(n, now);
            else if (n->state == RUNNING && n->steps[n->cur].kind == TFTP) tftp_timer(n, now);
            if (n->state == RUNNING && now - n->last_progress > stall_ns) fail_step(n, "stalled", now);
        }
    }
    long long t1 = now_ns();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    fclose(out);
    printf("done nodes=%d ok=%lld failed=%lld seconds=%.4f bytes=%lld cpu_user=%.3f cpu_sys=%.3f "
           "maxrss_kb=%ld\n", nnodes, n_done, n_failed, (t1 - t0) / 1e9, bytes_total,
           (ru.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + (ru.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6,
           (ru.ru_stime.tv_sec - ru0.ru_stime.tv_sec) + (ru.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6,
           ru.ru_maxrss);
    return 0;
}
