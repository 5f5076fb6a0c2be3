//! The supervisor of a process's background loops, and their readiness.
//!
//! Every loop (a queue consumer, the outbox relay, the reconciler, the MLflow loops, the
//! gauges, the API's activity flush…) runs under [`Tasks`]: when it panics or returns before
//! the stop signal, the supervisor logs it, counts it in
//! `hokusai_task_restarts_total{task}` and starts it again after a [`Backoff`] delay (1 s
//! doubling to 30 s; a run that lasted a minute resets the delay). Each loop beats a
//! [`Heartbeat`] once per unit of work; [`Tasks::readiness`] reports, per loop, the seconds
//! since its last beat, and the process is ready while every loop beat within **3× its
//! period** — counted from the loop's (re)start, so a loop is never stalled before its first
//! run and `/ready` is 200 at start-up.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Backoff, Shutdown};
use crate::telemetry::metrics::names;

/// Delays between restarts of a loop.
const RESTART: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
/// A run at least this long resets the restart delay.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// A loop is stalled after missing its beat by this many periods.
const GRACE_PERIODS: u32 = 3;

/// Where a loop stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Running and beating.
    Running,
    /// Running, but its last beat is older than 3× its period.
    Stalled,
    /// Ended unexpectedly; waiting to be started again.
    Restarting,
    /// Ended because the process is stopping.
    Stopped,
}

/// One loop in [`Readiness`].
#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    /// Where it stands.
    pub state: TaskState,
    /// Seconds since its last heartbeat, or since it (re)started when it has not beaten yet.
    pub seconds_since_heartbeat: f64,
    /// Its period: it beats at least this often when healthy.
    pub period_seconds: f64,
    /// Times the supervisor restarted it.
    pub restarts: u64,
    /// Units of work done (heartbeats).
    pub beats: u64,
    /// Ticks a leader-only loop skipped because this process did not lead.
    pub skipped: u64,
}

/// Every loop of a process, by name.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// Whether every loop is running and beating.
    pub ready: bool,
    /// Per loop.
    pub tasks: BTreeMap<String, TaskReport>,
}

impl Readiness {
    /// The names of the loops that make the process unready.
    pub fn failing(&self) -> Vec<&str> {
        self.tasks
            .iter()
            .filter(|(_, t)| t.state != TaskState::Running)
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

#[derive(Debug)]
struct Entry {
    period: Duration,
    started: Instant,
    last_beat: Option<Instant>,
    state: TaskState,
    restarts: u64,
    beats: u64,
    skipped: u64,
}

type Registry = Arc<Mutex<BTreeMap<String, Entry>>>;

fn with_entry(registry: &Registry, name: &str, f: impl FnOnce(&mut Entry)) {
    if let Some(entry) = registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_mut(name)
    {
        f(entry);
    }
}

/// A loop's heartbeat: [`Heartbeat::beat`] once per unit of work.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    registry: Registry,
    name: Arc<str>,
}

impl Heartbeat {
    /// The loop is alive and did one unit of work.
    pub fn beat(&self) {
        with_entry(&self.registry, &self.name, |e| {
            e.last_beat = Some(Instant::now());
            e.beats += 1;
        });
    }

    /// The loop is alive but skipped its work (a leader-only loop on a follower).
    pub fn skip(&self) {
        with_entry(&self.registry, &self.name, |e| {
            e.last_beat = Some(Instant::now());
            e.skipped += 1;
        });
    }

    /// The loop's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The supervisor of one process's loops. Cheap to clone; clones share the loops.
#[derive(Clone)]
pub struct Tasks {
    registry: Registry,
    shutdown: Shutdown,
    handles: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Other registries reported with this one (`dev`: the worker's loops on the API's
    /// `/ready`).
    also: Arc<Mutex<Vec<Tasks>>>,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks").finish_non_exhaustive()
    }
}

impl Tasks {
    /// A supervisor whose loops stop on `shutdown`.
    pub fn new(shutdown: Shutdown) -> Self {
        Self {
            registry: Registry::default(),
            shutdown,
            handles: Arc::default(),
            also: Arc::default(),
        }
    }

    /// The stop signal its loops get.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Reports `other`'s loops with these ones.
    pub fn report_with(&self, other: &Tasks) {
        self.also
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(other.clone());
    }

