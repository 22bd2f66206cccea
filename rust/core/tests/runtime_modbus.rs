//! The control thread against a tiny Modbus TCP server on 127.0.0.1: what it writes, how fast a
//! command reaches the PCS, and what happens when the PCS goes silent and comes back.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bess_core::controller::{Command, Event};
use bess_core::metering::Direction;
use bess_core::modbus::{
    decode_request, encode_read_response, encode_write_response, parse_frame, Request,
};
use bess_core::params::ControlParams;
use bess_core::runtime::Runtime;

/// One write of the block at 0..4 as the PCS received it.
#[derive(Clone, Debug)]
struct Written {
    at: Instant,
    run: u16,
    setpoint: i32,
    watchdog: u16,
    /// How many times the server had been unmuted when this arrived.
    epoch: u32,
}

#[derive(Default)]
struct State {
    regs: Vec<u16>,
    writes: Vec<Written>,
    epoch: u32,
}

struct Pcs {
    state: Mutex<State>,
    changed: Condvar,
    mute: AtomicBool,
    port: u16,
}

impl Pcs {
    fn start() -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut regs = vec![0u16; 256];
        let block = healthy_block();
        regs[100..128].copy_from_slice(&block);
        let pcs = Arc::new(Self {
            state: Mutex::new(State {
                regs,
                ..State::default()
            }),
            changed: Condvar::new(),
            mute: AtomicBool::new(false),
            port: listener.local_addr().unwrap().port(),
        });
        let p = Arc::clone(&pcs);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let p = Arc::clone(&p);
                thread::spawn(move || p.serve(conn));
            }
        });
        pcs
    }

    fn serve(&self, mut s: TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            let n = match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            while let Ok(Some((frame, used))) = parse_frame(&buf) {
                let (tid, unit) = (frame.transaction_id, frame.unit_id);
                let req = decode_request(frame.pdu);
                buf.drain(..used);
                if self.mute.load(Ordering::SeqCst) {
                    continue;
                }
                let reply = {
                    let mut st = self.state.lock().unwrap();
                    match req {
                        Ok(Request::ReadHolding { address, count }) => {
                            let a = usize::from(address);
                            encode_read_response(tid, unit, &st.regs[a..a + usize::from(count)])
                        }
                        Ok(Request::WriteMultiple { address, values }) => {
                            let a = usize::from(address);
                            st.regs[a..a + values.len()].copy_from_slice(&values);
                            if address == 0 {
                                let epoch = st.epoch;
                                st.writes.push(Written {
                                    at: Instant::now(),
                                    run: values[0],
                                    setpoint: ((u32::from(values[1]) << 16) | u32::from(values[2]))
                                        as i32,
                                    watchdog: values[3],
                                    epoch,
                                });
                                self.changed.notify_all();
                            }
                            encode_write_response(tid, unit, address, values.len() as u16)
                        }
                        Err(_) => return,
                    }
                };
                if s.write_all(&reply).is_err() {
                    return;
                }
            }
        }
    }

    /// Waits (bounded) until `pred` holds for the writes so far; returns them.
    fn wait_writes<F>(&self, timeout: Duration, pred: F) -> Vec<Written>
    where
        F: Fn(&[Written]) -> bool,
    {
        let st = self.state.lock().unwrap();
        let (st, res) = self
            .changed
            .wait_timeout_while(st, timeout, |s| !pred(&s.writes))
            .unwrap();
        assert!(
            !res.timed_out(),
            "condition not reached; writes: {:?}",
            st.writes.last()
        );
        st.writes.clone()
    }

    fn set_mute(&self, mute: bool) {
        if !mute {
            self.state.lock().unwrap().epoch += 1;
        }
        self.mute.store(mute, Ordering::SeqCst);
    }
}

fn healthy_block() -> Vec<u16> {
    let mut r = vec![0u16; 28];
    r[0] = 2; // running
    r[3] = 4000;
    r[4] = 5000;
    r[5] = 7000;
    r[7] = 500;
    r[8] = 1000;
    r[9] = 250;
    r[10] = 200;
    r[13] = (500_000u32 >> 16) as u16;
    r[14] = 500_000u32 as u16;
    r[15] = (500_000u32 >> 16) as u16;
    r[16] = 500_000u32 as u16;
    r
}

fn runtime(pcs: &Pcs, period_ms: u32, timeout_ms: u32) -> Runtime {
    let params = ControlParams {
        period_ms,
        pcs_timeout_ms: timeout_ms,
        pcs_port: pcs.port,
        ..ControlParams::default()
    };
    Runtime::new(params).unwrap()
}

fn wait_event(rt: &Runtime, want: &Event, timeout: Duration) -> Instant {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if rt.drain_events().iter().any(|e| &e.event == want) {
            return Instant::now();
        }
        thread::sleep(Duration::from_millis(2));
    }
    panic!("no {want:?} within {timeout:?}");
}

fn discharge(id: u32, cap_w: f64) -> Command {
    Command::StartSession {
        meter_id: id,
        direction: Direction::Discharge,
        cap_w,
    }
}

