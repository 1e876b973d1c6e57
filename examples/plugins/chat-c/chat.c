/*
 * chat-c — a chat room for WebSocket stacks (ws, wss), as a message plugin.
 *
 * - on_upgrade: a `token=` parameter in the query must equal the config's
 *   "token" when the config sets one (else 401); with no "token" in the
 *   config any token is accepted. A request without a `token=` parameter is
 *   accepted either way: the token is checked when given, not required.
 *   The value is compared as it appears in the query (no percent-decoding).
 *   The subprotocol "chat.v1" is selected when the client offers it.
 * - on_open: the connection joins the room, topic "room" or the config's
 *   "room".
 * - on_message: a text message is published to the room (every member,
 *   sender included, on every loop) and counted as "messages"; a binary
 *   message closes the connection with 1003 (unsupported data).
 *
 * Config ([service.plugin_config]), both optional:
 *   token = "s3cret"
 *   room = "lobby"
 * read with the small JSON reader of ../common/myriad_util.h (see its
 * limits: top-level keys only, no \uXXXX escapes in values).
 *
 * The service state is written only in init and read-only afterwards, so
 * the loops share it without locks. There is no per-connection state.
 */
#include <stdio.h>

#include "../common/myriad_util.h"

static const myriad_host *host;

struct chat {
    char *room;
    size_t room_len;
    char *token; /* NULL: any token is accepted */
    size_t token_len;
};

static const char SUBPROTOCOL[] = "chat.v1";

static void chat_free(struct chat *c)
{
    if (c == NULL)
        return;
    free(c->room);
    free(c->token);
    free(c);
}

static int32_t chat_init(myriad_ctx *cx, const char *service, size_t service_len,
                         const char *config, size_t config_len, void **service_state, char *err,
                         size_t err_cap)
{
    struct chat *c;
    char line[256];
    int n;
    (void)service;
    (void)service_len;
    if (!MYRIAD_HOST_HAS(host, subscribe) || !MYRIAD_HOST_HAS(host, publish) ||
        !MYRIAD_HOST_HAS(host, close) || !MYRIAD_HOST_HAS(host, counter_add)) {
        mp_set_err(err, err_cap, "the host lacks subscribe, publish, close or counter_add");
        return 1;
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        mp_set_err(err, err_cap, "out of memory");
        return 1;
    }
    switch (mp_json_string(config, config_len, "room", &c->room, &c->room_len)) {
    case 1:
        if (c->room_len == 0) {
            mp_set_err(err, err_cap, "plugin_config: \"room\" is empty");
            chat_free(c);
            return 1;
        }
        break;
    case 0:
        c->room = malloc(sizeof "room");
        if (c->room == NULL) {
            mp_set_err(err, err_cap, "out of memory");
            chat_free(c);
            return 1;
        }
        memcpy(c->room, "room", sizeof "room");
        c->room_len = sizeof "room" - 1;
        break;
    default:
        mp_set_err(err, err_cap, "plugin_config: \"room\" must be a plain string");
        chat_free(c);
        return 1;
    }
    if (mp_json_string(config, config_len, "token", &c->token, &c->token_len) < 0) {
        mp_set_err(err, err_cap, "plugin_config: \"token\" must be a plain string");
        chat_free(c);
        return 1;
    }
    n = snprintf(line, sizeof line, "chat plugin ready, room=%.*s", (int)c->room_len, c->room);
    if (n > 0)
        mp_log(host, cx, MYRIAD_LOG_INFO, line,
               (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    *service_state = c;
    return 0;
}

static void chat_shutdown(void *service_state)
{
    chat_free(service_state);
}

static int str_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* 0 if every `token=` parameter of the query is acceptable, else 401. */
static int32_t check_token(const struct chat *c, myriad_str query)
{
    const char *p = query.ptr, *end = query.ptr + query.len;
    if (c->token == NULL || query.len == 0)
        return 0;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *param_end = amp != NULL ? amp : end;
        size_t plen = (size_t)(param_end - p);
        if (plen >= 6 && memcmp(p, "token=", 6) == 0 &&
            !str_eq(p + 6, plen - 6, c->token, c->token_len))
            return 401;
        p = param_end + 1;
    }
    return 0;
}

static int32_t chat_upgrade(myriad_ctx *cx, void *service_state, const myriad_upgrade *req,
                            int32_t *protocol, void **conn_state)
{
    size_t i;
    int32_t status;
    (void)cx;
    (void)conn_state;
    status = check_token(service_state, req->query);
    if (status != 0)
        return status;
    *protocol = -1;
    for (i = 0; i < req->protocol_count && i <= INT32_MAX; i++) {
        if (str_eq(req->protocols[i].ptr, req->protocols[i].len, SUBPROTOCOL,
                   sizeof SUBPROTOCOL - 1)) {
            *protocol = (int32_t)i;
            break;
        }
    }
    return 0;
}

static void chat_open(myriad_ctx *cx, void *service_state, void **conn_state)
{
    const struct chat *c = service_state;
    static const char why[] = "cannot join the room";
    (void)conn_state;
    if (host->subscribe(cx, c->room, c->room_len) != MYRIAD_OK) {
        mp_log(host, cx, MYRIAD_LOG_WARN, why, sizeof why - 1);
        host->close(cx, 1011, why, sizeof why - 1);
    }
}

static void chat_message(myriad_ctx *cx, void *service_state, void *conn_state, uint32_t kind,
                         const uint8_t *data, size_t len)
{
    const struct chat *c = service_state;
    static const char why[] = "binary messages are not accepted";
    (void)conn_state;
    if (kind != MYRIAD_TEXT) {
        host->close(cx, 1003, why, sizeof why - 1);
        return;
    }
    if (host->publish(cx, c->room, c->room_len, MYRIAD_TEXT, data, len) == MYRIAD_OK)
        host->counter_add(cx, "messages", sizeof "messages" - 1, 1);
}

static void chat_close(myriad_ctx *cx, void *service_state, void *conn_state, uint32_t reason,
                       uint16_t code)
{
    /* Nothing to free; a closed connection's subscriptions end with it
     * (the host's job). */
    (void)cx;
    (void)service_state;
    (void)conn_state;
    (void)reason;
    (void)code;
}

static const myriad_plugin plugin = {
    .abi_version = MYRIAD_ABI_VERSION,
    .struct_size = sizeof(myriad_plugin),
    .name = "chat-c",
    .shape = MYRIAD_SHAPE_MESSAGE,
    .init = chat_init,
    .shutdown = chat_shutdown,
    .on_upgrade = chat_upgrade,
    .on_open = chat_open,
    .on_message = chat_message,
    .on_close = chat_close,
};

MYRIAD_EXPORT const myriad_plugin *myriad_plugin_entry(const myriad_host *h)
{
    if (!mp_host_compatible(h))
        return NULL;
    host = h;
    return &plugin;
}
