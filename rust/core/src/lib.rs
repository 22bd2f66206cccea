//! bess-core: the pure control core of bess-gateway.
//!
//! Everything except `client` and `runtime` is free of I/O and clocks: time comes in as an
//! argument, so tests jump the clock instead of sleeping. `runtime` owns the one thread that
//! talks to the PCS, and nothing in this crate knows about Python.

pub mod allocation;
pub mod client;
pub mod controller;
pub mod engine;
pub mod gridmeter;
pub mod measurements;
pub mod metering;
pub mod modbus;
pub mod params;
pub mod profile;
pub mod protection;
pub mod ramp;
pub mod regmap;
pub mod runtime;
pub mod schedule;
pub mod site;
pub mod sunspec;

pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
