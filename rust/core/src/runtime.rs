//! The control thread: owns the PCS client and the Controller, runs one cycle every period and
//! one more on every command, and publishes what happened without ever waiting for its reader.
//!
//! - Timing: `recv_deadline(next_tick)` on the command channel wakes at once for a command and
//!   otherwise at the next absolute tick, so the period does not drift. A periodic cycle that ends
//!   past the following tick skips the ticks it missed and counts them as overruns; command cycles
//!   never move the periodic schedule.
//! - Scheduling: the thread asks for SCHED_FIFO (priority `RT_PRIORITY`) when it starts, so a
//!   saturated OCPP side (the gateway's own event loop, or anything else on a small box) cannot
//!   delay its ticks; where that is not permitted (no CAP_SYS_NICE, RLIMIT_RTPRIO 0) it stays a
//!   normal thread and says so in `Health::scheduling`. It blocks on the channel or a socket
//!   between ticks, so a real-time priority takes a few hundred microseconds per cycle at most.
//! - Each cycle: the FC3 reads of the PCS profile (`profile::PcsMap`: one block for generic,
//!   several for sunspec) -> decode -> `Controller::step_input` -> the profile's FC16 writes (run,
//!   setpoint, watchdog, fault reset). For sunspec the layout is discovered (`sunspec::discover`)
//!   whenever the connection is new, before the cycle's reads, and the PCS-side reversion
//!   (WSetRvrt, WSetRvrtTms) is written once per connection. Each request's deadline is
//!   `min(pcs_timeout, max(period, 50 ms))`, so a silent PCS delays a cycle but never stops the loop.
//! - Link: with no valid answer for `pcs_timeout_ms` the controller is stepped with `None` (sessions
//!   suspended, setpoint 0); nothing is written while the link is down, and the controller makes
//!   the first write after it comes back a 0.
//! - The cycle itself (reads, step, writes, the first-write, write-fault and reversion rules) is
//!   `engine::Engine`, which tests also run without a thread or a socket.
//! - A panic in the thread is caught: the engine makes a best-effort 0 W write, the snapshot says
//!   `running = false` with the panic's message in `Health::failure`, and `Event::ControlFailed`
//!   goes out, so the process can mark everything Faulted and exit for systemd to restart it.
//! - Out: the snapshot sits behind a mutex, replaced after each cycle; then the cycle's events go
//!   to a bounded queue and one byte goes down a non-blocking socketpair when the queue turns
//!   non-empty, so a reader polling the other end (asyncio `add_reader`) wakes once per batch and
//!   finds a snapshot at least as new as the events. The thread never touches Python, so joining
//!   it cannot deadlock on the GIL.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::client::Client;
use crate::controller::{Command, CommandError, Event, StepOutput};
pub use crate::engine::Health;
use crate::engine::{Cycle, Engine, GridMeterLink, SystemClock};
use crate::params::ControlParams;

/// An event with the epoch time of the cycle that raised it.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedEvent {
    pub time_s: f64,
    pub event: Event,
}

/// Events kept for a reader that does not drain; beyond this the oldest are dropped and counted.
const MAX_QUEUED_EVENTS: usize = 10_000;
/// Periodic-cycle start delays kept for the jitter percentiles.
const JITTER_WINDOW: usize = 1024;
/// SCHED_FIFO priority of the control thread: above normal threads, below the kernel's own
/// real-time threads (50 for threaded IRQs) and anything an operator ranks higher.
pub const RT_PRIORITY: i32 = 10;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub step: StepOutput,
    pub health: Health,
}

#[derive(Debug)]
pub enum RuntimeError {
    AlreadyStarted,
    Stopped,
    Spawn(io::Error),
    Command(CommandError),
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyStarted => write!(f, "control loop already started"),
            Self::Stopped => write!(f, "control loop stopped"),
            Self::Spawn(e) => write!(f, "cannot start the control thread: {e}"),
            Self::Command(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RuntimeError {}

enum Msg {
    Command(Command),
    Stop,
    /// Fault injection for tests: the control thread panics in its next cycle.
    Panic,
}

struct Shared {
    snapshot: Mutex<Snapshot>,
    jitter: Mutex<JitterRing>,
    events: Mutex<VecDeque<TimedEvent>>,
    /// The thread's end of the wake socketpair (non-blocking).
    wake: UnixStream,
    /// False once the thread has ended (stopped, or failed on its own).
    alive: AtomicBool,
}

/// A lock that survives a panicked holder: the data are plain values, always consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn push_events(&self, time_s: f64, new: &[Event]) {
        if new.is_empty() {
            return;
        }
        let mut q = lock(&self.events);
        let was_empty = q.is_empty();
        let mut dropped = 0;
        for e in new {
            if q.len() >= MAX_QUEUED_EVENTS {
                q.pop_front();
                dropped += 1;
            }
            q.push_back(TimedEvent {
                time_s,
                event: e.clone(),
            });
        }
        // Written under the queue lock, so a reader that drains the socket under the same lock can
        // never consume this byte without also taking these events.
        if was_empty {
            // WouldBlock means the socket is full, so the reader is already woken.
            let _ = (&self.wake).write(&[1]);
        }
        drop(q);
        if dropped > 0 {
            lock(&self.snapshot).health.events_dropped += dropped;
        }
    }
}

