/*
 * echo-wasm-c — an echo as a WebAssembly plugin in C (a stream plugin of
 * the world wit/myriad-plugin.wit; build: scripts/build-wasm-plugin, or
 * scripts/build-plugins for all).
 *
 * Its per-connection state, kept in the instance keyed by connection id
 * (one instance serves all of a loop's connections), is the number of
 * bytes echoed; at close it is added to the plugin counter "bytes" and
 * forgotten. Built with -DVERSION='"v1"' it prefixes each echo with
 * "v1:" (the tests' side-by-side and reload versions). Its on-drain does
 * nothing, so init tells the host not to call it (mw_drain_events); the
 * tests build it with -DDRAIN_NOTE (on-drain writes "drained") and with
 * or without -DDRAIN_EVENTS (leaves drain events on).
 */
#include "myriad_wasm.h"

static struct mw_table conns;

void exports_myriad_plugin_describe(myriad_plugin_info_t *ret)
{
    mw_describe(ret, "echo-wasm-c", MYRIAD_PLUGIN_SHAPE_STREAM, true);
}

bool exports_myriad_plugin_init(myriad_plugin_string_t *service, myriad_plugin_string_t *config,
                                myriad_plugin_string_t *err)
{
    (void)err;
#ifndef DRAIN_EVENTS
    /* on-drain has nothing to do here: the host need not call it (one call
     * into the guest per message saved) */
    mw_drain_events(false);
#endif
    myriad_plugin_string_free(service);
    myriad_plugin_string_free(config);
    return true;
}

void exports_myriad_plugin_on_open(uint64_t conn)
{
    if (!mw_put(&conns, conn, 0))
        mw_close(conn, 0, "out of memory");
}

uint32_t exports_myriad_plugin_on_data(uint64_t conn, myriad_plugin_list_u8_t *data)
{
    uint32_t n = (uint32_t)data->len;
#ifdef VERSION
    mw_write(conn, VERSION ":", sizeof(VERSION));
#endif
    mw_write(conn, data->ptr, data->len);
    struct mw_entry *e = mw_find(&conns, conn);
    if (e != NULL)
        e->value += n;
    myriad_plugin_list_u8_free(data);
    return n;
}

void exports_myriad_plugin_on_message(uint64_t conn, myriad_plugin_msg_kind_t kind,
                                      myriad_plugin_list_u8_t *data)
{
    (void)conn;
    (void)kind;
    myriad_plugin_list_u8_free(data);
}

void exports_myriad_plugin_on_drain(uint64_t conn)
{
#ifdef DRAIN_NOTE
    /* the tests' build: shows whether the host called on-drain */
    mw_write(conn, "drained", 7);
#else
    (void)conn;
#endif
}

void exports_myriad_plugin_on_timer(uint64_t conn, uint64_t token)
{
    (void)conn;
    (void)token;
}

void exports_myriad_plugin_on_close(uint64_t conn, myriad_plugin_close_reason_t reason, uint16_t code)
{
    (void)reason;
    (void)code;
    struct mw_entry *e = mw_find(&conns, conn);
    if (e != NULL) {
        mw_counter_add("bytes", e->value);
        mw_remove(&conns, conn);
    }
}
