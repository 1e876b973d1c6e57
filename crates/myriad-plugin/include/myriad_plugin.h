/*
 * myriad_plugin.h — the native plugin ABI of the Myriad application server.
 *
 * A plugin is a shared library exporting one function, `myriad_plugin_entry`,
 * which receives the host's function table and returns the plugin's. Both
 * tables begin with {abi_version, struct_size}: a side reads a field only if
 * the other side's struct_size covers it, so either can grow (a new minor
 * version appends fields) without breaking the other. A different major
 * version is refused by the host at load time.
 *
 * Rules (see the README, "Writing a plugin"):
 * - Every callback runs on the connection's event loop thread and must not
 *   block: no sleeping, no blocking I/O, no long computations. Hand blocking
 *   work to the service's business pool with host->spawn_blocking.
 * - A service's state (from init) is shared by all the service's loops:
 *   callbacks for different connections may run at the same time on
 *   different threads. A connection's state is only ever used by its loop.
 * - Byte and string arguments are valid only during the callback; copy what
 *   you keep. Strings are (pointer, length), UTF-8, not NUL-terminated.
 * - A myriad_ctx pointer is valid only during the callback it was given to.
 * - The library is never unloaded while the server runs.
 * - Required: on_data (stream) or on_message (message); the host
 *   accepts any table that reaches on_close (ABI 1.0's smallest); every
 *   other callback may be NULL. Fields past the plugin's struct_size are
 *   treated as NULL.
 * - write and send take all the bytes or none (the result says which).
 * - on_close is called once for every connection whose on_open ran (and
 *   for an accepted upgrade); it frees conn_state. A refused upgrade gets
 *   no on_close: on_upgrade frees what it made before refusing. A closed
 *   connection's topic subscriptions are dropped by the host.
 * - Strings shown to on_upgrade are as received (the query is not
 *   percent-decoded).
 *
 * This header is checked against the Rust definitions
 * (crates/myriad-plugin/src/abi.rs) by `cargo test -p myriad-plugin`.
 */
#ifndef MYRIAD_PLUGIN_H
#define MYRIAD_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MYRIAD_ABI_MAJOR 1u
#define MYRIAD_ABI_MINOR 0u
#define MYRIAD_ABI_VERSION ((MYRIAD_ABI_MAJOR << 16) | MYRIAD_ABI_MINOR)

/* The name of the one exported symbol. */
#define MYRIAD_PLUGIN_ENTRY_SYMBOL "myriad_plugin_entry"

/* Results of host calls (int32_t; int64_t for the address calls, where a
 * non-negative value is a length). */
#define MYRIAD_OK 0
#define MYRIAD_ERR_CLOSED (-1)      /* the connection is closing or closed */
#define MYRIAD_ERR_INVALID (-2)     /* a bad argument: close code, UTF-8, topic, ... */
#define MYRIAD_ERR_UNSUPPORTED (-3) /* not here: no connection, wrong stack, no pool */
#define MYRIAD_ERR_LIMIT (-4)       /* a bound was reached: timers, topics, counters, queue */
#define MYRIAD_ERR_BUFFER (-5)      /* the caller's buffer is too small */

/* What a plugin handles, chosen by the plugin (myriad_plugin.shape). */
#define MYRIAD_SHAPE_STREAM 1u  /* on_data(bytes) -> consumed (tcp, tls stacks) */
#define MYRIAD_SHAPE_MESSAGE 2u /* on_message(whole message) (ws, wss; tcp, tls with framing) */

/* Message kinds (on_message, send, publish). On tcp/tls stacks every message
 * is MYRIAD_BINARY. */
#define MYRIAD_TEXT 1u
#define MYRIAD_BINARY 2u

/* Why a connection closed (on_close). */
#define MYRIAD_CLOSE_LOCAL 0u    /* the plugin or the server closed it */
#define MYRIAD_CLOSE_PEER 1u     /* the peer closed it (a WebSocket close frame, or FIN) */
#define MYRIAD_CLOSE_ERROR 2u    /* a socket error (reset, ...) */
#define MYRIAD_CLOSE_TIMEOUT 3u  /* idle, handshake or close timeout */
#define MYRIAD_CLOSE_SHUTDOWN 4u /* the server shut down */
#define MYRIAD_CLOSE_PROTOCOL 5u /* bad input: a bad frame, a message over the limit */
#define MYRIAD_CLOSE_FAULT 6u    /* the plugin misbehaved (a panic, a bad return value) */