#[derive(Default)]
struct JitterRing {
    samples: Vec<u64>,
    next: usize,
}

impl JitterRing {
    fn record(&mut self, us: u64) {
        if self.samples.len() < JITTER_WINDOW {
            self.samples.push(us);
        } else {
            self.samples[self.next] = us;
        }
        self.next = (self.next + 1) % JITTER_WINDOW;
    }

    /// (p99, max) over the window.
    fn stats(&self) -> (u64, u64) {
        if self.samples.is_empty() {
            return (0, 0);
        }
        let mut s = self.samples.clone();
        s.sort_unstable();
        let idx = ((s.len() as f64) * 0.99).ceil() as usize;
        (s[idx.clamp(1, s.len()) - 1], s[s.len() - 1])
    }
}

const NEW: u8 = 0;
const RUNNING: u8 = 1;
const STOPPED: u8 = 2;

/// Handle to the control thread. All methods take `&self` and never block on the thread except
/// `stop`.
pub struct Runtime {
    params: ControlParams,
    tx: Sender<Msg>,
    rx: Mutex<Option<Receiver<Msg>>>,
    shared: Arc<Shared>,
    handle: Mutex<Option<JoinHandle<()>>>,
    state: AtomicU8,
    /// The reader's end of the wake socketpair (non-blocking).
    reader: UnixStream,
}

impl Runtime {
    pub fn new(params: ControlParams) -> io::Result<Self> {
        let (wake, reader) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        reader.set_nonblocking(true)?;
        let (tx, rx) = unbounded();
        Ok(Self {
            params,
            tx,
            rx: Mutex::new(Some(rx)),
            shared: Arc::new(Shared {
                snapshot: Mutex::new(Snapshot::default()),
                jitter: Mutex::new(JitterRing::default()),
                events: Mutex::new(VecDeque::new()),
                wake,
                alive: AtomicBool::new(false),
            }),
            handle: Mutex::new(None),
            state: AtomicU8::new(NEW),
            reader,
        })
    }

    pub fn params(&self) -> &ControlParams {
        &self.params
    }

    /// Starts the control thread. Commands sent before are applied before its first cycle.
    pub fn start(&self) -> Result<(), RuntimeError> {
        match self
            .state
            .compare_exchange(NEW, RUNNING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {}
            Err(RUNNING) => return Err(RuntimeError::AlreadyStarted),
            Err(_) => return Err(RuntimeError::Stopped),
        }
        let Some(rx) = lock(&self.rx).take() else {
            return Err(RuntimeError::AlreadyStarted);
        };
        let mut worker = Worker::new(self.params.clone(), rx, Arc::clone(&self.shared));
        self.shared.alive.store(true, Ordering::Release);
        let handle = thread::Builder::new()
            .name("bess-control".into())
            .spawn(move || {
                let outcome = panic::catch_unwind(AssertUnwindSafe(|| worker.run()));
                if let Err(payload) = outcome {
                    worker.failed(&panic_message(payload.as_ref()));
                }
                worker.shared.alive.store(false, Ordering::Release);
            })
            .map_err(|e| {
                self.state.store(STOPPED, Ordering::Release);
                self.shared.alive.store(false, Ordering::Release);
                RuntimeError::Spawn(e)
            })?;
        *lock(&self.handle) = Some(handle);
        Ok(())
    }

    /// Queues a command; the thread wakes and runs a cycle with it at once. Invalid values are
    /// rejected here, so the caller sees the error.
    pub fn send(&self, cmd: Command) -> Result<(), RuntimeError> {
        cmd.validate().map_err(RuntimeError::Command)?;
        if self.state.load(Ordering::Acquire) == STOPPED {
            return Err(RuntimeError::Stopped);
        }
        self.tx
            .send(Msg::Command(cmd))
            .map_err(|_| RuntimeError::Stopped)
    }

    /// Stops the thread after its best-effort final write (setpoint 0, standby) and joins it.
    /// Blocks for at most one request deadline plus the current cycle. Idempotent.
    pub fn stop(&self) {
        self.state.store(STOPPED, Ordering::Release);
        let _ = self.tx.send(Msg::Stop);
        let handle = lock(&self.handle).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut s = lock(&self.shared.snapshot).clone();
        let (p99, max) = lock(&self.shared.jitter).stats();
        s.health.jitter_us_p99 = p99;
        s.health.jitter_us_max = max;
        s.health.running = self.state.load(Ordering::Acquire) == RUNNING
            && self.shared.alive.load(Ordering::Acquire);
        s
    }

