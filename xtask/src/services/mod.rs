//! The service layer: every compose and docker query of the project goes through here.
//!
//! A [`Stack`] is one set of the project's services: its own compose project, network and
//! volumes, labelled with the checkout it belongs to. [`Stack::start`] starts what a command
//! needs, discovers the host ports, waits on one readiness probe per service and returns a
//! [`Running`] guard that removes what it started on error, on drop and on Ctrl-C (`db-up`
//! keeps it). Every container carries the identity of the run that started it, so a run that
//! died (`kill -9`) leaves containers that the next run reclaims instead of adopting; a run
//! that keeps its services warm (`test --keep`) labels them with their recipe, and the next run
//! reuses them only while that recipe holds ([`warm`]).

pub mod api;
pub mod certs;
pub mod compose;
pub mod container;
pub mod docker;
pub mod dotenv;
pub mod engine;
pub mod http;
pub mod images;
pub mod ports;
pub mod preflight;
pub mod ready;
pub mod replay;
pub mod reset_marker;
pub mod run;
pub mod running;
pub mod stack;
pub mod start;
pub mod warm;

pub use genesis_model::Service;
pub use http::http_request;
pub use ready::READY_TIMEOUT;
pub use run::{Lifetime, Owner};
pub use running::Running;
pub use stack::Stack;