/* Kinds of host->fault. */
#define MYRIAD_FAULT_PANIC 1u /* a panic or exception caught at the plugin boundary */
#define MYRIAD_FAULT_ERROR 2u /* any other failure the plugin cannot handle */

/* Log levels (host->log). */
#define MYRIAD_LOG_ERROR 1u
#define MYRIAD_LOG_WARN 2u
#define MYRIAD_LOG_INFO 3u
#define MYRIAD_LOG_DEBUG 4u
#define MYRIAD_LOG_TRACE 5u

/* message_size answers "need more bytes" with this. */
#define MYRIAD_NEED_MORE 0

/* Marks the entry point exported even under -fvisibility=hidden. */
#if defined(__GNUC__) || defined(__clang__)
#define MYRIAD_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define MYRIAD_PLUGIN_EXPORT
#endif

/* The host's context of one callback (opaque). */
typedef struct myriad_ctx myriad_ctx;

typedef struct myriad_str {
    const char *ptr;
    size_t len;
} myriad_str;

typedef struct myriad_header {
    myriad_str name;
    myriad_str value;
} myriad_header;

/* A WebSocket upgrade request, shown to on_upgrade before the server answers. */
typedef struct myriad_upgrade {
    myriad_str path;  /* the target's path, e.g. "/chat" */
    myriad_str query; /* after the '?', empty if none */
    const myriad_header *headers;
    size_t header_count;
    const myriad_str *protocols; /* offered subprotocols, client's order */
    size_t protocol_count;
    myriad_str peer; /* "ip:port", empty if unknown */
} myriad_upgrade;

/* Blocking work for the business pool: runs on a pool thread. */
typedef void (*myriad_work_fn)(void *arg);

/* What the host offers. Every function takes the callback's ctx. */
typedef struct myriad_host {
    uint32_t abi_version;
    uint32_t struct_size;
    /* Raw bytes to the peer (stream plugins and custom framing; tcp/tls only). */
    int32_t (*write)(myriad_ctx *cx, const uint8_t *data, size_t len);
    /* One message: a WebSocket frame (ws stacks); with framing "lp32" a
     * 4-byte big-endian length first, with "line" a '\n' after; with the
     * plugin's own message_size or a stream plugin, the bytes as they are.
     * Copied once into the server's pooled buffers. */
    int32_t (*send)(myriad_ctx *cx, uint32_t kind, const uint8_t *data, size_t len);
    /* Close after what is queued is sent. code: a WebSocket close code on ws
     * stacks (0 = 1000), ignored elsewhere; reason <= 123 bytes. */
    int32_t (*close)(myriad_ctx *cx, uint16_t code, const char *reason, size_t reason_len);
    int32_t (*shutdown_write)(myriad_ctx *cx);
    int32_t (*pause_reading)(myriad_ctx *cx);
    int32_t (*resume_reading)(myriad_ctx *cx);
    /* on_timer(token) after `after_ms`; setting a token again replaces it.
     * At most 64 timers per connection. */
    int32_t (*set_timer)(myriad_ctx *cx, uint64_t after_ms, uint64_t token);
    int32_t (*cancel_timer)(myriad_ctx *cx, uint64_t token);
    /* The address as "ip:port" into buf; returns its length. */
    int64_t (*peer_addr)(myriad_ctx *cx, char *buf, size_t cap);
    int64_t (*local_addr)(myriad_ctx *cx, char *buf, size_t cap);
    /* A number naming the connection, unique while it is open. */
    uint64_t (*conn_id)(myriad_ctx *cx);
    /* Topics (ws stacks): a message published to a topic reaches every
     * subscribed connection of the service, on every loop, framed once. */
    int32_t (*subscribe)(myriad_ctx *cx, const char *topic, size_t topic_len);
    int32_t (*unsubscribe)(myriad_ctx *cx, const char *topic, size_t topic_len);
    int32_t (*publish)(myriad_ctx *cx, const char *topic, size_t topic_len, uint32_t kind,
                       const uint8_t *data, size_t len);
    /* Into the server's log, tagged with the service and plugin names. */
    void (*log)(myriad_ctx *cx, uint32_t level, const char *msg, size_t len);
    /* Adds n to myriad_plugin_events_total{service,plugin,name}. */
    int32_t (*counter_add)(myriad_ctx *cx, const char *name, size_t name_len, uint64_t n);
    /* Runs work(arg) on the service's business pool, then on_task(token, arg)
     * on this connection's loop (with conn_state NULL if it closed by then). */
    int32_t (*spawn_blocking)(myriad_ctx *cx, myriad_work_fn work, void *arg, uint64_t token);
    /* The plugin reports a failure it caught (a panic): the connection is
     * closed and the fault counted. */
    void (*fault)(myriad_ctx *cx, uint32_t kind, const char *msg, size_t len);
} myriad_host;

