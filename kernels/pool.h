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
 * The caller waits for the job's tasks, never for the workers: a worker that
 * sleeps, or that the OS has not scheduled yet, finds the work done when it
 * wakes and goes back to waiting. (Waiting for every worker to acknowledge each
 * job cost ~1 ms a call on a busy 2-core machine, more than the job itself.)
 * So that a late worker cannot take a task of a later job by mistake, a task is
 * claimed with one compare-and-swap on a ticket holding the job's number and
 * the next task's index: the swap succeeds only while that job still has
 * unclaimed tasks, and until then its owner does not post another.
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

/* the ticket: job number in the high 32 bits, next task index in the low 32 */
#define IQ1Q_POOL_JOB(ticket) ((uint32_t)((ticket) >> 32))
#define IQ1Q_POOL_TASK(ticket) ((int64_t)((ticket) & 0xffffffffu))

static struct {
    pthread_mutex_t owner; /* held by the caller whose job runs */
    pthread_mutex_t lock;  /* guards the sleep/wake handshakes */
    pthread_cond_t wake, done;
    int nworkers, sleepers, waiting; /* waiting: the owner sleeps until the tasks are done */
    uint32_t born[IQ1Q_POOL_MAX_WORKERS]; /* the job number when each worker was started */
    /* the job, written by its owner before the ticket of its number is posted; atomics
     * because a late worker may read them while the next owner writes (it then fails to
     * claim a task and drops what it read) */
    _Atomic(iq1q_task_fn) fn;
    _Atomic(void *) ctx;
    _Atomic int64_t ntasks;
    _Atomic int active; /* workers with an index below this take tasks */
    _Atomic uint64_t ticket;
    _Atomic int64_t finished; /* tasks of the job done */
} iq1q_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
               PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};

static int64_t iq1q_pool_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Run tasks of job `job` until none is left to claim (or a later job is posted). */
static void iq1q_pool_work(uint32_t job) {
    const iq1q_task_fn fn = atomic_load_explicit(&iq1q_pool.fn, memory_order_relaxed);
    void *const ctx = atomic_load_explicit(&iq1q_pool.ctx, memory_order_relaxed);
    const int64_t ntasks = atomic_load_explicit(&iq1q_pool.ntasks, memory_order_relaxed);
    uint64_t cur = atomic_load_explicit(&iq1q_pool.ticket, memory_order_acquire);
    while (IQ1Q_POOL_JOB(cur) == job && IQ1Q_POOL_TASK(cur) < ntasks) {
        /* success proves job `job` was still unfinished, so fn, ctx and ntasks were its own */
        if (!atomic_compare_exchange_weak_explicit(&iq1q_pool.ticket, &cur, cur + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        fn(ctx, IQ1Q_POOL_TASK(cur));
        if (atomic_fetch_add_explicit(&iq1q_pool.finished, 1, memory_order_acq_rel) + 1 == ntasks) {
            pthread_mutex_lock(&iq1q_pool.lock);
            if (iq1q_pool.waiting) pthread_cond_signal(&iq1q_pool.done);
            pthread_mutex_unlock(&iq1q_pool.lock);
        }
        cur = atomic_load_explicit(&iq1q_pool.ticket, memory_order_acquire);
    }
}

static void *iq1q_pool_worker(void *arg) {
    const int index = (int)(intptr_t)arg;
    /* the job number before the job this worker was started for: it may start late */
    uint32_t seen = iq1q_pool.born[index];
    for (;;) {
        /* spin, then sleep, until a job is posted */
        const int64_t until = iq1q_pool_now_ns() + IQ1Q_POOL_SPIN_NS;
        int spins = 0;
        while (IQ1Q_POOL_JOB(atomic_load_explicit(&iq1q_pool.ticket, memory_order_acquire)) == seen) {
            IQ1Q_POOL_RELAX();
            if (++spins % 64 == 0 && iq1q_pool_now_ns() > until) {
                pthread_mutex_lock(&iq1q_pool.lock);
                ++iq1q_pool.sleepers;
                while (IQ1Q_POOL_JOB(atomic_load_explicit(&iq1q_pool.ticket, memory_order_acquire)) == seen)
                    pthread_cond_wait(&iq1q_pool.wake, &iq1q_pool.lock);
                --iq1q_pool.sleepers;
                pthread_mutex_unlock(&iq1q_pool.lock);
                break;
            }
        }
        seen = IQ1Q_POOL_JOB(atomic_load_explicit(&iq1q_pool.ticket, memory_order_acquire));
        if (index < atomic_load_explicit(&iq1q_pool.active, memory_order_relaxed)) iq1q_pool_work(seen);
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
        iq1q_pool.born[iq1q_pool.nworkers] = IQ1Q_POOL_JOB(atomic_load(&iq1q_pool.ticket));
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
    /* serial: one thread, the pool busy, or more tasks than a ticket counts */
    if (nthreads <= 1 || ntasks >= ((int64_t)1 << 31) || pthread_mutex_trylock(&iq1q_pool.owner) != 0) {
        for (int64_t t = 0; t < ntasks; ++t) fn(ctx, t);
        return;
    }
    iq1q_pool_grow(nthreads - 1);
    atomic_store_explicit(&iq1q_pool.fn, fn, memory_order_relaxed);
    atomic_store_explicit(&iq1q_pool.ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&iq1q_pool.ntasks, ntasks, memory_order_relaxed);
    atomic_store_explicit(&iq1q_pool.active, nthreads - 1, memory_order_relaxed);
    atomic_store_explicit(&iq1q_pool.finished, 0, memory_order_relaxed);
    const uint32_t job = IQ1Q_POOL_JOB(atomic_load_explicit(&iq1q_pool.ticket, memory_order_relaxed)) + 1;
    atomic_store_explicit(&iq1q_pool.ticket, (uint64_t)job << 32, memory_order_release);
    pthread_mutex_lock(&iq1q_pool.lock);
    if (iq1q_pool.sleepers) pthread_cond_broadcast(&iq1q_pool.wake);
    pthread_mutex_unlock(&iq1q_pool.lock);
    iq1q_pool_work(job);
    /* the tasks other threads took: spin briefly, then sleep until the last is done */
    for (int spins = 0; atomic_load_explicit(&iq1q_pool.finished, memory_order_acquire) < ntasks; ++spins) {
        if (spins < (1 << 14)) {
            IQ1Q_POOL_RELAX();
            continue;
        }
        pthread_mutex_lock(&iq1q_pool.lock);
        iq1q_pool.waiting = 1;
        while (atomic_load_explicit(&iq1q_pool.finished, memory_order_acquire) < ntasks)
            pthread_cond_wait(&iq1q_pool.done, &iq1q_pool.lock);
        iq1q_pool.waiting = 0;
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
    iq1q_pool.nworkers = iq1q_pool.sleepers = iq1q_pool.waiting = 0;
}

static int iq1q_pool_init(void) {
    return pthread_atfork(iq1q_pool_before_fork, iq1q_pool_after_fork_parent, iq1q_pool_after_fork_child);
}

#endif /* IQ1Q_POOL_IMPLEMENTATION */
#endif /* IQ1Q_POOL_H */
