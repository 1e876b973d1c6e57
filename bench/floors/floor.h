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

/* `main`'s common part: usage, SIGPIPE, the listener; returns it and
 * whether --epoll was given. */
static int floor_start(int argc, char **argv, const char *prog, int *epoll)
{
	floor_prog = prog;
	if (argc < 2 || (argc > 2 && strcmp(argv[2], "--epoll"))) {
		fprintf(stderr, "usage: %s IP:PORT [--epoll]\n", prog);
		exit(2);
	}
	signal(SIGPIPE, SIG_IGN);
	*epoll = argc > 2;
	return listen_on(argv[1]);
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

/* An accepted socket: refused beyond the table, else nodelay, registered
 * under its own number, and its receive armed; whether it was taken. */
static int take_accepted(int fd)
{
	if (fd >= max_fd) {
		close(fd);
		return 0;
	}
	nodelay(fd);
	io_uring_register_files_update(&ring, fd, &fd, 1);
	arm_recv(fd);
	return 1;
}

/* A connection's end: out of the table, then closed (sends in flight keep
 * their own reference to the socket). */
static void drop_fd(int fd)
{
	int none = -1;
	io_uring_register_files_update(&ring, fd, &none, 1);
	close(fd);
}

#endif
