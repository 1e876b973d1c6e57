/*
 * echo-c — a stream plugin that sends every byte back.
 *
 * The C twin of the built-in `echo` handler, and benchmarked against it: the
 * hot path (on_data) is one host call and nothing else — no per-connection
 * state, no counters. Everything that can be checked once is checked in
 * init.
 *
 *   cc -O2 -fPIC -shared -Wall -Wextra -Werror -I crates/myriad-plugin/include \
 *      -o target/plugins/libecho_c.so examples/plugins/echo-c/echo.c
 */
#include "../common/myriad_util.h"

/* Set once by myriad_plugin_entry, before any other callback. */
static const myriad_host *host;

static int32_t echo_init(myriad_ctx *cx, const char *service, size_t service_len,
                         const char *config, size_t config_len, void **service_state, char *err,
                         size_t err_cap)
{
    (void)cx;
    (void)service;
    (void)service_len;
    (void)config;
    (void)config_len;
    if (!MYRIAD_HOST_HAS(host, write)) {
        mp_set_err(err, err_cap, "the host has no write function");
        return 1;
    }
    *service_state = NULL;
    return 0;
}

static void echo_shutdown(void *service_state)
{
    (void)service_state;
}

static void echo_open(myriad_ctx *cx, void *service_state, void **conn_state)
{
    (void)cx;
    (void)service_state;
    (void)conn_state;
}

static size_t echo_data(myriad_ctx *cx, void *service_state, void *conn_state, uint8_t *data,
                        size_t len)
{
    (void)service_state;
    (void)conn_state;
    /* A failure means the connection is closing: nothing left to do. */
    host->write(cx, data, len);
    return len;
}

static void echo_close(myriad_ctx *cx, void *service_state, void *conn_state, uint32_t reason,
                       uint16_t code)
{
    (void)cx;
    (void)service_state;
    (void)conn_state;
    (void)reason;
    (void)code;
}

static const myriad_plugin plugin = {
    .abi_version = MYRIAD_ABI_VERSION,
    .struct_size = sizeof(myriad_plugin),
    .name = "echo-c",
    .shape = MYRIAD_SHAPE_STREAM,
    .init = echo_init,
    .shutdown = echo_shutdown,
    .on_open = echo_open,
    .on_data = echo_data,
    .on_close = echo_close,
};

MYRIAD_EXPORT const myriad_plugin *myriad_plugin_entry(const myriad_host *h)
{
    if (!mp_host_compatible(h))
        return NULL;
    host = h;
    return &plugin;
}
