/* TFTP load generator for benchmarks/bench_tftp.py (compiled at run time with gcc).
 *
 * N clients in one process, one epoll set, each fetching FILE with blksize B (and
 * windowsize W when W > 1) as a PXE ROM would: RRQ with tsize, ACK the OACK, ACK
 * every block (lock-step) or the last block of each window (RFC 7440), re-ACK
 * the last in-order block on a gap, resend on a 1 s silence, give up after 20 s of it.
 * Every byte is checked against LOCAL (the same file read from disk).
 * It waits for a line on stdin before starting, so several processes start together,
 * and prints one line: ok=N failed=N seconds=S p50=S p99=S bytes=N
 *
 * usage: tftp_loadgen HOST PORT REMOTE LOCAL NCLIENTS BLKSIZE WINDOWSIZE
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RESEND_NS 1000000000LL
#define MAX_TRIES 20           /* 20 s of silence: the servers back off up to 8 s */

struct client {
    int fd;
    int state;               /* 0 running, 1 done, 2 failed */
    int got_tid;
    struct sockaddr_in tid;
    long long expected;      /* absolute number of the next block wanted */
    long long since_ack;     /* blocks received since the last ACK */
    int blksize, window;
    int tries;
    long long last_rx_ns, done_ns;
    unsigned char last[4];   /* the last packet we sent (an ACK), for resends */
    int last_len;            /* 0: the RRQ is what we resend */
};

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static struct sockaddr_in server;
static unsigned char rrq[600];
static int rrq_len;

static void send_ack(struct client *c, long long block) {
    c->last[0] = 0; c->last[1] = 4;
    c->last[2] = (block >> 8) & 0xff; c->last[3] = block & 0xff;
    c->last_len = 4;
    c->since_ack = 0;
    sendto(c->fd, c->last, 4, 0, (struct sockaddr *)&c->tid, sizeof c->tid);
}

static void resend(struct client *c) {
    if (c->last_len)
        sendto(c->fd, c->last, c->last_len, 0, (struct sockaddr *)&c->tid, sizeof c->tid);
    else
        sendto(c->fd, rrq, rrq_len, 0, (struct sockaddr *)&server, sizeof server);
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT REMOTE LOCAL NCLIENTS BLKSIZE WINDOWSIZE\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[5]), blksize = atoi(argv[6]), window = atoi(argv[7]);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    int lfd = open(argv[4], O_RDONLY);
    struct stat st;
    if (lfd < 0 || fstat(lfd, &st) < 0) { perror(argv[4]); return 2; }
    long long size = st.st_size;
    unsigned char *expect = size ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, lfd, 0) : NULL;

    memset(&server, 0, sizeof server);
    server.sin_family = AF_INET;
    server.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &server.sin_addr);
    rrq_len = 2 + snprintf((char *)rrq + 2, sizeof rrq - 2, "%s%coctet%cblksize%c%d%ctsize%c0%c",
                           argv[3], 0, 0, 0, blksize, 0, 0, 0);
    rrq[0] = 0; rrq[1] = 1;
    if (window > 1)
        rrq_len += snprintf((char *)rrq + rrq_len, sizeof rrq - rrq_len, "windowsize%c%d%c", 0, window, 0);

    int ep = epoll_create1(0);
    struct client *cl = calloc(n, sizeof *cl);
    for (int i = 0; i < n; i++) {
        cl[i].fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (cl[i].fd < 0) { perror("socket"); return 2; }
        struct sockaddr_in any = {.sin_family = AF_INET};
        inet_pton(AF_INET, argv[1], &any.sin_addr);
        bind(cl[i].fd, (struct sockaddr *)&any, sizeof any);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, cl[i].fd, &ev);
        cl[i].expected = 1;
        cl[i].blksize = 512;
        cl[i].window = 1;
    }
    char go[16];
    if (!fgets(go, sizeof go, stdin)) return 2;

    long long t0 = now_ns();
    for (int i = 0; i < n; i++) {
        cl[i].last_rx_ns = t0;
        sendto(cl[i].fd, rrq, rrq_len, 0, (struct sockaddr *)&server, sizeof server);
    }
    int running = n;
    static unsigned char buf[70000];
    struct epoll_event evs[512];
    long long next_scan = t0 + RESEND_NS / 10;
    while (running > 0) {
        int k = epoll_wait(ep, evs, 512, 50);
        long long now = now_ns();
        for (int e = 0; e < k; e++) {
            struct client *c = &cl[evs[e].data.u32];
            /* one packet per event: level-triggered epoll reports the socket again if more wait */
            for (int once = 0; !once; once = 1) {
                struct sockaddr_in from;
                socklen_t fl = sizeof from;
                ssize_t r = recvfrom(c->fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
                if (r < 0) break;
                if (c->state != 0 || r < 4) continue;
                if (!c->got_tid) { c->tid = from; c->got_tid = 1; }
                else if (from.sin_port != c->tid.sin_port) continue;
                c->last_rx_ns = now;
                c->tries = 0;
                int op = buf[1];
                if (op == 5) { c->state = 2; running--; break; }
                if (op == 6) {                      /* OACK: take what the server granted */
                    if (c->expected != 1) continue;
                    c->blksize = 512; c->window = 1;
                    for (unsigned char *p = buf + 2; p < buf + r;) {
                        char *name = (char *)p; p += strlen(name) + 1;
                        if (p >= buf + r) break;
                        char *val = (char *)p; p += strlen(val) + 1;
                        if (!strcasecmp(name, "blksize")) c->blksize = atoi(val);
                        if (!strcasecmp(name, "windowsize")) c->window = atoi(val);
                    }
                    send_ack(c, 0);
                    continue;
                }
                if (op != 3) continue;
                int block = (buf[2] << 8) | buf[3];
                if (block != (c->expected & 0xffff)) {
                    /* old or out of order: say where we are (RFC 7440 sequence error) */
                    if (c->expected > 1) send_ack(c, c->expected - 1);
                    continue;
                }
                long long off = (c->expected - 1) * (long long)c->blksize;
                long long len = r - 4;
                if (off + len > size || (len && memcmp(expect + off, buf + 4, len) != 0)) {
                    c->state = 2; running--; break;
                }
                c->expected++;
                c->since_ack++;
                if (len < c->blksize) {
                    if (off + len != size) { c->state = 2; running--; break; }
                    send_ack(c, c->expected - 1);
                    c->state = 1; c->done_ns = now; running--; break;
                }
                if (c->since_ack >= c->window) send_ack(c, c->expected - 1);
            }
        }
        if (now >= next_scan) {
            next_scan = now + RESEND_NS / 10;
            for (int i = 0; i < n; i++) {
                struct client *c = &cl[i];
                if (c->state == 0 && now - c->last_rx_ns > RESEND_NS) {
                    if (++c->tries > MAX_TRIES) { c->state = 2; running--; continue; }
                    c->last_rx_ns = now;
                    resend(c);
                }
            }
        }
    }
    long long t1 = now_ns();
    long long *times = calloc(n, sizeof *times);
    int ok = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        if (cl[i].state == 1) times[ok++] = cl[i].done_ns - t0;
        else failed++;
    }
    qsort(times, ok, sizeof *times, cmp_ll);
    printf("ok=%d failed=%d seconds=%.4f p50=%.4f p99=%.4f bytes=%lld\n", ok, failed, (t1 - t0) / 1e9,
           ok ? times[ok / 2] / 1e9 : 0.0, ok ? times[(ok * 99) / 100 < ok ? (ok * 99) / 100 : ok - 1] / 1e9 : 0.0,
           (long long)ok * size);
    return 0;
}
