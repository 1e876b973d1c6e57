/*
 * abi-major-c — a plugin declaring ABI version 2.0, a major version the host
 * does not know. The host must refuse to load it, with a message naming the
 * file and both versions.
 *
 * Unlike a real plugin, its entry point returns its table whatever the
 * host's version (a real one returns NULL for a major it does not know):
 * the check under test here is the host's. The callbacks are a plain echo,
 * so a host that wrongly accepts it still runs something harmless.
 */
#include "../common/myriad_util.h"

static const myriad_host *host;

static int32_t major_init(myriad_ctx *cx, const char *service, size_t service_len,
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

static void major_shutdown(void *service_state)
{
    (void)service_state;
}

static void major_open(myriad_ctx *cx, void *service_state, void **conn_state)
{
    (void)cx;
    (void)service_state;
    (void)conn_state;
}

static size_t major_data(myriad_ctx *cx, void *service_state, void *conn_state, uint8_t *data,
                         size_t len)
{
    (void)service_state;
    (void)conn_state;
    host->write(cx, data, len);
    return len;
}

static void major_close(myriad_ctx *cx, void *service_state, void *conn_state, uint32_t reason,
                        uint16_t code)
{
    (void)cx;
    (void)service_state;
    (void)conn_state;
    (void)reason;
    (void)code;
}

static const myriad_plugin plugin = {
    .abi_version = (2u << 16) | 0u,
    .struct_size = sizeof(myriad_plugin),
    .name = "abi-major-c",
    .shape = MYRIAD_SHAPE_STREAM,
    .init = major_init,
    .shutdown = major_shutdown,
    .on_open = major_open,
    .on_data = major_data,
    .on_close = major_close,
};

MYRIAD_EXPORT const myriad_plugin *myriad_plugin_entry(const myriad_host *h)
{
    host = h;
    return &plugin;
}
