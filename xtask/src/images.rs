//! `cargo xtask images`: where no image registry can be reached, builds drop-in images for
//! PostgreSQL 15, Redis and the application's base from Debian packages, and tags them under
//! the names compose picks up (see `Compose::cmd`).
//!
//! One Debian root filesystem is made with `mmdebstrap` (the hooks in `xtask/images/rootfs/`)
//! and imported; each image is then a small `docker build` on top of it (`xtask/images/*/`).
//! Every image carries the hash of its recipe as a label, so an up-to-date image is skipped.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use genesis_model::{self as model, Image};
use xshell::{Shell, cmd};

use crate::flags;
use crate::preflight;
use crate::test::xtask_dir;
use crate::util::{project_root, usage};

/// The Debian release the images are made of. Its C library is the one the application base
/// offers to binaries built on the host.
const SUITE: &str = "bookworm";

/// The packages of the shared root filesystem.
const PACKAGES: &[&str] = &[
    "ca-certificates",
    "postgresql-15",
    "postgresql-client-15",
    "redis-server",
    "redis-tools",
    "util-linux",
];

const ROOTFS: &str = "genesis-local/rootfs:bookworm";
const LABEL: &str = "org.genesis.recipe";

/// Each drop-in: the model's image and the folder of its Dockerfile under `xtask/images/`.
fn drop_ins() -> [(Image, &'static str); 3] {
    [
        (model::POSTGRES_IMAGE, "postgres"),
        (model::REDIS_IMAGE, "redis"),
        (model::API_IMAGE, "base"),
    ]
}

impl flags::Images {
    pub fn run(self, sh: &Shell) -> Result<()> {
        preflight::docker_daemon(sh)?;
        if !self.offline && registry_serves_every_image(sh) {
            println!("every public image is available: nothing to build");
            return Ok(());
        }
        build(sh, self.force)
    }
}

/// What `ci` calls: the images compose will use exist afterwards, built only where needed.
pub fn ensure(sh: &Shell) -> Result<()> {
    if registry_serves_every_image(sh) {
        println!("every public image is available");
        return Ok(());
    }
    build(sh, false)
}

/// True when every public image is in the engine, or can be pulled right now.
fn registry_serves_every_image(sh: &Shell) -> bool {
    model::IMAGES.iter().all(|image| {
        let public = image.public;
        preflight::image_present(sh, public)
            || cmd!(sh, "docker pull --quiet {public}")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run()
                .is_ok()
    })
}

fn images_dir() -> PathBuf {
    project_root().join("xtask/images")
}

/// The hash of everything an image is made of: the package list, the release and every file
/// under `xtask/images/`. Computed with coreutils' `sha256sum`, so the xtask needs no hashing crate.
fn recipe_hash(sh: &Shell) -> Result<String> {
    let mut files = Vec::new();
    collect_files(&images_dir(), &mut files)?;
    files.sort();
    let root = project_root();
    let relative: Vec<PathBuf> = files
        .iter()
        .map(|f| f.strip_prefix(&root).unwrap_or(f).to_path_buf())
        .collect();
    let sums = cmd!(sh, "sha256sum -- {relative...}")
        .quiet()
        .read()
        .context("hash the image recipes")?;
    let input = format!("{SUITE}\n{}\n{sums}\n", PACKAGES.join(","));
    let hash = cmd!(sh, "sha256sum")
        .stdin(input)
        .quiet()
        .read()
        .context("hash the image recipes")?;
    Ok(hash
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .chars()
        .take(16)
        .collect())
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

fn label_of(sh: &Shell, image: &str) -> Option<String> {
    let format = format!("{{{{index .Config.Labels \"{LABEL}\"}}}}");
    cmd!(sh, "docker image inspect --format {format} {image}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .map(|s| s.trim().to_owned())
}

fn build(sh: &Shell, force: bool) -> Result<()> {
    let hash = recipe_hash(sh)?;
    let stale: Vec<(Image, &str)> = drop_ins()
        .into_iter()
        .filter(|(image, _)| force || label_of(sh, image.local).as_deref() != Some(hash.as_str()))
        .collect();
    if stale.is_empty() {
        println!(
            "local images are up to date (recipe {hash}): {}",
            drop_ins().map(|(i, _)| i.local).join(", ")
        );
        return Ok(());
    }
    let started = Instant::now();
    if force || label_of(sh, ROOTFS).as_deref() != Some(hash.as_str()) {
        build_rootfs(sh, &hash)?;
    }
    for (image, folder) in stale {
        let step = Instant::now();
        let context = images_dir().join(folder);
        let tag = image.local;
        let label = format!("{LABEL}={hash}");
        let rootfs = format!("ROOTFS={ROOTFS}");
        cmd!(
            sh,
            "docker build --quiet --build-arg {rootfs} --label {label} -t {tag} {context}"
        )
        .quiet()
        .ignore_stdout()
        .run()
        .with_context(|| format!("build {tag}"))?;
        println!("built {tag} in {:.1} s", step.elapsed().as_secs_f64());
    }
    println!(
        "images ready in {:.1} s (recipe {hash}); compose uses them while the public ones are missing",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `mmdebstrap` into a tarball, then `docker import`. Downloaded packages are kept in a cache
/// outside the work tree, so a rebuild on the same machine downloads nothing.
fn build_rootfs(sh: &Shell, hash: &str) -> Result<()> {
    cmd!(sh, "mmdebstrap --version").quiet().ignore_stdout().ignore_stderr().run().map_err(|_| {
        usage("mmdebstrap is not installed: `apt-get install mmdebstrap` (it builds the images from Debian packages)")
    })?;
    let step = Instant::now();
    let work = xtask_dir().join("images");
    std::fs::create_dir_all(&work)?;
    let tarball = work.join("rootfs.tar");
    let cache = apt_cache_dir();
    std::fs::create_dir_all(&cache).with_context(|| format!("create {}", cache.display()))?;
    let hooks = images_dir().join("rootfs/hooks");
    let include = format!("--include={}", PACKAGES.join(","));
    let hook_dir = format!("--hook-directory={}", hooks.display());
    let sync_in = format!(
        "--setup-hook=sync-in {} /var/cache/apt/archives/",
        cache.display()
    );
    let sync_out = format!(
        "--customize-hook=sync-out /var/cache/apt/archives {}",
        cache.display()
    );
    println!("building the {SUITE} root filesystem with mmdebstrap (a few minutes the first time)");
    cmd!(sh, "mmdebstrap --quiet --variant=minbase {include} {hook_dir} {sync_in} {sync_out} --format=tar {SUITE} {tarball}")
        .run()
        .context("mmdebstrap (is the Debian mirror reachable?)")?;
    let label = format!("LABEL {LABEL}={hash}");
    cmd!(sh, "docker import --change {label} --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change 'ENV LANG=C.UTF-8' --change 'CMD [\"bash\"]' {tarball} {ROOTFS}")
        .quiet()
        .ignore_stdout()
        .run()
        .context("docker import of the root filesystem")?;
    std::fs::remove_file(&tarball).ok();
    println!("built {ROOTFS} in {:.1} s", step.elapsed().as_secs_f64());
    Ok(())
}

fn apt_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(xtask_dir);
    base.join("genesis-xtask/apt-archives")
}
