/*
 * files-wasm-c — a WebAssembly plugin in C that uses WASI (wasi-libc's
 * open/read/getenv/clock_gettime, made into preview-2 imports by the
 * preview-1 adapter): the plugin of the sandbox-grant tests and an
 * example of a granted plugin. Build: scripts/build-wasm-plugin --wasi.
 *
 * One request per data chunk, one line back:
 *   READ path   -> the file's content, or "ERR <reason>"
 *   WRITE path  -> "OK" if it could create and write the file, or "ERR ..."
 *   ENV name    -> the variable's value, or "ERR unset"
 *   TIME        -> seconds since 1970 on the wall clock
 *   SLEEP ms    -> "OK" after sleeping ms milliseconds (wasi:io/poll on the
 *                  monotonic clock: the loop waits, using no CPU; the
 *                  deadline tests' descheduled call)
 *
 * A service without grants cannot load it (it imports WASI); with
 * `wasm_read_dir`, only that directory is there, read-only; `wasm_clock`
 * and `wasm_env` give the clock and named variables.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "myriad_wasm.h"

void exports_myriad_plugin_describe(myriad_plugin_info_t *ret)
{
    mw_describe(ret, "files-wasm-c", MYRIAD_PLUGIN_SHAPE_STREAM, true);
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

static void reply_err(uint64_t conn, int e)
{
    char line[160];
    int n = snprintf(line, sizeof line, "ERR %s\n", strerror(e));
    mw_write(conn, line, (size_t)n);
}

static void do_read(uint64_t conn, const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        reply_err(conn, errno);
        return;
    }
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    int e = errno;
    close(fd);
    if (n < 0)
        reply_err(conn, e);
    else
        mw_write(conn, buf, (size_t)n);
}

static void do_write(uint64_t conn, const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        reply_err(conn, errno);
        return;
    }
    ssize_t n = write(fd, "written\n", 8);
    int e = errno;
    close(fd);
    if (n != 8)
        reply_err(conn, n < 0 ? e : EIO);
    else
        mw_write(conn, "OK\n", 3);
}

uint32_t exports_myriad_plugin_on_data(uint64_t conn, myriad_plugin_list_u8_t *data)
{
    uint32_t n = (uint32_t)data->len;
    char req[512];
    size_t len = data->len < sizeof req - 1 ? data->len : sizeof req - 1;
    memcpy(req, data->ptr, len);
    myriad_plugin_list_u8_free(data);
    while (len > 0 && (req[len - 1] == '\n' || req[len - 1] == '\r'))
        len--;
    req[len] = 0;
    if (strncmp(req, "READ ", 5) == 0) {
        do_read(conn, req + 5);
    } else if (strncmp(req, "WRITE ", 6) == 0) {
        do_write(conn, req + 6);
    } else if (strncmp(req, "ENV ", 4) == 0) {
        const char *v = getenv(req + 4);
        if (v == NULL) {
            mw_write(conn, "ERR unset\n", 10);
        } else {
            mw_write(conn, v, strlen(v));
            mw_write(conn, "\n", 1);
        }
    } else if (strcmp(req, "TIME") == 0) {
        struct timespec ts;
        char line[64];
        int k = clock_gettime(CLOCK_REALTIME, &ts) == 0
                    ? snprintf(line, sizeof line, "%lld\n", (long long)ts.tv_sec)
                    : snprintf(line, sizeof line, "ERR %s\n", strerror(errno));
        mw_write(conn, line, (size_t)k);
    } else if (strncmp(req, "SLEEP ", 6) == 0) {
        long ms = strtol(req + 6, NULL, 10);
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        if (ms >= 0 && nanosleep(&ts, NULL) == 0)
            mw_write(conn, "OK\n", 3);
        else
            reply_err(conn, ms < 0 ? EINVAL : errno);
    } else {
        mw_write(conn, "ERR unknown request\n", 20);
    }
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
