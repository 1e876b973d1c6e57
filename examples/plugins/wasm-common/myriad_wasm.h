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

/* Whether this instance's on-drain is called (yes until told otherwise):
 * a plugin whose on-drain does nothing calls mw_drain_events(false) in
 * init, and the host skips that call into the guest (for an echo, one of
 * its two calls per message). */
static inline void mw_drain_events(bool on)
{
    myriad_plugin_host_drain_events(on);
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
 * and backward-shift deletion (ids are never 0, which marks a free slot).
 * Bounded by the instance's memory cap: when it cannot grow, mw_put fails
 * and the plugin decides (the examples close that connection).
 *
 * It doubles incrementally, in bounded steps made by each later mw_put and
 * mw_remove, never in one call: a call into a plugin has a deadline
 * (wasm_deadline, 10 ms by default), and rehashing a loop's share of a
 * million connections at once took 9 ms at 393,216 entries and 19 ms at
 * 786,432 in wasm (bench-wasm-instances), which would have poisoned the
 * instance and closed all of its connections. From 5/8 full the next
 * array (twice the size) is allocated without zeroing (calloc would zero
 * it in one call: 10 ms for 32 MiB) and zeroed MW_ZERO_STEP slots a step;
 * then the entries move into it MW_MIGRATE_STEP slots a step (to the end
 * of the cluster there), lookups trying the new array and then the old
 * one. Whole clusters move, so what is left of the old array stays a
 * valid linear-probing table (no entry's probe path crosses a moved
 * cluster). The steps finish long before the array is 3/4 full; if they
 * did not (no memory for the next array yet), that put finishes them.
 */
#ifndef MW_MIGRATE_STEP
#define MW_MIGRATE_STEP 64
#endif
#ifndef MW_ZERO_STEP
#define MW_ZERO_STEP 512
#endif

struct mw_entry {
    uint64_t id;
    uint64_t value;
};

struct mw_table {
    struct mw_entry *e; /* the (new) array */
    size_t cap;         /* a power of two, or 0 */
    size_t len;         /* entries in e */
    struct mw_entry *old; /* the array being moved from, or NULL */
    size_t old_cap;
    size_t old_len;  /* entries still in old */
    size_t old_next; /* next slot of old to move (counts up to old_end) */
    size_t old_end;  /* old_next's end: the first free slot, + old_cap */
    struct mw_entry *next; /* the array being zeroed, or NULL */
    size_t next_cap;
    size_t next_zeroed;
};

static inline size_t mw_slot(uint64_t id, size_t cap)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return (size_t)id & (cap - 1);
}

static inline struct mw_entry *mw_probe(struct mw_entry *e, size_t cap, uint64_t id)
{
    if (cap == 0)
        return NULL;
    for (size_t i = mw_slot(id, cap);; i = (i + 1) & (cap - 1)) {
        if (e[i].id == id)
            return &e[i];
        if (e[i].id == 0)
            return NULL;
    }
}

/* insert an id known to be absent; e has a free slot */
static inline struct mw_entry *mw_place(struct mw_entry *e, size_t cap, uint64_t id, uint64_t value)
{
    size_t i = mw_slot(id, cap);
    while (e[i].id != 0)
        i = (i + 1) & (cap - 1);
    e[i].id = id;
    e[i].value = value;
    return &e[i];
}

static inline void mw_unplace(struct mw_entry *e, size_t cap, struct mw_entry *f)
{
    size_t i = (size_t)(f - e);
    size_t j = i;
    for (;;) {
        j = (j + 1) & (cap - 1);
        if (e[j].id == 0)
            break;
        size_t home = mw_slot(e[j].id, cap);
        /* move e[j] back to i unless its home lies cyclically in (i, j] */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            e[i] = e[j];
            i = j;
        }
    }
    e[i].id = 0;
}

/* Moves at least `slots` slots of the old array (whole clusters) into the
 * new one; frees the old array when it is empty. */
