/*
 * myriad_util.h — small helpers shared by the C example plugins.
 *
 * Not part of the ABI (that is myriad_plugin.h alone): copy what you need.
 *
 * - MYRIAD_EXPORT marks the entry point visible even under
 *   -fvisibility=hidden.
 * - mp_host_compatible() is the check every entry point makes: the host's
 *   major version must be ours (a different major may have moved anything).
 * - MYRIAD_HOST_HAS(host, field) says whether the host's table is long enough
 *   to hold `field` (and that it is set). A host of an older minor version
 *   has a shorter table: a field beyond its struct_size is not there, and
 *   reading it reads whatever follows the host's table in memory.
 * - mp_json_*: a tiny reader for the flat plugin_config JSON object the host
 *   passes to init (see the limits below).
 */
#ifndef MYRIAD_UTIL_H
#define MYRIAD_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "myriad_plugin.h"

#define MYRIAD_EXPORT __attribute__((visibility("default")))

#define MYRIAD_HOST_HAS(host, field)                                                       \
    ((size_t)(host)->struct_size >= offsetof(myriad_host, field) + sizeof((host)->field) && \
     (host)->field != NULL)

static inline int mp_host_compatible(const myriad_host *host)
{
    return host != NULL && (host->abi_version >> 16) == MYRIAD_ABI_MAJOR;
}

/* Copies msg into init's err buffer (NUL-terminated, truncated to fit). */
static inline void mp_set_err(char *err, size_t cap, const char *msg)
{
    size_t n;
    if (err == NULL || cap == 0)
        return;
    n = strlen(msg);
    if (n >= cap)
        n = cap - 1;
    memcpy(err, msg, n);
    err[n] = '\0';
}

/* host->log if the host has it; a no-op otherwise. */
static inline void mp_log(const myriad_host *host, myriad_ctx *cx, uint32_t level,
                          const char *msg, size_t len)
{
    if (MYRIAD_HOST_HAS(host, log))
        host->log(cx, level, msg, len);
}

/*
 * The JSON reader. It finds a key of the top-level object and reads its
 * value as a string or a boolean. Limits, on purpose:
 * - only top-level keys are found (nested objects and arrays are skipped,
 *   and so are strings, so a key-like text inside a value never matches);
 * - a key written with escapes ("tok\u0065n") is not recognised;
 * - string values may use the escapes \" \\ \/ \b \f \n \r \t; \uXXXX is
 *   refused (mp_json_string fails), which is enough for tokens and names;
 * - the input is assumed to be well-formed JSON (the host serialises a TOML
 *   table); malformed input makes a lookup fail, never read out of bounds;
 * - if a key appears twice, the first one wins.
 */

static inline size_t mp_json_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* Where the value of top-level `key` starts (index into s), or -1. */
static inline long mp_json_find(const char *s, size_t n, const char *key)
{
    size_t klen = strlen(key), i = 0;
    int depth = 0;
    while (i < n) {
        char c = s[i];
        if (c == '"') {
            size_t start = ++i, len, j;
            int escaped = 0;
            while (i < n && s[i] != '"') {
                if (s[i] == '\\') {
                    escaped = 1;
                    i++;
                }
                i++;
            }
            if (i >= n)
                return -1; /* unterminated string */
            len = i - start;
            i++;
            if (depth != 1)
                continue;
            j = mp_json_ws(s, n, i);
            if (j < n && s[j] == ':') { /* the string was a key */
                j = mp_json_ws(s, n, j + 1);
                if (!escaped && len == klen && memcmp(s + start, key, klen) == 0)
                    return j < n ? (long)j : -1;
                i = j;
            }
            continue;
        }
        if (c == '{' || c == '[')
            depth++;
        else if (c == '}' || c == ']')
            depth--;
        i++;
    }
    return -1;
}

/* A boolean value of top-level `key`: 1 true, 0 false, -1 absent or not a
 * boolean. */
static inline int mp_json_bool(const char *s, size_t n, const char *key)
{
    long at = mp_json_find(s, n, key);
    size_t rest;
    if (at < 0)
        return -1;
    rest = n - (size_t)at;
    if (rest >= 4 && memcmp(s + at, "true", 4) == 0)
        return 1;
    if (rest >= 5 && memcmp(s + at, "false", 5) == 0)
        return 0;
    return -1;
}

/* A string value of top-level `key`, decoded into a malloc'd, NUL-terminated
 * copy (*out, its length in *out_len; free it). Returns 1 found, 0 absent,
 * -1 present but not a string this reader takes (or out of memory). */
static inline int mp_json_string(const char *s, size_t n, const char *key, char **out,
                                 size_t *out_len)
{
    long at = mp_json_find(s, n, key);
    size_t i, len = 0;
    char *buf;
    *out = NULL;
    *out_len = 0;
    if (at < 0)
        return 0;
    if (s[at] != '"')
        return -1;
    buf = malloc(n - (size_t)at); /* the decoded text is never longer */
    if (buf == NULL)
        return -1;
    for (i = (size_t)at + 1; i < n && s[i] != '"'; i++) {
        char c = s[i];
        if (c == '\\') {
            if (++i >= n)
                break;
            switch (s[i]) {
            case '"': c = '"'; break;
            case '\\': c = '\\'; break;
            case '/': c = '/'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            default: free(buf); return -1; /* \uXXXX and anything else */
            }
        }
        buf[len++] = c;
    }
    if (i >= n) { /* unterminated */
        free(buf);
        return -1;
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return 1;
}

#endif /* MYRIAD_UTIL_H */
