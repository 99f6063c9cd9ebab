/* pool.h: one process-wide pool of worker threads for every kernel module.
 *
 *   iq1q_pool_run(fn, ctx, ntasks, nthreads) calls fn(ctx, t) for each task
 *   t in [0, ntasks) on up to nthreads threads, the caller's included, and
 *   returns when all are done.
 *
 * Why not Python threads or OpenMP: a Python thread pool costs tens of
 * microseconds per call, more than a small GEMV; GNU OpenMP hangs in a child
 * process forked after the parent used it. Workers here spin briefly after a
 * job (back-to-back calls then start within a microsecond) and then sleep.
 *
 * Tasks are dealt dynamically (an atomic counter), so the split adapts to a
 * busy core; each task computes its own fixed rows, so results never depend
 * on the thread count or on which thread ran what.
 *
 * Concurrent callers: one job owns the pool at a time; a caller that finds it
 * busy (another Python thread, or a task calling back in) runs its tasks
 * itself, serially. fork(): the child starts with an empty pool, rebuilt on
 * its first parallel call; the parent waits for a running job first.
 *
 * Only the iq1q._pool module defines IQ1Q_POOL_IMPLEMENTATION; the kernel
 * modules get iq1q_pool_run's address from it (a capsule), so the process
 * has one pool whatever the number of kernel modules.
 */
#ifndef IQ1Q_POOL_H
#define IQ1Q_POOL_H

#include <stdint.h>

typedef void (*iq1q_task_fn)(void *ctx, int64_t task);
typedef void (*iq1q_pool_run_fn)(iq1q_task_fn fn, void *ctx, int64_t ntasks, int nthreads);

#ifdef IQ1Q_POOL_IMPLEMENTATION

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define IQ1Q_POOL_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define IQ1Q_POOL_RELAX() __asm__ __volatile__("yield")
#else
#define IQ1Q_POOL_RELAX() ((void)0)
#endif

enum { IQ1Q_POOL_MAX_WORKERS = 255 };
/* how long an idle worker spins before it sleeps (nanoseconds) */
#define IQ1Q_POOL_SPIN_NS 200000

static struct {
    pthread_mutex_t owner; /* held by the caller whose job runs */
    pthread_mutex_t lock;  /* guards the sleep/wake handshake */
    pthread_cond_t wake, done;
    int nworkers, sleepers;
    unsigned born[IQ1Q_POOL_MAX_WORKERS]; /* gen when each worker was started */
    /* the job: written by its owner before gen is bumped */
    iq1q_task_fn fn;
    void *ctx;
    int64_t ntasks;
    int active; /* workers with an index below this take tasks */
    _Atomic int64_t next;
    _Atomic int pending; /* workers that have not yet finished the job */
    _Atomic unsigned gen;
} iq1q_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
               PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};

static int64_t iq1q_pool_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void iq1q_pool_work(void) {
    int64_t t;
    while ((t = atomic_fetch_add_explicit(&iq1q_pool.next, 1, memory_order_relaxed)) < iq1q_pool.ntasks)
        iq1q_pool.fn(iq1q_pool.ctx, t);
}

static void *iq1q_pool_worker(void *arg) {
    const int index = (int)(intptr_t)arg;
    /* the generation before the job this worker was started for: it may start late */
    unsigned seen = iq1q_pool.born[index];
    for (;;) {
        /* spin, then sleep, until the next job */
        const int64_t until = iq1q_pool_now_ns() + IQ1Q_POOL_SPIN_NS;
        int spins = 0;
        while (atomic_load_explicit(&iq1q_pool.gen, memory_order_acquire) == seen) {
            IQ1Q_POOL_RELAX();
            if (++spins % 64 == 0 && iq1q_pool_now_ns() > until) {
                pthread_mutex_lock(&iq1q_pool.lock);
                ++iq1q_pool.sleepers;
                while (atomic_load_explicit(&iq1q_pool.gen, memory_order_acquire) == seen)
                    pthread_cond_wait(&iq1q_pool.wake, &iq1q_pool.lock);
                --iq1q_pool.sleepers;
                pthread_mutex_unlock(&iq1q_pool.lock);
                break;
            }
        }
        seen = atomic_load_explicit(&iq1q_pool.gen, memory_order_acquire);
        if (index < iq1q_pool.active) iq1q_pool_work();
        if (atomic_fetch_sub_explicit(&iq1q_pool.pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&iq1q_pool.lock);
            pthread_cond_signal(&iq1q_pool.done);
            pthread_mutex_unlock(&iq1q_pool.lock);
        }
    }
    return NULL;
}

