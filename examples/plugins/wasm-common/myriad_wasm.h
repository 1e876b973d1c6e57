/*
 * myriad_wasm.h — small helpers for C WebAssembly plugins of the world
 * wit/myriad-plugin.wit, over the bindings wit-bindgen writes
 * (myriad_plugin.h; scripts/build-wasm-plugin puts both on the include
 * path).
 *
 * - Host calls taking bytes or text (mw_write, mw_send, ...): the host
 *   only borrows them for the call.
 * - Arguments the host hands a plugin's exports (lists, strings) are the
 *   plugin's to free (myriad_plugin_list_u8_free, ...).
 * - mw_table: per-connection state. The server runs one instance of a
 *   plugin per event loop and calls it for all that loop's connections,
 *   naming each by its id: a plugin keeps its connections' state in a
 *   table keyed by that id (made in on-open, freed in on-close).
 */
#ifndef MYRIAD_WASM_H
#define MYRIAD_WASM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "myriad_plugin.h"

static inline int32_t mw_write(uint64_t conn, const void *p, size_t n)
{
    myriad_plugin_list_u8_t l = {(uint8_t *)p, n};
    return myriad_plugin_host_write(conn, &l);
}

static inline int32_t mw_send(uint64_t conn, myriad_plugin_msg_kind_t kind, const void *p, size_t n)
{
    myriad_plugin_list_u8_t l = {(uint8_t *)p, n};
    return myriad_plugin_host_send(conn, kind, &l);
}

static inline int32_t mw_close(uint64_t conn, uint16_t code, const char *reason)
{
    myriad_plugin_string_t s;
    myriad_plugin_string_set(&s, reason);
    return myriad_plugin_host_close(conn, code, &s);
}

static inline int32_t mw_subscribe(uint64_t conn, const char *topic)
{
    myriad_plugin_string_t s;
    myriad_plugin_string_set(&s, topic);
    return myriad_plugin_host_subscribe(conn, &s);
}

static inline int32_t mw_publish(uint64_t conn, const char *topic, myriad_plugin_msg_kind_t kind,
                                 const void *p, size_t n)
{
    myriad_plugin_string_t s;
    myriad_plugin_list_u8_t l = {(uint8_t *)p, n};
    myriad_plugin_string_set(&s, topic);
    return myriad_plugin_host_publish(conn, &s, kind, &l);
}

static inline int32_t mw_counter_add(const char *name, uint64_t n)
{
    myriad_plugin_string_t s;
    myriad_plugin_string_set(&s, name);
    return myriad_plugin_host_counter_add(&s, n);
}

static inline void mw_log(myriad_plugin_host_log_level_t level, const char *msg)
{
    myriad_plugin_string_t s;
    myriad_plugin_string_set(&s, msg);
    myriad_plugin_host_log(level, &s);
}

/* describe's answer: the name is copied (the bindings free it after the
 * call). `reopen`: see the `info` record of the WIT world. */
static inline void mw_describe(myriad_plugin_info_t *ret, const char *name,
                               myriad_plugin_shape_t shape, bool reopen)
{
    myriad_plugin_string_dup(&ret->name, name);
    ret->shape = shape;
    ret->reopen = reopen;
}

/*
 * mw_table: connection id -> a value, open addressing with linear probing
 * and backward-shift deletion; grows by doubling (ids are never 0, which
 * marks a free slot). Bounded by the instance's memory cap: when it
 * cannot grow, mw_put fails and the plugin decides (the examples close
 * that connection).
 */
struct mw_entry {
    uint64_t id;
    uint64_t value;
};

struct mw_table {
    struct mw_entry *e;
    size_t cap; /* a power of two, or 0 */
    size_t len;
};

static inline size_t mw_slot(uint64_t id, size_t cap)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return (size_t)id & (cap - 1);
}

static inline struct mw_entry *mw_find(struct mw_table *t, uint64_t id)
{
    if (t->cap == 0)
        return NULL;
    for (size_t i = mw_slot(id, t->cap);; i = (i + 1) & (t->cap - 1)) {
        if (t->e[i].id == id)
            return &t->e[i];
        if (t->e[i].id == 0)
            return NULL;
    }
}

static inline bool mw_put(struct mw_table *t, uint64_t id, uint64_t value)
{
    struct mw_entry *f = mw_find(t, id);
    if (f != NULL) {
        f->value = value;
        return true;
    }
    if ((t->len + 1) * 4 > t->cap * 3) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        struct mw_entry *n = calloc(cap, sizeof *n);
        if (n == NULL)
            return false;
        for (size_t i = 0; i < t->cap; i++) {
            if (t->e[i].id == 0)
                continue;
            size_t j = mw_slot(t->e[i].id, cap);
            while (n[j].id != 0)
                j = (j + 1) & (cap - 1);
            n[j] = t->e[i];
        }
        free(t->e);
        t->e = n;
        t->cap = cap;
    }
    size_t i = mw_slot(id, t->cap);
    while (t->e[i].id != 0)
        i = (i + 1) & (t->cap - 1);
    t->e[i].id = id;
    t->e[i].value = value;
    t->len++;
    return true;
}

static inline void mw_remove(struct mw_table *t, uint64_t id)
{
    struct mw_entry *f = mw_find(t, id);
    if (f == NULL)
        return;
    size_t i = (size_t)(f - t->e);
    size_t j = i;
    for (;;) {
        j = (j + 1) & (t->cap - 1);
        if (t->e[j].id == 0)
            break;
        size_t home = mw_slot(t->e[j].id, t->cap);
        /* move e[j] back to i unless its home lies cyclically in (i, j] */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            t->e[i] = t->e[j];
            i = j;
        }
    }
    t->e[i].id = 0;
    t->len--;
}

#endif