    /// Fault injection for tests: makes the control thread panic, to exercise what a real panic
    /// does (0 W, `running = false`, `Event::ControlFailed`).
    #[doc(hidden)]
    pub fn inject_panic(&self) -> Result<(), RuntimeError> {
        self.tx.send(Msg::Panic).map_err(|_| RuntimeError::Stopped)
    }

    /// Reads the last step's output under the snapshot lock without copying all of it; `f`
    /// should only pick out what it needs.
    pub fn with_step<R>(&self, f: impl FnOnce(&StepOutput) -> R) -> R {
        f(&lock(&self.shared.snapshot).step)
    }

    /// Readable while events are queued.
    pub fn event_fd(&self) -> RawFd {
        self.reader.as_raw_fd()
    }

    /// Takes every queued event and empties the wake socket.
    pub fn drain_events(&self) -> Vec<TimedEvent> {
        let mut q = lock(&self.shared.events);
        let mut sink = [0u8; 64];
        loop {
            match (&self.reader).read(&mut sink) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        q.drain(..).collect()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Dropping `tx` disconnects the channel, which ends the thread after its final write;
        // it is not joined here, so dropping never blocks.
        let _ = self.tx.send(Msg::Stop);
    }
}

enum Wake {
    Tick,
    Command,
    Stop,
}

struct Worker {
    engine: Engine<Client, SystemClock>,
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    period: Duration,
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".to_string())
}

impl Worker {
    fn new(params: ControlParams, rx: Receiver<Msg>, shared: Arc<Shared>) -> Self {
        let period = Duration::from_millis(u64::from(params.period_ms));
        let client = Client::new(params.pcs_host.clone(), params.pcs_port, params.pcs_unit_id);
        let meter = params
            .site
            .as_ref()
            .filter(|s| !s.meter_host.is_empty())
            .map(|s| {
                let c = Client::new(s.meter_host.clone(), s.meter_port, s.meter_unit_id);
                GridMeterLink::new(
                    Box::new(c),
                    s.meter_profile,
                    Duration::from_millis(u64::from(s.meter_timeout_ms)),
                    period,
                )
            });
        let mut engine = Engine::new(params, client, SystemClock);
        if let Some(m) = meter {
            engine.set_grid_meter(m);
        }
        Self {
            engine,
            rx,
            shared,
            period,
        }
    }

    fn run(&mut self) {
        self.engine.health.scheduling = real_time();
        lock(&self.shared.snapshot).health.scheduling = self.engine.health.scheduling.clone();
        let mut next_tick = Instant::now();
        loop {
            let wake = if Instant::now() >= next_tick {
                Wake::Tick
            } else {
                match self.rx.recv_deadline(next_tick) {
                    Ok(Msg::Command(c)) => {
                        let _ = self.engine.ctl.apply(c);
                        Wake::Command
                    }
                    Ok(Msg::Panic) => panic!("injected panic (fault injection for tests)"),
                    Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => Wake::Stop,
                    Err(RecvTimeoutError::Timeout) => Wake::Tick,
                }
            };
            // Everything queued goes into this cycle, so a burst of commands costs one cycle.
            let stop = matches!(wake, Wake::Stop) || self.apply_pending();
            if stop {
                break;
            }
            let started = Instant::now();
            if matches!(wake, Wake::Tick) {
                let late = started.saturating_duration_since(next_tick);
                lock(&self.shared.jitter).record(late.as_micros() as u64);
            }
            if matches!(wake, Wake::Command) {
                self.engine.health.command_cycles += 1;
            }
            self.cycle(started);
            if matches!(wake, Wake::Tick) {
                next_tick += self.period;
                let now = Instant::now();
                if next_tick <= now {
                    let behind = now.duration_since(next_tick).as_nanos() / self.period.as_nanos();
                    let missed = behind as u64 + 1;
                    self.engine.health.overruns += missed;
                    next_tick += self.period * u32::try_from(missed).unwrap_or(u32::MAX);
                }
            }
        }
        self.final_write();
    }