/* What the plugin offers. Optional callbacks may be NULL. */
typedef struct myriad_plugin {
    uint32_t abi_version;
    uint32_t struct_size;
    const char *name; /* NUL-terminated; for logs and metrics */
    uint32_t shape;   /* MYRIAD_SHAPE_STREAM or MYRIAD_SHAPE_MESSAGE */
    uint32_t reserved;
    /* Once per service (and per worker process) before it serves. config is
     * the service's [service.plugin_config] table as JSON. Return 0 and set
     * *service_state, or non-zero with a reason in err (NUL-terminated). */
    int32_t (*init)(myriad_ctx *cx, const char *service, size_t service_len, const char *config,
                    size_t config_len, void **service_state, char *err, size_t err_cap);
    /* Once, after the service's last connection. */
    void (*shutdown)(void *service_state);
    /* Optional, ws stacks: return 0 to accept (set *protocol to an index into
     * req->protocols or -1 for none, and *conn_state if you like), or an
     * HTTP status 400-599 to refuse. */
    int32_t (*on_upgrade)(myriad_ctx *cx, void *service_state, const myriad_upgrade *req,
                          int32_t *protocol, void **conn_state);
    /* The connection is open; *conn_state is what on_upgrade set, else NULL. */
    void (*on_open)(myriad_ctx *cx, void *service_state, void **conn_state);
    /* Stream plugins: bytes arrived; return how many were consumed (the rest
     * is shown again with more). data may be modified in place. */
    size_t (*on_data)(myriad_ctx *cx, void *service_state, void *conn_state, uint8_t *data,
                      size_t len);
    /* Optional, message plugins on tcp/tls: given the bytes buffered so far
     * (from the start of the next message), the whole message's length, or
     * MYRIAD_NEED_MORE, or < 0 for malformed input (the connection closes). */
    int64_t (*message_size)(void *service_state, const uint8_t *data, size_t len);
    /* Message plugins: one whole message. */
    void (*on_message)(myriad_ctx *cx, void *service_state, void *conn_state, uint32_t kind,
                       const uint8_t *data, size_t len);
    /* Optional: everything queued was sent. */
    void (*on_drain)(myriad_ctx *cx, void *service_state, void *conn_state);
    /* Optional: a timer fired. */
    void (*on_timer)(myriad_ctx *cx, void *service_state, void *conn_state, uint64_t token);
    /* The connection is gone: free conn_state. code is the WebSocket close
     * code on ws stacks, else 0. */
    void (*on_close)(myriad_ctx *cx, void *service_state, void *conn_state, uint32_t reason,
                     uint16_t code);
    /* Optional: blocking work finished (see host->spawn_blocking). */
    void (*on_task)(myriad_ctx *cx, void *service_state, void *conn_state, uint64_t token,
                    void *arg);
} myriad_plugin;

/* The entry point every plugin exports. Called once per load; the returned
 * table must live as long as the library. Return NULL to refuse (for
 * example, a host whose major version the plugin does not know). */
typedef const myriad_plugin *(*myriad_plugin_entry_fn)(const myriad_host *host);
const myriad_plugin *myriad_plugin_entry(const myriad_host *host);

#ifdef __cplusplus
}
#endif

#endif /* MYRIAD_PLUGIN_H */
