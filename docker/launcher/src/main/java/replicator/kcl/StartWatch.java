package replicator.kcl;

import java.util.concurrent.locks.LockSupport;
import software.amazon.kinesis.coordinator.WorkerStateChangeListener;

/**
 * Whether the KCL's scheduler has finished starting, for the shutdown hook: a stop asked
 * for before then cannot use the KCL's stops, and needs none.
 *
 * <p>KCL 3.1.3's {@code Scheduler.initialize()} holds the scheduler's lock from its first
 * lease-table check to "Initialization complete": a new task's worker spends a random
 * 1-30 s of it waiting for another worker to fill the new lease table, and a worker whose
 * DynamoDB fails retries in it. {@code startGracefulShutdown()} (whose worker stop calls
 * {@code shutdown()}) and {@code shutdown()} both wait for that lock, and the stop that then
 * runs meets the lease assignment manager's first run mid-way: interrupted in its first
 * leader-lock acquisition, that run goes on retrying, and the stop waits up to a minute
 * for its thread pool: a stop asked for during start-up would run past its grace time
 * and end as a failed stop. Before the scheduler has started no processor has run, so
 * there is nothing to checkpoint: the hook lets the JVM exit at once instead
 * ({@link #abandonIfStarting}).
 *
 * <p>It takes the place of the coordinator configuration's listener, which by default does
 * nothing and which no multilang property sets.
 */
final class StartWatch implements WorkerStateChangeListener {
    private boolean started;
    private boolean abandoned;

    /**
     * True when the scheduler has not started, and from then on never will: the JVM is
     * exiting, and a scheduler that finished starting in the moment before the exit would
     * run processors that the exit abandons. False once it has started: the graceful stop
     * applies.
     */
    synchronized boolean abandonIfStarting() {
        if (!started) {
            abandoned = true;
        }
        return abandoned;
    }

    private synchronized boolean markStarted() {
        started = !abandoned;
        return started;
    }

    @Override
    public void onWorkerStateChange(WorkerState newState) {
        if (newState == WorkerState.STARTED && !markStarted()) {
            // Held here until the JVM halts, before the worker loop starts any processor.
            while (true) {
                LockSupport.park(this);
            }
        }
    }
}
