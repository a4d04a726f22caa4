/*
 * The floor: what relaying kept-alive HTTP costs when a proxy does nothing
 * but move bytes.
 *
 *   gcc -O2 -o floor bench/floor.c
 *   ./floor LISTEN_PORT UPSTREAM_PORT...
 *
 * One thread, level-triggered epoll. Every accepted client connection gets
 * its own upstream connection (round-robin over the upstream ports, all on
 * 127.0.0.1) for its whole life, and bytes are copied both ways with
 * read/write: no parsing, no pool, no routing. A request then costs one
 * read and one write in each direction plus a share of epoll_wait, the
 * fewest system calls a user-space HTTP proxy can make, so its CPU per
 * request is the kernel's share that any such proxy pays. bench/compare.py
 * runs it as the "floor" target with --floor; it is a measuring stick, not
 * a proxy (it answers nothing itself and stops at the first error it
 * cannot handle).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 65536
#define MAX_FD 65536

/* One direction of a pair: bytes read from `fd` wait in `buf` until `peer`
 * takes them. */
struct side {
    int fd, peer;
    size_t off, len;
    char buf[BUF];
};

static struct side *sides[MAX_FD];
static int ep;

static void watch(int fd, unsigned events, int op) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(ep, op, fd, &ev) < 0) {
        perror("epoll_ctl");
        exit(1);
    }
}

static void drop(int fd) {
    struct side *s = sides[fd];
    if (!s) return;
    int peer = s->peer;
    close(fd);
    free(s);
    sides[fd] = NULL;
    if (peer >= 0 && sides[peer]) {
        close(peer);
        free(sides[peer]);
        sides[peer] = NULL;
    }
}

/* Write what `s` holds to its peer; while the peer is full, stop reading
 * `s` and wait for the peer to be writable. */
static void flush(struct side *s) {
    while (s->len > s->off) {
        ssize_t n = write(s->peer, s->buf + s->off, s->len - s->off);
        if (n < 0) {
            if (errno == EAGAIN) {
                watch(s->fd, 0, EPOLL_CTL_MOD);
                watch(s->peer, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
                return;
            }
            drop(s->fd);
            return;
        }
        s->off += (size_t)n;
    }
    s->off = s->len = 0;
}

static int nodelay(int fd) {
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static struct side *side(int fd, int peer) {
    struct side *s = malloc(sizeof *s);
    if (!s) exit(1);
    s->fd = fd;
    s->peer = peer;
    s->off = s->len = 0;
    sides[fd] = s;
    return s;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s LISTEN_PORT UPSTREAM_PORT...\n", argv[0]);
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    addr.sin_port = htons((unsigned short)atoi(argv[1]));
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) {
        perror("listen");
        return 1;
    }
    ep = epoll_create1(0);
    watch(lfd, EPOLLIN, EPOLL_CTL_ADD);
    int next = 0, upstreams = argc - 2;
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        if (n < 0 && errno != EINTR) {
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
                if (c < 0) continue;
                int u = socket(AF_INET, SOCK_STREAM, 0);
                addr.sin_port = htons((unsigned short)atoi(argv[2 + next++ % upstreams]));
                if (c >= MAX_FD || u < 0 || u >= MAX_FD ||
                    connect(u, (struct sockaddr *)&addr, sizeof addr) < 0) {
                    close(c);
                    if (u >= 0) close(u);
                    continue;
                }
                fcntl(u, F_SETFL, O_NONBLOCK);
                nodelay(c);
                nodelay(u);
                side(c, u);
                side(u, c);
                watch(c, EPOLLIN, EPOLL_CTL_ADD);
                watch(u, EPOLLIN, EPOLL_CTL_ADD);
                continue;
            }
            struct side *s = sides[fd];
            if (!s) continue;
            if (events[i].events & EPOLLOUT) {
                /* The peer of `fd` was full: `fd` is that peer; flush the
                 * side that writes into it, then read both again. */
                struct side *w = sides[s->peer];
                if (!w) continue;
                flush(w);
                if (sides[fd] && w->len == 0) {
                    watch(fd, EPOLLIN, EPOLL_CTL_MOD);
                    watch(w->fd, EPOLLIN, EPOLL_CTL_MOD);
                }
                continue;
            }
            if (s->len > s->off) {
                /* Still waiting for its peer: only a hang-up or an error
                 * gets here. */
                drop(fd);
                continue;
            }
            ssize_t got = read(fd, s->buf, BUF);
            if (got <= 0) {
                if (got < 0 && errno == EAGAIN) continue;
                drop(fd);
                continue;
            }
            s->off = 0;
            s->len = (size_t)got;
            flush(s);
        }
    }
}
