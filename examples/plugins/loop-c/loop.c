/*
 * loop-c — an echo that misbehaves on request, for the sandbox's tests
 * (a stream plugin of wit/myriad-plugin.wit):
 *
 * - bytes starting with "LOOP": loops forever. The server interrupts the
 *   call at its deadline (`wasm_deadline`, 10 ms by default), closes the
 *   connection and counts a plugin_timeout;
 * - bytes starting with "TRAP": executes `unreachable` (a trap, counted as
 *   plugin_trap);
 * - anything else is echoed.
 *
 * Either fault poisons the loop's instance: the host drops it. This
 * plugin keeps no per-connection state, so it says `reopen`: the loop's
 * other connections go on with a fresh instance. Built with -DNO_REOPEN
 * it does not, and they are closed at their next event (plugin_lost).
 */
#include "myriad_wasm.h"

static volatile uint64_t spins;

void exports_myriad_plugin_describe(myriad_plugin_info_t *ret)
{
    #ifdef NO_REOPEN
    mw_describe(ret, "loop-c", MYRIAD_PLUGIN_SHAPE_STREAM, false);
#else
    mw_describe(ret, "loop-c", MYRIAD_PLUGIN_SHAPE_STREAM, true);
#endif
}

bool exports_myriad_plugin_init(myriad_plugin_string_t *service, myriad_plugin_string_t *config,
                                myriad_plugin_string_t *err)
{
    (void)err;
    myriad_plugin_string_free(service);
    myriad_plugin_string_free(config);
    return true;
}

void exports_myriad_plugin_on_open(uint64_t conn)
{
    (void)conn;
}

uint32_t exports_myriad_plugin_on_data(uint64_t conn, myriad_plugin_list_u8_t *data)
{
    uint32_t n = (uint32_t)data->len;
    if (data->len >= 4 && memcmp(data->ptr, "LOOP", 4) == 0) {
        for (;;)
            spins++;
    }
    if (data->len >= 4 && memcmp(data->ptr, "TRAP", 4) == 0)
        __builtin_trap();
    mw_write(conn, data->ptr, data->len);
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
    (void)conn;
}

void exports_myriad_plugin_on_timer(uint64_t conn, uint64_t token)
{
    (void)conn;
    (void)token;
}

void exports_myriad_plugin_on_close(uint64_t conn, myriad_plugin_close_reason_t reason, uint16_t code)
{
    (void)conn;
    (void)reason;
    (void)code;
}
