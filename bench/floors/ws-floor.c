/*
 * ws-floor: the least work a WebSocket echo server can do per message, for
 * `bench-ws`'s `floor` and `floor-epoll` servers.
 *
 * It answers the opening handshake (Sec-WebSocket-Key → Accept, nothing
 * else checked) and echoes every data frame: unmask in place, write the
 * server header over the last bytes of the client's header, send the frame
 * from where it was received. A close frame ends the connection. No UTF-8
 * check, no fragments, no control frames but close, no limits: not a
 * server anyone should run. It measures what the kernel and the I/O
 * interface cost per echo, so that a ratio target against a library can be
 * checked against what any server making the same system calls reaches.
 *
 * Two modes, one thread each:
 *   default  io_uring the way Myriad's backend drives it for large
 *            messages: SINGLE_ISSUER + DEFER_TASKRUN + COOP_TASKRUN, a
 *            multishot accept, sockets in the registered file table, one
 *            multishot receive per connection into a ring of 32 KiB
 *            provided buffers, each echo sent from the provided buffer it
 *            arrived in (the buffer goes back to the ring when its sends
 *            complete), one io_uring_enter per loop turn for all of them.
 *   --epoll  level-triggered epoll, one read(2) into the connection's own
 *            buffer, then for each whole frame unmask and write(2) from the
 *            same bytes: the pattern of fastwebsockets' echo.
 *
 * A frame cut by the end of a receive is gathered in the connection's own
 * buffer (a copy) and echoed from there; with ping-pong loads the client
 * sends nothing more until that echo is back. A short or failed send
 * closes the connection. A descriptor reused while the previous
 * connection's last send out of its own buffer is still in flight is not
 * told apart from it (the benchmarks open their connections once). Built by `bench-ws` with
 *   cc -O3 -Wall -o target/ws-baselines/release/ws-floor bench/floors/ws-floor.c -luring -lcrypto
 * (Debian: liburing-dev, libssl-dev).
 *
 *   ws-floor 127.0.0.1:19300 [--epoll]
 */
#include "floor.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#define BUFS 512
#define BUF_SIZE (32 * 1024)
/* A connection's own buffer: handshakes and frames cut by a receive. */
#define CONN_BUF (128 * 1024)

struct conn {
	unsigned char *buf; /* CONN_BUF bytes, allocated at accept */
	size_t have;	    /* bytes in buf */
	int upgraded;
	int sends_from_buf; /* sends in flight out of buf */
	char answer[160];   /* the 101 response */
};

static struct conn *conns[MAX_FD];

/* Unmasks `n` bytes at `p` with `key`, eight bytes at a time. */
static void unmask(unsigned char *p, size_t n, const unsigned char key[4])
{
	uint64_t k8;
	unsigned char kk[8] = { key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3] };
	memcpy(&k8, kk, 8);
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		w ^= k8;
		memcpy(p + i, &w, 8);
	}
	for (; i < n; i++)
		p[i] ^= key[i & 3];
}

/* The 101 answer for the request head in `head`; its length, 0 if the
 * head has no key. */
