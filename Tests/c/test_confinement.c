/*
 * test_confinement.c — debug builds check the threading rule: a loop-thread-only function
 * called from another thread while the loop runs aborts with a message naming it (and on
 * the loop's own thread, or before the loop starts, it does not). Run in a child process,
 * so the abort is observed rather than suffered. The C tests build with CRPC_DEBUG.
 */
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "core.h"

static void flush_on_loop(void *arg) { crpc_loop_flush(arg); }

int main(void)
{
    crpc_loop *loop;
    CHECK_EQ(crpc_loop_create(NULL, &loop), 0);
    crpc_loop_flush(loop); /* not started yet: the caller is the only thread, no check */
    int err = crpc_loop_start(loop);
    SKIP_IF_NO_URING(err);
    CHECK_EQ(err, 0);
    CHECK_EQ(crpc_loop_post(loop, flush_on_loop, loop), 0); /* on its thread: fine */
    usleep(50000);

    fflush(stdout);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        /* The fork copied the loop's state as running, but not its thread: this thread is
         * not the loop's, so the check must fire. */
        crpc_loop_flush(loop);
        _exit(0); /* reached only if the check is missing */
    }
    int status;
    CHECK_EQ(waitpid(child, &status, 0), child);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    printf("confinement: crpc_loop_flush off its loop's thread aborted, on it ran\n");

    CHECK_EQ(crpc_loop_stop(loop), 0);
    crpc_loop_destroy(loop);
    printf("PASS test_confinement\n");
    return 0;
}
