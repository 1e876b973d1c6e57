/*
 * What the benchmarks' floor servers (http-floor.c, ws-floor.c) share: the
 * listening socket, and io_uring set up and driven the way Myriad's
 * backend drives it (SINGLE_ISSUER + DEFER_TASKRUN + COOP_TASKRUN, a
 * multishot accept, accepted sockets in the registered file table, one
 * multishot receive per connection into a ring of provided buffers).
 * Each program includes it once; everything here is static.
 */
#ifndef MYRIAD_FLOOR_H
#define MYRIAD_FLOOR_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* Descriptors (= registered file slots) a floor serves; fds fit 16 bits. */
#define MAX_FD 65536
#define BGID 0
#define NO_BID 0xffff

enum { K_ACCEPT = 1, K_RECV = 2, K_SEND = 3 };
/* user_data: bytes sent (sends) << 40 | kind << 32 | provided buffer << 16 | fd */
#define UD(k, fd, bid, len)                                                                      \
	(((uint64_t)(len) << 40) | ((uint64_t)(k) << 32) | ((uint64_t)(bid) << 16) |           \
	 (uint16_t)(fd))
#define UD_KIND(ud) ((int)(((ud) >> 32) & 0xff))
#define UD_FD(ud) ((int)(uint16_t)(ud))
#define UD_BID(ud) ((int)(((ud) >> 16) & 0xffff))
#define UD_LEN(ud) ((long)((ud) >> 40))

static const char *floor_prog;

/* A listening TCP socket on IPv4 "IP:PORT" (exits on error). */
static int listen_on(const char *spec)
{
	char host[64];
	const char *colon = strrchr(spec, ':');
	if (!colon || (size_t)(colon - spec) >= sizeof host) {
		fprintf(stderr, "%s: address must be IP:PORT, got %s\n", floor_prog, spec);
		exit(2);
	}
	memcpy(host, spec, colon - spec);
	host[colon - spec] = 0;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(colon + 1)) };
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
		fprintf(stderr, "%s: bad IPv4 address %s\n", floor_prog, host);
		exit(2);
	}
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 4096)) {
		fprintf(stderr, "%s: listen on %s: %s\n", floor_prog, spec, strerror(errno));
		exit(1);
	}
	return fd;
}

static void nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ---- io_uring ------------------------------------------------------- */

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static unsigned char *bufs;
static size_t buf_size;
static int ring_mask;
static unsigned returned; /* buffers given back since the last publish */
static int max_fd = MAX_FD;

static struct io_uring_sqe *sqe(void)
{
	struct io_uring_sqe *s = io_uring_get_sqe(&ring);
	if (!s) {
		io_uring_submit(&ring);
		s = io_uring_get_sqe(&ring);
	}
	return s;
}

/* Provided buffer `bid` back into the ring (visible at the next publish). */
static void give_back(int bid)
{
	io_uring_buf_ring_add(br, bufs + (size_t)bid * buf_size, buf_size, bid, ring_mask,
			      returned++);
}

static void publish(void)
{
	if (returned) {
		io_uring_buf_ring_advance(br, returned);
		returned = 0;
	}
}

/* The ring, the registered file table (as many slots as descriptors, as
 * Myriad sizes its own) and `n` provided buffers of `size` bytes; 0, or 1
 * after printing why not. */
static int uring_setup(unsigned n, size_t size)
{
	struct io_uring_params p = { 0 };
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_COOP_TASKRUN | IORING_SETUP_CQSIZE;
	p.cq_entries = 16384;
	int e = io_uring_queue_init_params(4096, &ring, &p);
	if (e < 0) {
		fprintf(stderr, "%s: io_uring_queue_init: %s\n", floor_prog, strerror(-e));
		return 1;
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)max_fd)
		max_fd = (int)rl.rlim_cur;
	if ((e = io_uring_register_files_sparse(&ring, max_fd)) < 0) {
		fprintf(stderr, "%s: register_files_sparse: %s\n", floor_prog, strerror(-e));
		return 1;
	}
	buf_size = size;
	br = mmap(NULL, n * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
		  MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	bufs = malloc((size_t)n * size);
	if (br == MAP_FAILED || !bufs) {
		fprintf(stderr, "%s: buffers: %s\n", floor_prog, strerror(errno));
		return 1;
	}
	io_uring_buf_ring_init(br);
	struct io_uring_buf_reg reg = { .ring_addr = (uint64_t)(uintptr_t)br,
					.ring_entries = n,
					.bgid = BGID };
	if ((e = io_uring_register_buf_ring(&ring, &reg, 0)) < 0) {
		fprintf(stderr, "%s: register_buf_ring: %s\n", floor_prog, strerror(-e));
		return 1;
	}
	ring_mask = io_uring_buf_ring_mask(n);
	for (unsigned i = 0; i < n; i++)
		give_back(i);
	publish();
	return 0;
}

/* Submits what is queued and waits for one completion; 0, or 1 after
 * printing why not. */