    /// Runs `run` as the loop `name` until the stop signal, starting it again whenever it
    /// panics or returns early. `period`: how often it beats when healthy.
    pub fn supervise<F, Fut>(&self, name: impl Into<String>, period: Duration, run: F)
    where
        F: Fn(Heartbeat, Shutdown) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name: Arc<str> = name.into().into();
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                name.to_string(),
                Entry {
                    period,
                    started: Instant::now(),
                    last_beat: None,
                    state: TaskState::Running,
                    restarts: 0,
                    beats: 0,
                    skipped: 0,
                },
            );
        let heartbeat = Heartbeat {
            registry: self.registry.clone(),
            name: name.clone(),
        };
        let shutdown = self.shutdown.clone();
        let registry = self.registry.clone();
        let handle = tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let began = Instant::now();
                with_entry(&registry, &name, |e| {
                    e.started = began;
                    e.state = TaskState::Running;
                });
                let outcome = tokio::spawn(run(heartbeat.clone(), shutdown.clone())).await;
                if shutdown.is_triggered() {
                    with_entry(&registry, &name, |e| e.state = TaskState::Stopped);
                    return;
                }
                let why = match outcome {
                    Ok(()) => "returned before the process stopped".to_owned(),
                    Err(error) if error.is_panic() => {
                        format!("panicked: {}", panic_message(error.into_panic()))
                    }
                    Err(error) => format!("was cancelled: {error}"),
                };
                if began.elapsed() >= HEALTHY_RUN {
                    failures = 0;
                }
                let delay = RESTART.delay(failures);
                failures = failures.saturating_add(1);
                tracing::error!(task = %name, why, restart_in = ?delay, "background task ended; restarting it");
                metrics::counter!(names::TASK_RESTARTS, "task" => name.to_string()).increment(1);
                with_entry(&registry, &name, |e| {
                    e.state = TaskState::Restarting;
                    e.restarts += 1;
                });
                if shutdown.sleep(delay).await {
                    with_entry(&registry, &name, |e| e.state = TaskState::Stopped);
                    return;
                }
            }
        });
        self.handles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
    }

    /// The one periodic-task runner: `tick` now and then every `period` (missed ticks are
    /// skipped, not bunched), under supervision. A failed tick is logged and the loop goes
    /// on; `leading`, when given, is asked before each tick and a follower skips it.
    pub fn every<F, Fut>(
        &self,
        name: impl Into<String>,
        period: Duration,
        leading: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
        tick: F,
    ) where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let tick = Arc::new(tick);
        self.supervise(name, period, move |heartbeat, shutdown| {
            let tick = tick.clone();
            let leading = leading.clone();
            async move {
                let mut interval = tokio::time::interval(period);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = interval.tick() => {}
                        () = shutdown.wait() => return,
                    }
                    if leading.as_ref().is_some_and(|leads| !leads()) {
                        heartbeat.skip();
                        continue;
                    }
                    if let Err(error) = tick().await {
                        tracing::warn!(task = heartbeat.name(), error = %format!("{error:#}"), "periodic task failed; it runs again next period");
                    }
                    heartbeat.beat();
                }
            }
        });
    }

    /// Every loop's state now, with the registries reported alongside.
    pub fn readiness(&self) -> Readiness {
        let now = Instant::now();
        let mut tasks = BTreeMap::new();
        for (name, entry) in self
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let since = now.saturating_duration_since(
                entry.last_beat.unwrap_or(entry.started).max(entry.started),
            );
            let state = match entry.state {
                TaskState::Running if since > entry.period * GRACE_PERIODS => TaskState::Stalled,
                state => state,
            };
            tasks.insert(
                name.clone(),
                TaskReport {
                    state,
                    seconds_since_heartbeat: (since.as_secs_f64() * 10.0).round() / 10.0,
                    period_seconds: entry.period.as_secs_f64(),
                    restarts: entry.restarts,
                    beats: entry.beats,
                    skipped: entry.skipped,
                },
            );
        }
        for other in self.also.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            tasks.extend(other.readiness().tasks);
        }
        let ready = tasks.values().all(|t| t.state == TaskState::Running);
        Readiness { ready, tasks }
    }

    /// Waits for every loop to end (after the stop signal).
    pub async fn join(&self) {
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for handle in handles {
            if let Err(error) = handle.await {
                tracing::error!(%error, "a supervisor ended abnormally");
            }
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::super::ShutdownTrigger;
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_loop_is_restarted_and_counted() {
        let trigger = ShutdownTrigger::new();
        let tasks = Tasks::new(trigger.subscribe());
        let runs = Arc::new(AtomicU32::new(0));
        tasks.supervise("flaky", Duration::from_secs(1), {
            let runs = runs.clone();
            move |heartbeat, shutdown| {
                let runs = runs.clone();
                async move {
                    if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                        panic!("first run fails");
                    }
                    loop {
                        heartbeat.beat();
                        if shutdown.sleep(Duration::from_millis(100)).await {
                            return;
                        }
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let report = tasks.readiness();
        assert!(!report.ready, "{report:?}");
        assert_eq!(report.tasks["flaky"].state, TaskState::Restarting);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let report = tasks.readiness();
        assert!(report.ready, "{report:?}");
        assert_eq!(report.tasks["flaky"].restarts, 1);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        trigger.trigger();
        tasks.join().await;
        assert_eq!(tasks.readiness().tasks["flaky"].state, TaskState::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_that_stops_beating_is_stalled_after_three_periods_only() {
        let trigger = ShutdownTrigger::new();
        let tasks = Tasks::new(trigger.subscribe());
        tasks.supervise(
            "stuck",
            Duration::from_secs(1),
            |_heartbeat, shutdown| async move {
                shutdown.wait().await;
            },
        );
        tokio::time::sleep(Duration::from_millis(2_900)).await;
        assert!(tasks.readiness().ready, "not stalled before 3 periods");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let report = tasks.readiness();
        assert_eq!(report.failing(), ["stuck"]);
        assert_eq!(report.tasks["stuck"].state, TaskState::Stalled);
        trigger.trigger();
        tasks.join().await;
    }

    #[tokio::test(start_paused = true)]
    async fn every_runs_at_once_then_each_period_and_followers_skip() {
        let trigger = ShutdownTrigger::new();
        let tasks = Tasks::new(trigger.subscribe());
        let ticks = Arc::new(AtomicU32::new(0));
        let counted = ticks.clone();
        tasks.every(
            "leader-only",
            Duration::from_secs(10),
            Some(Arc::new(|| false)),
            move || {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            },
        );
        let counted = ticks.clone();
        tasks.every("everyone", Duration::from_secs(10), None, move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(100, Ordering::SeqCst);
                anyhow::bail!("failing ticks keep the loop going")
            }
        });
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 300);
        let report = tasks.readiness();
        assert_eq!(report.tasks["leader-only"].skipped, 3);
        assert_eq!(report.tasks["everyone"].beats, 3);
        assert!(report.ready);
        trigger.trigger();
        tasks.join().await;
    }
}
