//! `cargo xtask images`: builds the drop-in images (see `services::images`).

use anyhow::Result;
use xshell::Shell;

use crate::flags;
use crate::services::{images, preflight};

impl flags::Images {
    pub fn run(self, sh: &Shell) -> Result<()> {
        preflight::docker_daemon()?;
        if !self.offline && !self.force && images::registry_serves_every_image(sh) {
            println!(
                "every public image is available: nothing to build (--offline builds the local ones anyway)"
            );
            return Ok(());
        }
        images::build(sh, self.force)
    }
}
