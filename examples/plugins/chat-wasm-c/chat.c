/*
 * chat-wasm-c — a chat room as a WebAssembly plugin in C, for WebSocket
 * stacks (ws, wss): a message plugin of wit/myriad-plugin.wit.
 *
 * - on-open: the connection joins the room "room" (or the config's
 *   "room", given as {"room":"NAME"} in [service.plugin_config]).
 * - on-message: a text message is published to the room (every member,
 *   sender included, on every loop) and counted as "messages"; a binary
 *   message closes the connection with 1003 (unsupported data).
 * - per connection (in the instance, keyed by connection id): the number
 *   of messages it sent, added to the counter "closed_messages" at close.
 */
#include "myriad_wasm.h"

static struct mw_table conns;
static char room[64] = "room";

void exports_myriad_plugin_describe(myriad_plugin_info_t *ret)
{
    mw_describe(ret, "chat-wasm-c", MYRIAD_PLUGIN_SHAPE_MESSAGE, true);
}

/* The value of "room" in a flat JSON object, if any (no escapes). */
static void read_room(const uint8_t *p, size_t n)
{
    static const char key[] = "\"room\":\"";
    size_t k = sizeof key - 1;
    for (size_t i = 0; i + k <= n; i++) {
        if (memcmp(p + i, key, k) != 0)
            continue;
        size_t j = i + k, m = 0;
        while (j < n && p[j] != '"' && m + 1 < sizeof room)
            room[m++] = (char)p[j++];
        if (m > 0 && j < n && p[j] == '"')
            room[m] = 0;
        else
            memcpy(room, "room", 5);
        return;
    }
}

bool exports_myriad_plugin_init(myriad_plugin_string_t *service, myriad_plugin_string_t *config,
                                myriad_plugin_string_t *err)
{
    (void)err;
    read_room(config->ptr, config->len);
    myriad_plugin_string_free(service);
    myriad_plugin_string_free(config);
    return true;
}

void exports_myriad_plugin_on_open(uint64_t conn)
{
    if (!mw_put(&conns, conn, 0) || mw_subscribe(conn, room) != 0)
        mw_close(conn, 1011, "cannot join the room");
}

uint32_t exports_myriad_plugin_on_data(uint64_t conn, myriad_plugin_list_u8_t *data)
{
    (void)conn;
    uint32_t n = (uint32_t)data->len;
    myriad_plugin_list_u8_free(data);
    return n;
}

void exports_myriad_plugin_on_message(uint64_t conn, myriad_plugin_msg_kind_t kind,
                                      myriad_plugin_list_u8_t *data)
{
    if (kind == MYRIAD_PLUGIN_HOST_MSG_KIND_TEXT) {
        mw_publish(conn, room, kind, data->ptr, data->len);
        mw_counter_add("messages", 1);
        struct mw_entry *e = mw_find(&conns, conn);
        if (e != NULL)
            e->value++;
    } else {
        mw_close(conn, 1003, "text only");
    }
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
    (void)reason;
    (void)code;
    struct mw_entry *e = mw_find(&conns, conn);
    if (e != NULL) {
        mw_counter_add("closed_messages", e->value);
        mw_remove(&conns, conn);
    }
}
