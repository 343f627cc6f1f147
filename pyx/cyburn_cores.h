/* How many CPUs are running threads other than the caller, for the kernels' team size.
 *
 * After a matrix product, OpenBLAS's idle threads keep spinning for about 2^28 cycles (a
 * tenth of a second), and other libraries' OpenMP threads for milliseconds: a kernel team
 * started meanwhile shares a core with one of them, its thread on that core gets a fraction
 * of it, and the team waits for that thread. Linux counts the threads that are running or
 * ready to run, machine-wide, in /proc/loadavg (the fourth field, "running/total"); a
 * spinning thread is one of them, a sleeping one is not. Reading it costs about a
 * microsecond (one pread of an open descriptor).
 */
#ifndef CYBURN_CORES_H
#define CYBURN_CORES_H

#include <time.h>
#if defined(__linux__)
#include <fcntl.h>
#include <unistd.h>
#endif

/* Seconds on a monotonic clock. */
static inline double cyb_monotonic_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Threads running or ready to run on the machine, the caller included; -1 when the system
 * does not say (not Linux, or /proc unreadable). */
static inline int cyb_running_threads(void)
{
#if defined(__linux__)
    static int fd = -2;                 /* -2: not opened yet; -1: cannot be */
    char text[128], *p = text;
    ssize_t length;
    int field = 0, running = 0;
    if (fd == -2) {
        int opened = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
        int expected = -2;
        if (!__atomic_compare_exchange_n(&fd, &expected, opened, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE) && opened >= 0)
            close(opened);              /* another thread opened it first */
    }
    if (fd < 0)
        return -1;
    length = pread(fd, text, sizeof text - 1, 0);
    if (length <= 0)
        return -1;
    text[length] = '\0';
    while (field < 3 && *p)             /* "0.52 0.58 0.59 2/121 3008": skip three fields */
        if (*p++ == ' ')
            field++;
    if (*p < '0' || *p > '9')
        return -1;
    while (*p >= '0' && *p <= '9')
        running = 10 * running + (*p++ - '0');
    return *p == '/' ? running : -1;
#else
    return -1;
#endif
}

/* Online CPUs, or -1 when the system does not say. */
static inline int cyb_online_cpus(void)
{
#if defined(__linux__)
    return (int)sysconf(_SC_NPROCESSORS_ONLN);
#else
    return -1;
#endif
}

#endif
