/*
 * crash-c — an echo plugin that misbehaves on request, for the fault tests.
 *
 * - Bytes starting with "CRASH": dereferences a NULL pointer (SIGSEGV). The
 *   host cannot survive that: the worker process dies and its supervisor
 *   starts another.
 * - Bytes starting with "BADLEN": on_data returns len + 1, more than it was
 *   given. The host must treat that as a fault: close this connection
 *   (reason MYRIAD_CLOSE_FAULT) and serve on.
 * - Anything else is echoed.
 * - plugin_config with "fail_init": true makes init fail with
 *   "init refused by config".
 *
 * The prefixes are looked for at the start of the bytes on_data is given;
 * a prefix split across two reads is not recognised (the tests send each
 * command in one write on a fresh connection).
 */
#include "../common/myriad_util.h"

static const myriad_host *host;

static int32_t crash_init(myriad_ctx *cx, const char *service, size_t service_len,
                          const char *config, size_t config_len, void **service_state, char *err,
                          size_t err_cap)
{
    (void)cx;
    (void)service;
    (void)service_len;
    if (mp_json_bool(config, config_len, "fail_init") == 1) {
        mp_set_err(err, err_cap, "init refused by config");
        return 1;
    }
    if (!MYRIAD_HOST_HAS(host, write)) {
        mp_set_err(err, err_cap, "the host has no write function");
        return 1;
    }
    *service_state = NULL;
    return 0;
}

static void crash_shutdown(void *service_state)
{
    (void)service_state;
}

static void crash_open(myriad_ctx *cx, void *service_state, void **conn_state)
{
    (void)cx;
    (void)service_state;
    (void)conn_state;
}

static int starts_with(const uint8_t *data, size_t len, const char *prefix, size_t plen)
{
    return len >= plen && memcmp(data, prefix, plen) == 0;
}

static size_t crash_data(myriad_ctx *cx, void *service_state, void *conn_state, uint8_t *data,
                         size_t len)
{
    (void)service_state;
    (void)conn_state;
    if (starts_with(data, len, "CRASH", 5)) {
        /* A volatile pointer, so the compiler cannot see the NULL and turn
         * the store into a trap instruction (SIGILL), to a volatile int, so
         * it cannot drop the store either: this is a real SIGSEGV. */
        volatile int *volatile nowhere = NULL;
        *nowhere = 1;
    }
    if (starts_with(data, len, "BADLEN", 6))
        return len + 1;
    host->write(cx, data, len);
    return len;
}

static void crash_close(myriad_ctx *cx, void *service_state, void *conn_state, uint32_t reason,
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
    .name = "crash-c",
    .shape = MYRIAD_SHAPE_STREAM,
    .init = crash_init,
    .shutdown = crash_shutdown,
    .on_open = crash_open,
    .on_data = crash_data,
    .on_close = crash_close,
};

MYRIAD_EXPORT const myriad_plugin *myriad_plugin_entry(const myriad_host *h)
{
    if (!mp_host_compatible(h))
        return NULL;
    host = h;
    return &plugin;
}
