//! The tools beneath the service layer: PostgreSQL's client tools (`pg`), the dev password,
//! child processes, the YAML emitter and small utilities. None of them imports a command or
//! the service layer.

pub mod apt;
pub mod child;
pub mod devpass;
pub mod pg;
pub mod util;
pub mod yaml;
