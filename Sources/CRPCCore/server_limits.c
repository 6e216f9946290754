/*
 * server_limits.c — what the descriptor limit lets a server do. The process must never reach
 * its RLIMIT_NOFILE (libdispatch aborts the process when an open() fails): at start the soft
 * limit is raised to the hard one, and a reserve is kept free. Descriptors are handed out
 * lowest first, so the lowest free number (F_DUPFD) being in the reserve means the reserve
 * is being eaten: server.c then pauses accepting.
 */
#define _GNU_SOURCE
#include "server.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

/* True when a descriptor below the reserve is free now: the lowest free number is what
 * F_DUPFD hands out. */
bool server_descriptor_free(const crpc_server *srv, int any_fd)
{
    if (srv->fd_ceiling == INT_MAX)
        return true;
    int probe = fcntl(any_fd, F_DUPFD_CLOEXEC, 0);
    if (probe < 0)
        return false;
    close(probe);
    return probe < srv->fd_ceiling;
}

/* Descriptors open in the process now and numbered below `below` (one numbered past the
 * limit, inherited from a parent with a higher one, takes no number we could use). */
static uint64_t open_descriptors(uint64_t below)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    int own = dirfd(d);
    uint64_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        long fd = strtol(e->d_name, NULL, 10);
        n += fd != own && (uint64_t)fd < below;
    }
    closedir(d);
    return n;
}

/* Raises the soft descriptor limit to the hard one (where allowed) and picks the reserve.
 * Before the loops start, so their own descriptors come out of the raised limit. */
void server_apply_fd_limits(crpc_server *srv)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        srv->fd_ceiling = INT_MAX;
        return;
    }
    srv->limits.fd_limit_before = rl.rlim_cur;
    if (!srv->cfg.keep_fd_limit && rl.rlim_cur < rl.rlim_max) {
        struct rlimit raised = rl;
        raised.rlim_cur = rl.rlim_max;
        if (rl.rlim_max == RLIM_INFINITY) {
            /* An unlimited hard limit still stops at fs.nr_open. */
            unsigned long nr_open = 1u << 20;
            FILE *f = fopen("/proc/sys/fs/nr_open", "r");
            if (f) {
                if (fscanf(f, "%lu", &nr_open) != 1)
                    nr_open = 1u << 20;
                fclose(f);
            }
            raised.rlim_cur = nr_open > rl.rlim_cur ? nr_open : rl.rlim_cur;
        }
        if (raised.rlim_cur > rl.rlim_cur && setrlimit(RLIMIT_NOFILE, &raised) == 0)
            rl = raised;
    }
    uint64_t limit = rl.rlim_cur == RLIM_INFINITY ? (uint64_t)INT_MAX : (uint64_t)rl.rlim_cur;
    srv->limits.fd_limit = limit;
    uint64_t reserve = 0;
    if (srv->cfg.fd_reserve > 0)
        reserve = (uint64_t)srv->cfg.fd_reserve;
    else if (srv->cfg.fd_reserve == 0)
        reserve = limit / 8 < 32 ? 32 : limit / 8 > 1024 ? 1024 : limit / 8;
    if (reserve > limit / 2)
        reserve = limit / 2; /* a reserve that leaves nothing would never accept */
    srv->limits.fd_reserve = (uint32_t)reserve;
    srv->fd_ceiling = srv->cfg.fd_reserve == CRPC_FD_RESERVE_NONE || limit > INT_MAX
                          ? INT_MAX : (int)(limit > reserve ? limit - reserve : 0);
}

/* Lowers max_connections to what is left beside the reserve and what the process holds
 * once the loops run. */
void server_limit_connections(crpc_server *srv)
{
    uint64_t limit = srv->limits.fd_limit, reserve = srv->limits.fd_reserve;
    uint64_t ceiling = limit > reserve ? limit - reserve : 0;
    uint64_t used = open_descriptors(ceiling) + 2u * srv->nloops;
    uint64_t room = ceiling > used ? ceiling - used : 1;
    if (!limit)
        room = UINT32_MAX; /* the limit could not be read */
    srv->limits.max_connections = srv->cfg.max_connections < room ? srv->cfg.max_connections : (uint32_t)room;
    srv->cfg.max_connections = srv->limits.max_connections;
}

void crpc_server_get_limits(const crpc_server *srv, crpc_server_limits *out) { *out = srv->limits; }
