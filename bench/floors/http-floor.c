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
 *   cc -O3 -Wall -o target/http-baselines/release/http-floor bench/floors/http-floor.c -luring
 * (Debian: liburing-dev).
 *
 *   http-floor 127.0.0.1:19400 [--epoll]
 */
#include "floor.h"

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
#define BUFS 1024

static char *responses; /* MAX_PER_RECV copies of RESPONSE */
static unsigned char state[MAX_FD]; /* bytes of "\r\n\r\n" matched so far */

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

static int accepted(int fd)
{
	state[fd] = 0;
	return 1;
}

/* epoll: one read, then one write of a response per head it completed. */
static int readable(int fd)
{
	static unsigned char buf[BUF_SIZE];
	ssize_t r = read(fd, buf, sizeof buf);
	if (r < 0)
		return errno == EAGAIN || errno == EINTR;
	unsigned heads = r > 0 ? count_heads(fd, buf, r) : 0;
	size_t len = (size_t)heads * RESPONSE_LEN;
	return r > 0 && (!heads || write(fd, responses, len) == (ssize_t)len);
}

/* io_uring: the buffer goes straight back; one send for the heads. */
static int received(int fd, int bid, size_t n)
{
	unsigned heads = count_heads(fd, bufs + (size_t)bid * BUF_SIZE, n);
	give_back(bid);
	if (heads)
		send_on(fd, responses, (size_t)heads * RESPONSE_LEN, NO_BID);
	return 1;
}

/* A short or failed send ends the connection. */
static void sent(int fd, int bid, long want, int res)
{
	(void)bid;
	if (res != want)
		shutdown(fd, SHUT_RDWR);
}

static void closed(int fd)
{
	(void)fd;
}

int main(int argc, char **argv)
{
	static const struct floor_ops ops = { accepted, readable, received, sent, closed };
	responses = malloc((size_t)MAX_PER_RECV * RESPONSE_LEN);
	if (!responses)
		return 1;
	for (int i = 0; i < MAX_PER_RECV; i++)
		memcpy(responses + (size_t)i * RESPONSE_LEN, RESPONSE, RESPONSE_LEN);
	return floor_main(argc, argv, "http-floor", BUFS, BUF_SIZE, &ops);
}