#[test]
fn ramps_up_with_watchdog_and_stops_at_zero() {
    let pcs = Pcs::start();
    let rt = runtime(&pcs, 20, 500);
    rt.send(discharge(0, 100_000.0)).unwrap();
    rt.start().unwrap();
    let writes = pcs.wait_writes(Duration::from_secs(5), |w| {
        w.last().is_some_and(|l| l.setpoint == 100_000)
    });
    let ramp = rt.params().ramp_w_per_s;
    for pair in writes.windows(2) {
        let dt = pair[1].at.duration_since(pair[0].at).as_secs_f64();
        let slew = f64::from((pair[1].setpoint - pair[0].setpoint).abs());
        // dt is measured at the server; allow one period of skew between the two clocks' views.
        assert!(slew <= ramp * (dt + 0.02) + 1.0, "slew {slew} W in {dt} s");
        assert_eq!(
            pair[1].watchdog,
            pair[0].watchdog.wrapping_add(1),
            "watchdog every write"
        );
        assert!(pair[1].setpoint >= pair[0].setpoint);
    }
    assert_eq!(writes.last().unwrap().run, 1);
    let snap = rt.snapshot();
    assert!(snap.step.link_up);
    assert!(snap.health.cycles > 0 && snap.health.writes > 0);
    rt.stop();
    let last = pcs.state.lock().unwrap().writes.last().cloned().unwrap();
    assert_eq!(
        (last.run, last.setpoint),
        (0, 0),
        "stop writes 0 W and standby"
    );
}

#[test]
fn command_is_written_without_waiting_for_the_tick() {
    let pcs = Pcs::start();
    let rt = runtime(&pcs, 1000, 1000);
    rt.start().unwrap();
    let first = pcs.wait_writes(Duration::from_secs(3), |w| !w.is_empty());
    assert_eq!(first[0].run, 0, "no session: standby");
    let sent = Instant::now();
    rt.send(discharge(0, 150_000.0)).unwrap();
    let writes = pcs.wait_writes(Duration::from_millis(500), |w| w.iter().any(|x| x.run == 1));
    let arrived = writes.iter().find(|x| x.run == 1).unwrap().at;
    let latency = arrived.duration_since(sent);
    assert!(
        latency < Duration::from_millis(200),
        "command took {latency:?} with a 1 s period"
    );
    // Command cycles do not count as periodic ticks: nothing was overrun.
    assert_eq!(rt.snapshot().health.overruns, 0);
    rt.stop();
}

#[test]
fn silent_pcs_is_a_lost_link_and_the_first_write_back_is_zero() {
    let pcs = Pcs::start();
    let timeout = Duration::from_millis(200);
    let rt = runtime(&pcs, 20, 200);
    rt.send(discharge(0, 150_000.0)).unwrap();
    rt.start().unwrap();
    pcs.wait_writes(Duration::from_secs(5), |w| {
        w.last().is_some_and(|l| l.setpoint > 50_000)
    });

    let muted = Instant::now();
    pcs.set_mute(true);
    let lost = wait_event(&rt, &Event::LinkLost, Duration::from_secs(3));
    let took = lost.duration_since(muted);
    // The timeout runs from the last answer, which may precede the mute by up to a cycle; the
    // loss is declared within one request budget (50 ms) and a period after the timeout.
    assert!(
        took + Duration::from_millis(40) >= timeout,
        "link lost after {took:?}, before the timeout"
    );
    assert!(
        took < timeout + Duration::from_millis(400),
        "link lost only after {took:?}"
    );
    let snap = rt.snapshot();
    assert!(!snap.step.link_up);
    assert_eq!(snap.step.setpoint_w, 0.0);
    assert_eq!(snap.step.allocations, vec![(0, 0.0)]);

    pcs.set_mute(false);
    wait_event(&rt, &Event::LinkRestored, Duration::from_secs(3));
    let writes = pcs.wait_writes(Duration::from_secs(3), |w| {
        w.iter().filter(|x| x.epoch == 1).count() >= 3
    });
    let after: Vec<&Written> = writes.iter().filter(|x| x.epoch == 1).collect();
    assert_eq!(
        after[0].setpoint, 0,
        "first write after the link is back is 0"
    );
    assert!(after[2].setpoint > 0, "then ramps again");
    rt.stop();
}

#[test]
fn unreachable_pcs_keeps_the_loop_ticking() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let params = ControlParams {
        period_ms: 20,
        pcs_timeout_ms: 100,
        pcs_port: port,
        ..ControlParams::default()
    };
    let rt = Runtime::new(params).unwrap();
    rt.start().unwrap();
    wait_event(&rt, &Event::LinkLost, Duration::from_secs(2));
    let until = Instant::now() + Duration::from_secs(2);
    while rt.snapshot().health.cycles < 20 {
        assert!(
            Instant::now() < until,
            "loop stalled with the PCS unreachable"
        );
        thread::sleep(Duration::from_millis(5));
    }
    rt.stop();
}
