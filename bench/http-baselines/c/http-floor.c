/*
 * http-floor: the least work an HTTP/1.1 server can do per keep-alive
 * request, for `bench-http`'s `floor` and `floor-epoll` servers.
 *
 * It answers every request head (every "\r\n\r\n" seen on a connection)
 * with one fixed response of the same bytes as hyper's hello
 * ("HTTP/1.1 200 OK", content-type, content-length 13, a date, the body):
 * no parsing, no routing, no clock, no body handling, no limits. It is not
 * a server anyone should run; it measures what the kernel and the I/O
 * interface cost per request, so that a ratio target against hyper can be
 * checked against what any server doing the same system calls could reach.
 *
 * Two modes, one thread each:
 *   default  io_uring the way Myriad's backend drives it: SINGLE_ISSUER +
 *            DEFER_TASKRUN + COOP_TASKRUN, a multishot accept, the
 *            accepted sockets in the registered file table, one multishot
 *            receive per connection into a provided-buffer ring, one send
 *            per receive (all its responses) from a static buffer, one
 *            io_uring_enter per loop turn for all of them.
 *   --epoll  level-triggered epoll, one read(2) and one write(2) per
 *            readable connection: the system calls an epoll server cannot
 *            do without (hyper on tokio does these plus a read that
 *            returns EAGAIN).
 *
 * A receive of N request heads is answered with N responses in one send
 * (write); a short or failed send closes the connection (the floor keeps no
 * output queue: under the benchmark's loads a loopback socket always takes
 * a few hundred bytes). Built by `bench-http` with
 *   cc -O3 -Wall -o target/http-baselines/release/http-floor bench/http-baselines/c/http-floor.c -luring
 * (Debian: liburing-dev).
 *
 *   http-floor 127.0.0.1:19400 [--epoll]
 */
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

static const char RESPONSE[] = "HTTP/1.1 200 OK\r\n"
			       "content-type: text/plain\r\n"
			       "content-length: 13\r\n"
			       "date: Mon, 07 Dec 2026 07:00:00 GMT\r\n"
			       "\r\n"
			       "Hello, World!";
#define RESPONSE_LEN (sizeof(RESPONSE) - 1)
/* A 4 KiB receive holds at most 1,024 "\r\n\r\n". */
#define BUF_SIZE 4096
#define MAX_PER_RECV (BUF_SIZE / 4)
/* File descriptors (= registered file slots) the floor serves. */
#define MAX_FD 65536
#define BUFS 1024
#define BGID 0

enum { K_ACCEPT = 1, K_RECV = 2, K_SEND = 3 };
/* user_data: responses sent (sends only) << 40 | kind << 32 | fd */
#define UD(k, fd, n) (((uint64_t)(n) << 40) | ((uint64_t)(k) << 32) | (uint32_t)(fd))

static char *responses; /* MAX_PER_RECV copies of RESPONSE */
static unsigned char state[MAX_FD]; /* bytes of "\r\n\r\n" matched so far */
static int max_fd = MAX_FD;

/* Request heads completed in `p[0..n)` on connection `fd`. */
static unsigned count_heads(int fd, const unsigned char *p, size_t n)
{
	unsigned heads = 0, s = state[fd];
	for (size_t i = 0; i < n; i++) {
		unsigned char c = p[i];
		if (c == ((s & 1) ? '\n' : '\r'))
			s++;
		else
			s = (c == '\r') ? 1 : 0;
		if (s == 4) {
			heads++;
			s = 0;
		}
	}
	state[fd] = (unsigned char)s;
	return heads;
}

static int listen_on(const char *spec)
{
	char host[64];
	const char *colon = strrchr(spec, ':');
	if (!colon || (size_t)(colon - spec) >= sizeof host) {
		fprintf(stderr, "http-floor: address must be IP:PORT, got %s\n", spec);
		exit(2);
	}
	memcpy(host, spec, colon - spec);
	host[colon - spec] = 0;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(colon + 1)) };
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
		fprintf(stderr, "http-floor: bad IPv4 address %s\n", host);
		exit(2);
	}
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 4096)) {
		perror("http-floor: listen");
		exit(1);
	}
	return fd;
}

static void nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int run_epoll(int lfd)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd };
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	static struct epoll_event events[512];
	static unsigned char buf[BUF_SIZE];
	for (;;) {
		int n = epoll_wait(ep, events, 512, -1);
		if (n < 0 && errno != EINTR)
			return 1;
		for (int i = 0; i < n; i++) {
			int fd = events[i].data.fd;
			if (fd == lfd) {
				int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
				if (c < 0)
					continue;
				if (c >= MAX_FD) {
					close(c);
					continue;
				}
				nodelay(c);
				state[c] = 0;
				struct epoll_event ce = { .events = EPOLLIN, .data.fd = c };
				epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
				continue;
			}
			ssize_t r = read(fd, buf, sizeof buf);
			if (r < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			unsigned heads = r > 0 ? count_heads(fd, buf, r) : 0;
			size_t len = (size_t)heads * RESPONSE_LEN;
			if (r <= 0 || (heads && write(fd, responses, len) != (ssize_t)len))
				close(fd); /* also leaves the epoll set */
		}
	}
}

static struct io_uring ring;
static struct io_uring_buf_ring *br;
static unsigned char *bufs;

static struct io_uring_sqe *sqe(void)
{
	struct io_uring_sqe *s = io_uring_get_sqe(&ring);
	if (!s) {
		io_uring_submit(&ring);
		s = io_uring_get_sqe(&ring);
	}
	return s;
}