static int uring_turn(void)
{
	int e = io_uring_submit_and_wait(&ring, 1);
	if (e < 0 && e != -EINTR && e != -ETIME) {
		fprintf(stderr, "%s: io_uring_enter: %s\n", floor_prog, strerror(-e));
		return 1;
	}
	return 0;
}

static void arm_accept(int lfd)
{
	struct io_uring_sqe *s = sqe();
	io_uring_prep_multishot_accept(s, lfd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(s, UD(K_ACCEPT, 0, 0, 0));
}

static void arm_recv(int fd)
{
	struct io_uring_sqe *s = sqe();
	io_uring_prep_recv_multishot(s, fd, NULL, 0, 0);
	s->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
	s->buf_group = BGID;
	io_uring_sqe_set_data64(s, UD(K_RECV, fd, 0, 0));
}

/* A send of p[0..len) on registered `fd`; `bid` (or NO_BID) travels in the
 * completion with the length, to check for a short send. */
static void send_on(int fd, const void *p, size_t len, int bid)
{
	struct io_uring_sqe *s = sqe();
	io_uring_prep_send(s, fd, p, len, MSG_NOSIGNAL);
	s->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(s, UD(K_SEND, fd, bid, len));
}

/* What a floor does with its connections' events. */
struct floor_ops {
	/* A new connection (fd < MAX_FD); 0 refuses it (closed). */
	int (*accepted)(int fd);
	/* epoll: `fd` is readable; 0 ends the connection (closed). */
	int (*readable)(int fd);
	/* io_uring: n bytes arrived in provided buffer `bid`, which the floor
	 * gives back (give_back) when it is done with it; 0 ends the
	 * connection (shut down; its receive then ends and closes it). */
	int (*received)(int fd, int bid, size_t n);
	/* io_uring: a send_on completed with `res` of `want` bytes. */
	void (*sent)(int fd, int bid, long want, int res);
	/* The connection is closed (io_uring: sends in flight may still
	 * complete after this). */
	void (*closed)(int fd);
};

/* Level-triggered epoll: accept, then ops->readable per readiness. */
static int epoll_run(int lfd, const struct floor_ops *ops)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd };
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	static struct epoll_event events[512];
	for (;;) {
		int n = epoll_wait(ep, events, 512, -1);
		if (n < 0 && errno != EINTR)
			return 1;
		for (int i = 0; i < n; i++) {
			int fd = events[i].data.fd;
			if (fd != lfd) {
				if (!ops->readable(fd)) {
					ops->closed(fd);
					close(fd); /* also leaves the epoll set */
				}
				continue;
			}
			int s = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
			if (s < 0)
				continue;
			if (s >= MAX_FD || !ops->accepted(s)) {
				close(s);
				continue;
			}
			nodelay(s);
			struct epoll_event ce = { .events = EPOLLIN, .data.fd = s };
			epoll_ctl(ep, EPOLL_CTL_ADD, s, &ce);
		}
	}
}

/* io_uring with n provided buffers of `size` bytes: completions to ops. */
static int uring_run(int lfd, unsigned n, size_t size, const struct floor_ops *ops)
{
	if (uring_setup(n, size))
		return 1;
	arm_accept(lfd);
	for (;;) {
		if (uring_turn())
			return 1;
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&ring, head, cqe)
		{
			seen++;
			uint64_t ud = io_uring_cqe_get_data64(cqe);
			int fd = UD_FD(ud), res = cqe->res;
			int more = cqe->flags & IORING_CQE_F_MORE;
			switch (UD_KIND(ud)) {
			case K_ACCEPT:
				if (res >= 0 && (res >= max_fd || !ops->accepted(res))) {
					close(res);
				} else if (res >= 0) {
					nodelay(res);
					io_uring_register_files_update(&ring, res, &res, 1);
					arm_recv(res);
				}
				if (!more)
					arm_accept(lfd);
				break;
			case K_RECV:
				if (res > 0) {
					int bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
					if (!ops->received(fd, bid, res))
						shutdown(fd, SHUT_RDWR);
					if (!more)
						arm_recv(fd);
				} else if (res == -ENOBUFS) {
					arm_recv(fd);
				} else if (!more) {
					/* Out of the table, then closed: sends in
					 * flight keep their own reference. */
					int none = -1;
					io_uring_register_files_update(&ring, fd, &none, 1);
					close(fd);
					ops->closed(fd);
				}
				break;
			case K_SEND:
				ops->sent(fd, UD_BID(ud), UD_LEN(ud), res);
				break;
			}
		}
		io_uring_cq_advance(&ring, seen);
		publish();
	}
}

/* `main`: `prog IP:PORT [--epoll]`, served with `ops` on io_uring (n
 * provided buffers of `size` bytes) or epoll. */
static int floor_main(int argc, char **argv, const char *prog, unsigned n, size_t size,
		      const struct floor_ops *ops)
{
	floor_prog = prog;
	if (argc < 2 || (argc > 2 && strcmp(argv[2], "--epoll"))) {
		fprintf(stderr, "usage: %s IP:PORT [--epoll]\n", prog);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	int lfd = listen_on(argv[1]);
	return argc > 2 ? epoll_run(lfd, ops) : uring_run(lfd, n, size, ops);
}

#endif