    /// Applies queued commands; true if a stop was among them.
    fn apply_pending(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(Msg::Command(c)) => {
                    let _ = self.engine.ctl.apply(c);
                }
                Ok(Msg::Panic) => panic!("injected panic (fault injection for tests)"),
                Ok(Msg::Stop) | Err(TryRecvError::Disconnected) => return true,
                Err(TryRecvError::Empty) => return false,
            }
        }
    }

    fn cycle(&mut self, started: Instant) {
        match self.engine.cycle() {
            Cycle::Held => self.publish(None, started),
            Cycle::Stepped(mut out) => {
                let (time_s, events) = (out.now_s, std::mem::take(&mut out.events));
                // Snapshot first: a reader woken by an event must find a snapshot at least that
                // new.
                self.publish(Some(*out), started);
                self.shared.push_events(time_s, &events);
            }
        }
    }

    fn publish(&mut self, out: Option<StepOutput>, started: Instant) {
        let h = &mut self.engine.health;
        h.cycles += 1;
        h.last_cycle_us = started.elapsed().as_micros() as u64;
        let mut snap = lock(&self.shared.snapshot);
        // events_dropped is counted on the shared copy by push_events.
        let dropped = snap.health.events_dropped;
        snap.health = h.clone();
        snap.health.events_dropped = dropped;
        if let Some(out) = out {
            snap.step = out;
        }
    }

    fn final_write(&mut self) {
        self.engine.final_write();
        self.publish_stopped();
    }

    /// After a panic: the best-effort 0 W write, then the failure for the reader.
    fn failed(&mut self, message: &str) {
        // The engine's state may be half-updated; the final write only needs its layout.
        let _ = panic::catch_unwind(AssertUnwindSafe(|| self.engine.final_write()));
        self.engine.health.failure = Some(message.to_string());
        self.publish_stopped();
        let time_s = crate::engine::Clock::wall_s(&SystemClock);
        self.shared
            .push_events(time_s, &[Event::ControlFailed(message.to_string())]);
    }

    /// The last snapshot of a thread that ends: not running, 0 W.
    fn publish_stopped(&mut self) {
        self.engine.health.running = false;
        let mut snap = lock(&self.shared.snapshot);
        let dropped = snap.health.events_dropped;
        snap.health = self.engine.health.clone();
        snap.health.events_dropped = dropped;
        snap.step.setpoint_w = 0.0;
        snap.step.run = false;
    }
}

/// Puts the calling thread under SCHED_FIFO at `RT_PRIORITY`; says what it got.
fn real_time() -> String {
    let param = libc::sched_param {
        sched_priority: RT_PRIORITY,
    };
    // SAFETY: changes only the calling thread's policy; `param` is a valid sched_param.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if rc == 0 {
        format!("SCHED_FIFO {RT_PRIORITY}")
    } else {
        let why = io::Error::from_raw_os_error(rc);
        format!("normal (SCHED_FIFO {RT_PRIORITY} not permitted: {why})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_percentiles() {
        let mut j = JitterRing::default();
        assert_eq!(j.stats(), (0, 0));
        for i in 1..=100 {
            j.record(i);
        }
        assert_eq!(j.stats(), (99, 100));
        for _ in 0..JITTER_WINDOW {
            j.record(5);
        }
        assert_eq!(j.stats(), (5, 5));
    }

    #[test]
    fn events_wake_once_per_batch() {
        let rt = Runtime::new(ControlParams::default()).unwrap();
        rt.shared.push_events(1.0, &[Event::LinkLost]);
        rt.shared.push_events(2.0, &[Event::LinkRestored]);
        let mut buf = [0u8; 8];
        assert_eq!(
            (&rt.reader).read(&mut buf).unwrap(),
            1,
            "one byte for two pushes"
        );
        // The byte was taken above; draining still returns the events.
        let kinds = |v: Vec<TimedEvent>| v.into_iter().map(|e| e.event).collect::<Vec<_>>();
        assert_eq!(
            kinds(rt.drain_events()),
            vec![Event::LinkLost, Event::LinkRestored]
        );
        assert!(rt.drain_events().is_empty());
        rt.shared.push_events(3.0, &[Event::TripCleared]);
        assert_eq!(
            rt.drain_events(),
            vec![TimedEvent {
                time_s: 3.0,
                event: Event::TripCleared
            }]
        );
        assert!(
            (&rt.reader).read(&mut buf).is_err(),
            "drain empties the socket"
        );
    }

    #[test]
    fn queue_is_bounded() {
        let rt = Runtime::new(ControlParams::default()).unwrap();
        let many = vec![Event::LinkLost; MAX_QUEUED_EVENTS + 5];
        rt.shared.push_events(0.0, &many);
        assert_eq!(rt.drain_events().len(), MAX_QUEUED_EVENTS);
        assert_eq!(rt.snapshot().health.events_dropped, 5);
    }

    #[test]
    fn start_twice_and_after_stop() {
        let params = ControlParams {
            pcs_port: 1,
            ..ControlParams::default()
        };
        let rt = Runtime::new(params).unwrap();
        rt.start().unwrap();
        assert!(matches!(rt.start(), Err(RuntimeError::AlreadyStarted)));
        rt.stop();
        rt.stop();
        assert!(matches!(rt.start(), Err(RuntimeError::Stopped)));
        assert!(!rt.snapshot().health.running);
    }
}