static void arm_accept(int lfd)
{
	struct io_uring_sqe *s = sqe();
	io_uring_prep_multishot_accept(s, lfd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(s, UD(K_ACCEPT, lfd, 0));
}

static void arm_recv(int fd)
{
	struct io_uring_sqe *s = sqe();
	io_uring_prep_recv_multishot(s, fd, NULL, 0, 0);
	s->flags |= IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT;
	s->buf_group = BGID;
	io_uring_sqe_set_data64(s, UD(K_RECV, fd, 0));
}

static void drop_conn(int fd)
{
	int none = -1;
	io_uring_register_files_update(&ring, fd, &none, 1);
	close(fd);
}

static int run_uring(int lfd)
{
	struct io_uring_params p = { 0 };
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_COOP_TASKRUN | IORING_SETUP_CQSIZE;
	p.cq_entries = 16384;
	int e = io_uring_queue_init_params(4096, &ring, &p);
	if (e < 0) {
		fprintf(stderr, "http-floor: io_uring_queue_init: %s\n", strerror(-e));
		return 1;
	}
	/* As many registered slots as descriptors (Myriad sizes its table
	 * the same way); a descriptor beyond them is refused at accept. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)max_fd)
		max_fd = (int)rl.rlim_cur;
	if ((e = io_uring_register_files_sparse(&ring, max_fd)) < 0) {
		fprintf(stderr, "http-floor: register_files_sparse: %s\n", strerror(-e));
		return 1;
	}
	size_t ring_bytes = BUFS * sizeof(struct io_uring_buf);
	br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	bufs = malloc((size_t)BUFS * BUF_SIZE);
	if (br == MAP_FAILED || !bufs) {
		perror("http-floor: buffers");
		return 1;
	}
	io_uring_buf_ring_init(br);
	struct io_uring_buf_reg reg = { .ring_addr = (uint64_t)(uintptr_t)br,
					.ring_entries = BUFS,
					.bgid = BGID };
	if ((e = io_uring_register_buf_ring(&ring, &reg, 0)) < 0) {
		fprintf(stderr, "http-floor: register_buf_ring: %s\n", strerror(-e));
		return 1;
	}
	int mask = io_uring_buf_ring_mask(BUFS);
	for (int i = 0; i < BUFS; i++)
		io_uring_buf_ring_add(br, bufs + (size_t)i * BUF_SIZE, BUF_SIZE, i, mask, i);
	io_uring_buf_ring_advance(br, BUFS);

	arm_accept(lfd);
	for (;;) {
		e = io_uring_submit_and_wait(&ring, 1);
		if (e < 0 && e != -EINTR && e != -ETIME) {
			fprintf(stderr, "http-floor: io_uring_enter: %s\n", strerror(-e));
			return 1;
		}
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0, returned = 0;
		io_uring_for_each_cqe(&ring, head, cqe)
		{
			seen++;
			uint64_t ud = io_uring_cqe_get_data64(cqe);
			int kind = (int)((ud >> 32) & 0xff), fd = (int)(uint32_t)ud, res = cqe->res;
			long sent = (long)(ud >> 40) * (long)RESPONSE_LEN;
			int more = cqe->flags & IORING_CQE_F_MORE;
			switch (kind) {
			case K_ACCEPT:
				if (res >= 0) {
					if (res >= max_fd) {
						close(res);
					} else {
						nodelay(res);
						state[res] = 0;
						io_uring_register_files_update(&ring, res, &res, 1);
						arm_recv(res);
					}
				}
				if (!more)
					arm_accept(lfd);
				break;
			case K_RECV:
				if (res > 0) {
					int bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
					unsigned char *b = bufs + (size_t)bid * BUF_SIZE;
					unsigned heads = count_heads(fd, b, res);
					io_uring_buf_ring_add(br, b, BUF_SIZE, bid, mask, returned++);
					if (heads) {
						struct io_uring_sqe *s = sqe();
						io_uring_prep_send(s, fd, responses,
								   (size_t)heads * RESPONSE_LEN, 0);
						s->flags |= IOSQE_FIXED_FILE;
						io_uring_sqe_set_data64(s, UD(K_SEND, fd, heads));
					}
					if (!more)
						arm_recv(fd);
				} else if (res == -ENOBUFS) {
					arm_recv(fd);
				} else if (!more) {
					drop_conn(fd);
				}
				break;
			case K_SEND:
				/* A short or failed send: end the connection (its
				 * receive then completes and closes it). */
				if (res != sent)
					shutdown(fd, SHUT_RDWR);
				break;
			}
		}
		io_uring_cq_advance(&ring, seen);
		if (returned)
			io_uring_buf_ring_advance(br, returned);
	}
}

int main(int argc, char **argv)
{
	if (argc < 2 || (argc > 2 && strcmp(argv[2], "--epoll"))) {
		fprintf(stderr, "usage: http-floor IP:PORT [--epoll]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	responses = malloc((size_t)MAX_PER_RECV * RESPONSE_LEN);
	if (!responses)
		return 1;
	for (int i = 0; i < MAX_PER_RECV; i++)
		memcpy(responses + (size_t)i * RESPONSE_LEN, RESPONSE, RESPONSE_LEN);
	int lfd = listen_on(argv[1]);
	return argc > 2 ? run_epoll(lfd) : run_uring(lfd);
}