static inline void mw_migrate(struct mw_table *t, size_t slots)
{
    if (t->old == NULL)
        return;
    size_t mask = t->old_cap - 1;
    size_t done = 0;
    while (t->old_next < t->old_end && t->old_len > 0) {
        struct mw_entry *s = &t->old[t->old_next & mask];
        t->old_next++;
        done++;
        if (s->id != 0) {
            mw_place(t->e, t->cap, s->id, s->value);
            s->id = 0;
            t->len++;
            t->old_len--;
        } else if (done >= slots) {
            /* at a free slot: the clusters moved so far were whole */
            return;
        }
    }
    free(t->old);
    t->old = NULL;
    t->old_cap = t->old_len = t->old_next = t->old_end = 0;
}

static inline struct mw_entry *mw_find(struct mw_table *t, uint64_t id)
{
    struct mw_entry *f = mw_probe(t->e, t->cap, id);
    if (f == NULL && t->old != NULL)
        f = mw_probe(t->old, t->old_cap, id);
    return f;
}

/* The next array is zeroed: it becomes the table's, and the entries of
 * the current one are moved into it step by step. */
static inline void mw_begin_move(struct mw_table *t)
{
    if (t->len > 0) {
        /* start moving at a free slot, so that no cluster is split */
        size_t start = 0;
        while (t->e[start].id != 0)
            start++;
        t->old = t->e;
        t->old_cap = t->cap;
        t->old_len = t->len;
        t->old_next = start;
        t->old_end = start + t->cap;
    } else {
        free(t->e);
    }
    t->e = t->next;
    t->cap = t->next_cap;
    t->len = 0;
    t->next = NULL;
    t->next_cap = t->next_zeroed = 0;
}

/* One step of a growth: moving at least `slots` slots, or else zeroing at
 * most `zero` slots of the next array. */
static inline void mw_step(struct mw_table *t, size_t slots, size_t zero)
{
    if (t->old != NULL) {
        mw_migrate(t, slots);
    } else if (t->next != NULL) {
        size_t n = t->next_cap - t->next_zeroed;
        if (n > zero)
            n = zero;
        memset(&t->next[t->next_zeroed], 0, n * sizeof *t->next);
        t->next_zeroed += n;
        if (t->next_zeroed == t->next_cap)
            mw_begin_move(t);
    }
}

static inline bool mw_put(struct mw_table *t, uint64_t id, uint64_t value)
{
    mw_step(t, MW_MIGRATE_STEP, MW_ZERO_STEP);
    struct mw_entry *f = mw_find(t, id);
    if (f != NULL) {
        f->value = value;
        return true;
    }
    if (t->cap == 0) {
        t->e = calloc(64, sizeof *t->e);
        if (t->e == NULL)
            return false;
        t->cap = 64;
    }
    size_t total = t->len + t->old_len + 1;
    if (t->next == NULL && t->old == NULL && total * 8 > t->cap * 5 &&
        t->cap <= SIZE_MAX / 2 / sizeof *t->e) {
        /* not zeroed: the steps do it (if there is no memory now, the
         * next put tries again) */
        t->next = malloc(t->cap * 2 * sizeof *t->e);
        t->next_cap = t->next != NULL ? t->cap * 2 : 0;
        t->next_zeroed = 0;
    }
    if (total * 4 > t->cap * 3) {
        /* the steps did not keep up: finish the growth now */
        while (t->old != NULL || t->next != NULL)
            mw_step(t, (size_t)-1, (size_t)-1);
        if (total * 4 > t->cap * 3)
            return false;
    }
    mw_place(t->e, t->cap, id, value);
    t->len++;
    return true;
}

static inline void mw_remove(struct mw_table *t, uint64_t id)
{
    mw_step(t, MW_MIGRATE_STEP, MW_ZERO_STEP);
    struct mw_entry *f = mw_probe(t->e, t->cap, id);
    if (f != NULL) {
        mw_unplace(t->e, t->cap, f);
        t->len--;
        return;
    }
    if (t->old == NULL)
        return;
    f = mw_probe(t->old, t->old_cap, id);
    if (f != NULL) {
        /* moves entries only within f's cluster, which is not moved yet */
        mw_unplace(t->old, t->old_cap, f);
        t->old_len--;
    }
}

#endif
