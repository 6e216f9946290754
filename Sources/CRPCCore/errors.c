/*
 * errors.c — names for the negated errnos the API returns, in the words of this API
 * rather than libc's (EBADMSG here always means "malformed MessagePack or envelope").
 */
#include "crpc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core.h"

static __thread char last_error[256];

void crpc_set_last_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    va_end(ap);
}

const char *crpc_last_error(void) { return last_error; }

const char *crpc_strerror(int err)
{
    switch (err) {
    case 0: return "success";
    case -EMSGSIZE: return "frame larger than max_frame_size";
    case -EBADMSG: return "malformed MessagePack or envelope";
    case -EPROTO: return "envelope fields do not decode";
    case -ELOOP: return "MessagePack nested too deeply";
    case -E2BIG: return "too many ext entries";
    case -ENOTCONN: return "connection is not open";
    case -ECONNRESET: return "connection lost";
    case -ESHUTDOWN: return "closed or shutting down";
    case -ECANCELED: return "call cancelled";
    case -ETIMEDOUT: return "timed out";
    case -ENOENT: return "no such call, element or socket file";
    case -EDEADLK: return "cannot do that on the loop's own thread";
    case -EALREADY: return "already started";
    case -EPERM: return "operation not permitted (io_uring refused by seccomp or kernel.io_uring_disabled)";
    case -ENOSYS: return "io_uring not supported by this kernel";
    case -EOPNOTSUPP: return "io_uring lacks an operation the core needs";
    case -ECONNABORTED: return "TLS: the handshake or a record failed";
    case -EKEYREJECTED: return "TLS: the peer's certificate did not verify";
    case -EADDRINUSE: return "address in use";
    }
    return err < 0 ? strerror(-err) : "unknown status";
}
