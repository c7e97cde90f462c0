//! Operations support shared by the crates of a chatd process:
//!
//! - [`metrics`]: the Prometheus metrics, registered once per process and
//!   recorded where each event happens (broker hooks, chat service, REST,
//!   push dispatch), rendered by `/metrics`.
//! - [`readiness`]: named asynchronous checks with a timeout each, and the
//!   draining flag, behind `/readyz`.
//!
//! No sockets here: the REST facade serves both, `chatd` wires the checks.

pub mod metrics;
pub mod readiness;

pub use metrics::metrics;
pub use readiness::{Readiness, Report};
