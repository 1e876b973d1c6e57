/*
 * abi-old-c — an echo plugin built as if against an older minor version of
 * the ABI, whose myriad_plugin ended after on_close (before on_task): it
 * declares abi_version 1.0 and struct_size = offsetof(myriad_plugin,
 * on_task). The host must load it, and must never read a field beyond that
 * size. To make a host that does visible, the field past the end holds a
 * poison value instead of NULL, as a real older plugin would have whatever
 * happens to follow its table in memory there.
 *
 * (MYRIAD_ABI_MINOR is 0 today, so 1.0 is also the current version number;
 * what this plugin exercises is the shorter table.)
 */
#include "../common/myriad_util.h"

static const myriad_host *host;

static int32_t old_init(myriad_ctx *cx, const char *service, size_t service_len,
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

static void old_shutdown(void *service_state)
{
    (void)service_state;
}

static void old_open(myriad_ctx *cx, void *service_state, void **conn_state)
{
    (void)cx;
    (void)service_state;
    (void)conn_state;
}

static size_t old_data(myriad_ctx *cx, void *service_state, void *conn_state, uint8_t *data,
                       size_t len)
{
    (void)service_state;
    (void)conn_state;
    host->write(cx, data, len);
    return len;
}

static void old_close(myriad_ctx *cx, void *service_state, void *conn_state, uint32_t reason,
                      uint16_t code)
{
    (void)cx;
    (void)service_state;
    (void)conn_state;
    (void)reason;
    (void)code;
}

typedef void (*on_task_fn)(myriad_ctx *, void *, void *, uint64_t, void *);

static const myriad_plugin plugin = {
    .abi_version = (1u << 16) | 0u,
    .struct_size = offsetof(myriad_plugin, on_task),
    .name = "abi-old-c",
    .shape = MYRIAD_SHAPE_STREAM,
    .init = old_init,
    .shutdown = old_shutdown,
    .on_open = old_open,
    .on_data = old_data,
    .on_close = old_close,
    /* Beyond struct_size: not part of this plugin's table. */
    .on_task = (on_task_fn)(uintptr_t)0xdeadbeefdeadbeefu,
};

MYRIAD_EXPORT const myriad_plugin *myriad_plugin_entry(const myriad_host *h)
{
    if (!mp_host_compatible(h))
        return NULL;
    host = h;
    return &plugin;
}