static size_t answer(const unsigned char *head, size_t n, char *out, size_t cap)
{
	static const char NAME[] = "Sec-WebSocket-Key:";
	const char *h = memmem(head, n, NAME, sizeof NAME - 1);
	if (!h)
		return 0;
	h += sizeof NAME - 1;
	while (*h == ' ')
		h++;
	const char *end = memmem(h, (const char *)head + n - h, "\r\n", 2);
	if (!end || end - h > 64)
		return 0;
	unsigned char cat[100], sha[SHA_DIGEST_LENGTH], b64[40];
	memcpy(cat, h, end - h);
	memcpy(cat + (end - h), "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
	SHA1(cat, (end - h) + 36, sha);
	EVP_EncodeBlock(b64, sha, SHA_DIGEST_LENGTH);
	int len = snprintf(out, cap,
			   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
			   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			   b64);
	return len > 0 && (size_t)len < cap ? (size_t)len : 0;
}

/* One parsed client frame at p[0..): header length, payload length, the
 * opcode; 0 if the frame is not whole in `n` bytes. -1: not a client
 * frame the floor serves. */
static int frame(const unsigned char *p, size_t n, size_t *hlen, size_t *plen, int *op)
{
	if (n < 2)
		return 0;
	if (!(p[1] & 0x80))
		return -1; /* unmasked */
	size_t len = p[1] & 0x7f, h = 2;
	if (len == 126) {
		if (n < 4)
			return 0;
		len = (size_t)p[2] << 8 | p[3];
		h = 4;
	} else if (len == 127) {
		if (n < 10)
			return 0;
		len = 0;
		for (int i = 0; i < 8; i++)
			len = len << 8 | p[2 + i];
		h = 10;
		if (len > CONN_BUF)
			return -1;
	}
	h += 4;
	if (n < h + len)
		return 0;
	*hlen = h;
	*plen = len;
	*op = p[0] & 0x0f;
	return 1;
}

/* Turns the whole client frame at p (header hlen, payload plen) into the
 * server frame ending at the same place; returns where it starts. */
static unsigned char *echo_in_place(unsigned char *p, size_t hlen, size_t plen)
{
	unsigned char *payload = p + hlen;
	unmask(payload, plen, payload - 4);
	size_t sh = plen < 126 ? 2 : plen < 65536 ? 4 : 10;
	unsigned char *s = payload - sh;
	unsigned char op = p[0];
	s[0] = op;
	if (sh == 2) {
		s[1] = (unsigned char)plen;
	} else if (sh == 4) {
		s[1] = 126;
		s[2] = (unsigned char)(plen >> 8);
		s[3] = (unsigned char)plen;
	} else {
		s[1] = 127;
		for (int i = 0; i < 8; i++)
			s[2 + i] = (unsigned char)(plen >> (56 - 8 * i));
	}
	return s;
}

static struct conn *new_conn(int fd)
{
	struct conn *c = calloc(1, sizeof *c);
	if (c)
		c->buf = malloc(CONN_BUF);
	if (!c || !c->buf) {
		free(c);
		return NULL;
	}
	conns[fd] = c;
	return c;
}

static void free_conn(int fd)
{
	struct conn *c = conns[fd];
	if (c) {
		free(c->buf);
		free(c);
		conns[fd] = NULL;
	}
}

/* Answers buf[0..n) of connection `fd` from its start: the handshake
 * (until c->upgraded), then each whole frame echoed in place, every answer
 * handed to `out` with `bid` (false: it failed). Returns the bytes used (a
 * cut frame or head is left), or -1 to end the connection: bad input, a
 * close frame, a failed answer. Both modes serve through it. */
static long serve(int fd, struct conn *c, unsigned char *buf, size_t n, int bid,
		  int (*out)(int fd, const void *p, size_t len, int bid))
{
	size_t at = 0;
	while (at < n) {
		unsigned char *p = buf + at;
		size_t left = n - at;
		if (!c->upgraded) {
			unsigned char *e = memmem(p, left, "\r\n\r\n", 4);
			if (!e)
				return left < 8192 ? (long)at : -1;
			size_t hl = e + 4 - p;
			size_t al = answer(p, hl, c->answer, sizeof c->answer);
			if (!al || !out(fd, c->answer, al, NO_BID))
				return -1;
			c->upgraded = 1;
			at += hl;
			continue;
		}
		size_t hlen, plen;
		int op, f = frame(p, left, &hlen, &plen, &op);
		if (f < 0)
			return -1;
		if (f == 0)
			break;
		unsigned char *s = echo_in_place(p, hlen, plen);
		if (!out(fd, s, p + hlen + plen - s, bid) || op == 8)
			return -1;
		at += hlen + plen;
	}
	return (long)at;
}

/* ---- epoll ---------------------------------------------------------- */

static int accepted(int fd)
{
	return new_conn(fd) != NULL;
}

static int write_all(int fd, const void *p, size_t len, int bid)
{
	(void)bid;
	return write(fd, p, len) == (ssize_t)len;
}

/* One read into the connection's buffer; each whole frame unmasked and
 * written back from the same bytes; the rest moved to the front. */
static int readable(int fd)
{
	struct conn *c = conns[fd];
	ssize_t r = read(fd, c->buf + c->have, CONN_BUF - c->have);
	if (r <= 0)
		return r < 0 && (errno == EAGAIN || errno == EINTR);
	c->have += r;
	long at = serve(fd, c, c->buf, c->have, NO_BID, write_all);
	/* A full buffer that still holds no whole frame is not served. */
	if (at < 0 || ((size_t)at < c->have && c->have == CONN_BUF))
		return 0;
	memmove(c->buf, c->buf + at, c->have - at);
	c->have -= at;
	return 1;
}

/* ---- io_uring ------------------------------------------------------- */

static int refs[BUFS]; /* sends in flight out of each provided buffer */

/* A send out of provided buffer `bid`, or of the connection's own buffer
 * (NO_BID), counted until it completes. */
static int send_from(int fd, const void *p, size_t len, int bid)
{
	send_on(fd, p, len, bid);
	if (bid != NO_BID)
		refs[bid]++;
	else
		conns[fd]->sends_from_buf++;
	return 1;
}

/* A receive of n bytes in provided buffer bid; false to close. */
static int on_recv(int fd, int bid, size_t n)
{
	struct conn *c = conns[fd];
	unsigned char *b = bufs + (size_t)bid * BUF_SIZE;
	long at = 0;
	int ok = 1;
	if (c->upgraded && c->have == 0) {
		/* Whole frames straight from the provided buffer. */
		at = serve(fd, c, b, n, bid, send_from);
		ok = at >= 0;
	}
	if (ok && (size_t)at < n) {
		/* The rest (a cut frame, or the handshake) is gathered; not
		 * over bytes that a send still reads (see the top). */
		if (c->have + (n - at) > CONN_BUF || (c->have == 0 && c->sends_from_buf)) {
			ok = 0;
		} else {
			memcpy(c->buf + c->have, b + at, n - at);
			c->have += n - at;
			/* All of it answered: the sends still read the bytes,
			 * so only new data moves in. A cut frame behind echoes
			 * in flight (every byte used was answered from this
			 * buffer) is not served. */
			long used = serve(fd, c, c->buf, c->have, NO_BID, send_from);
			if (used == (long)c->have)
				c->have = 0;
			else
				ok = used == 0;
		}
	}
	if (refs[bid] == 0)
		give_back(bid);
	return ok;
}

/* The connection is closed: its state goes now, or with its last send
 * out of its buffer. */
static void closed(int fd)
{
	struct conn *c = conns[fd];
	if (c && c->sends_from_buf == 0)
		free_conn(fd);
	else if (c)
		c->upgraded = -1; /* freed by its last send */
}

/* A send done: its provided buffer back when no other send reads it; a
 * short or failed send ends the connection. */
static void sent(int fd, int bid, long want, int res)
{
	struct conn *c = conns[fd];
	if (bid != NO_BID) {
		if (--refs[bid] == 0)
			give_back(bid);
	} else if (c && --c->sends_from_buf == 0 && c->upgraded < 0) {
		free_conn(fd);
		return;
	}
	if (res != want && c && c->upgraded >= 0)
		shutdown(fd, SHUT_RDWR);
}

int main(int argc, char **argv)
{
	static const struct floor_ops ops = { accepted, readable, on_recv, sent, closed };
	return floor_main(argc, argv, "ws-floor", BUFS, BUF_SIZE, &ops);
}