/* Start workers until there are `want`; returns how many there are. */
static int iq1q_pool_grow(int want) {
    if (want > IQ1Q_POOL_MAX_WORKERS) want = IQ1Q_POOL_MAX_WORKERS;
    while (iq1q_pool.nworkers < want) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        iq1q_pool.born[iq1q_pool.nworkers] = atomic_load(&iq1q_pool.gen);
        const int err = pthread_create(&th, &attr, iq1q_pool_worker, (void *)(intptr_t)iq1q_pool.nworkers);
        pthread_attr_destroy(&attr);
        if (err) break; /* run with the workers there are */
        ++iq1q_pool.nworkers;
    }
    return iq1q_pool.nworkers;
}

static void iq1q_pool_run(iq1q_task_fn fn, void *ctx, int64_t ntasks, int nthreads) {
    if (ntasks <= 0) return;
    if (nthreads > ntasks) nthreads = (int)ntasks;
    if (nthreads <= 1 || pthread_mutex_trylock(&iq1q_pool.owner) != 0) {
        for (int64_t t = 0; t < ntasks; ++t) fn(ctx, t);
        return;
    }
    const int workers = iq1q_pool_grow(nthreads - 1);
    iq1q_pool.fn = fn;
    iq1q_pool.ctx = ctx;
    iq1q_pool.ntasks = ntasks;
    iq1q_pool.active = nthreads - 1;
    atomic_store_explicit(&iq1q_pool.next, 0, memory_order_relaxed);
    atomic_store_explicit(&iq1q_pool.pending, workers, memory_order_relaxed);
    pthread_mutex_lock(&iq1q_pool.lock);
    atomic_fetch_add_explicit(&iq1q_pool.gen, 1, memory_order_release);
    if (iq1q_pool.sleepers) pthread_cond_broadcast(&iq1q_pool.wake);
    pthread_mutex_unlock(&iq1q_pool.lock);
    iq1q_pool_work();
    /* every worker acknowledges the job before the next one may be posted */
    for (int spins = 0; atomic_load_explicit(&iq1q_pool.pending, memory_order_acquire) > 0; ++spins) {
        if (spins < (1 << 16)) {
            IQ1Q_POOL_RELAX();
            continue;
        }
        pthread_mutex_lock(&iq1q_pool.lock);
        while (atomic_load_explicit(&iq1q_pool.pending, memory_order_acquire) > 0)
            pthread_cond_wait(&iq1q_pool.done, &iq1q_pool.lock);
        pthread_mutex_unlock(&iq1q_pool.lock);
    }
    pthread_mutex_unlock(&iq1q_pool.owner);
}

/* fork: the parent lets a running job finish; the child has no workers. */
static void iq1q_pool_before_fork(void) { pthread_mutex_lock(&iq1q_pool.owner); }
static void iq1q_pool_after_fork_parent(void) { pthread_mutex_unlock(&iq1q_pool.owner); }
static void iq1q_pool_after_fork_child(void) {
    pthread_mutex_init(&iq1q_pool.owner, NULL);
    pthread_mutex_init(&iq1q_pool.lock, NULL);
    pthread_cond_init(&iq1q_pool.wake, NULL);
    pthread_cond_init(&iq1q_pool.done, NULL);
    iq1q_pool.nworkers = iq1q_pool.sleepers = 0;
    atomic_store(&iq1q_pool.pending, 0);
}

static int iq1q_pool_init(void) {
    return pthread_atfork(iq1q_pool_before_fork, iq1q_pool_after_fork_parent, iq1q_pool_after_fork_child);
}

#endif /* IQ1Q_POOL_IMPLEMENTATION */
#endif /* IQ1Q_POOL_H */
