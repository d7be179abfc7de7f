//! `cargo xtask images`: where no image registry can be reached, builds drop-in images for
//! PostgreSQL 15, Redis and the application's base from Debian packages, and tags them under
//! the names compose picks up (see `Compose::cmd`).
//!
//! One Debian root filesystem is made with `mmdebstrap` (hooks in `xtask/images/rootfs/`) and
//! imported; each image is a small `docker build` on top of it (`xtask/images/*/Dockerfile`),
//! the three at once. The root filesystem carries the hash of the recipe as a label, which the
//! images inherit, so an up-to-date image is never rebuilt. `xtask/images/README.md` explains
//! each choice and its measured cost.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use genesis_model::{self as model, Image};
use xshell::{Shell, cmd};

use super::engine::Engine;
use super::preflight;
use crate::tools::child;
use crate::tools::util::{project_root, usage};
use crate::tools::util::{sha256_file, sha256_hex, xtask_dir};
use genesis_model::Service;

/// The Debian release the images are made of. Its C library is the one the application base
/// offers to binaries built on the host.
const SUITE: &str = "bookworm";

/// Bumped when the way the recipe is hashed changes.
const RECIPE_VERSION: &str = "genesis-images v1";

/// The packages of the shared root filesystem; their dependencies bring psql, pg_isready,
/// redis-cli and util-linux's `setpriv`, which the entrypoints step down from root with.
const PACKAGES: &str = "ca-certificates,postgresql-15,redis-server";

/// The mmdebstrap arguments that do not depend on the machine (part of the recipe hash).
/// The merged-usr hooks keep `usrmerge` and its Perl out; `cleanup/run` is skipped because
/// the customize hook cleans `/run` itself and must keep `/run/postgresql`.
const MMDEBSTRAP_ARGS: &[&str] = &[
    "--quiet",
    "--mode=root",
    "--variant=apt",
    "--format=tar",
    "--skip=essential/unlink,cleanup/run",
    "--hook-directory=/usr/share/mmdebstrap/hooks/merged-usr",
];

/// The `docker import` changes of the root filesystem (part of the recipe hash). The imported
/// base has no PATH of its own, so it is spelled out.
const IMPORT_CHANGES: &[&str] = &[
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "CMD [\"bash\"]",
];

const ROOTFS: &str = "genesis-local/rootfs:bookworm";
const LABEL: &str = "org.genesis.recipe";

/// Each drop-in: the model's image and the folder of its Dockerfile under `xtask/images/`.
const DROP_INS: [(Image, &str); 3] = [
    (model::POSTGRES_IMAGE, "postgres"),
    (model::REDIS_IMAGE, "redis"),
    (model::API_IMAGE, "base"),
];

/// What `ci` calls: afterwards the images compose will use exist, built only where needed.
pub fn ensure(sh: &Shell) -> Result<()> {
    if registry_serves_every_image(sh) {
        println!("every public image is available");
        return Ok(());
    }
    build(sh, false)
}

/// True when every public image is in the engine or can be pulled now. Without a registry the
/// pull fails at once (no name resolution), so this costs little.
pub fn registry_serves_every_image(sh: &Shell) -> bool {
    model::IMAGES.iter().all(|image| {
        let public = image.public;
        image_present(public)
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

/// The SHA-256 of the recipe: a version line, the machine-independent arguments, and every
/// file under `xtask/images/` but its README, each with its path and executable bit. Hashed
/// with SHA-256.
fn recipe_hash() -> Result<String> {
    let root = project_root();
    let mut files = Vec::new();
    collect_files(&images_dir(), &mut files)?;
    files.retain(|f| f.file_name().is_none_or(|n| n != "README.md"));
    files.sort();
    let mut input = format!(
        "{RECIPE_VERSION}\n{SUITE}\n{PACKAGES}\n{}\n{}\n",
        MMDEBSTRAP_ARGS.join(" "),
        IMPORT_CHANGES.join("\n")
    );
    for (_, folder) in DROP_INS {
        input.push_str(&format!("{folder}: {}\n", build_args(folder).join(" ")));
    }
    for file in &files {
        let executable = std::fs::metadata(file)?.permissions().mode() & 0o111 != 0;
        let sum = sha256_file(file).context("hash the image recipe")?;
        let relative = file.strip_prefix(&root).unwrap_or(file);
        input.push_str(&format!("{} {executable} {}\n", relative.display(), sum));
    }
    Ok(sha256_hex(input.as_bytes()))
}

/// The build arguments of a drop-in's folder: the postgres image gets the test environment's
/// public role, database and password for its second build-time cluster (`postgres/Dockerfile`).
fn build_args(folder: &str) -> Vec<String> {
    if folder != "postgres" {
        return Vec::new();
    }
    let db = model::TEST_DB;
    [
        ("GENESIS_TEST_SEED_USER", db.user),
        ("GENESIS_TEST_SEED_DB", db.name),
        ("GENESIS_TEST_SEED_PASSWORD", model::TEST_DB_PASSWORD),
    ]
    .iter()
    .flat_map(|(name, value)| ["--build-arg".to_owned(), format!("{name}={value}")])
    .collect()
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

/// The recipe label and id of a local image, if it exists.
fn inspect(image: &str) -> Option<(String, String)> {
    let found = Engine::get().ok()?.image(image).ok()??;
    Some((found.label(LABEL).unwrap_or_default().to_owned(), found.id))
}

pub fn build(sh: &Shell, force: bool) -> Result<()> {
    let hash = recipe_hash()?;
    let current = |image: &str| inspect(image).is_some_and(|(label, _)| label == hash);
    let stale: Vec<(Image, &str)> = DROP_INS
        .into_iter()
        .filter(|(image, _)| force || !current(image.local))
        .collect();
    if stale.is_empty() {
        let tags: Vec<&str> = DROP_INS.iter().map(|(i, _)| i.local).collect();
        println!(
            "local images are up to date (recipe {}): {}",
            &hash[..12],
            tags.join(", ")
        );
        return Ok(());
    }
    let rootfs_stale = force || !current(ROOTFS);
    // Checked before anything is built, with the fix.
    if rootfs_stale {
        preflight::mmdebstrap_or_install(sh)?;
    }
    let started = Instant::now();
    // Re-tagging leaves the previous images behind untagged: remember them to remove them.
    let mut previous: Vec<String> = stale
        .iter()
        .filter_map(|(image, _)| inspect(image.local))
        .map(|(_, id)| id)
        .collect();
    if rootfs_stale {
        previous.extend(inspect(ROOTFS).map(|(_, id)| id));
        build_rootfs(sh, &hash, force)?;
    }

    let step = Instant::now();
    let mut builds = Vec::new();
    for (image, folder) in &stale {
        let context = images_dir().join(folder);
        let tag = image.local;
        let log = xtask_dir().join(format!("images/{folder}.log"));
        let args = build_args(folder);
        let build = cmd!(
            sh,
            "docker build --quiet --force-rm {args...} -t {tag} {context}"
        );
        builds.push((tag, log.clone(), child::background(build, &log)?));
    }
    for (tag, log, mut build) in builds {
        let status = build.wait()?;
        if !status.success() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            anyhow::bail!("docker build of {tag} failed ({status}):\n{}", text.trim());
        }
    }
    let tags: Vec<&str> = stale.iter().map(|(i, _)| i.local).collect();
    println!(
        "built {} in {:.1} s",
        tags.join(", "),
        step.elapsed().as_secs_f64()
    );
    let engine = Engine::get()?;
    for id in previous {
        // Refused while a container still uses it; then it stays, as it should.
        let _ = engine.remove_image(&id);
    }
    println!(
        "images ready in {:.1} s (recipe {}); compose uses them while the public images are missing",
        started.elapsed().as_secs_f64(),
        &hash[..12]
    );
    Ok(())
}

/// `mmdebstrap` into a tarball, then `docker import`. Downloaded packages are kept in a cache
/// (wiped by `--force`), so a rebuild on the same machine downloads nothing.
fn build_rootfs(sh: &Shell, hash: &str, force: bool) -> Result<()> {
    let step = Instant::now();
    let work = xtask_dir().join("images");
    let cache = work.join("apt-cache");
    if force {
        let _ = std::fs::remove_dir_all(&cache);
    }
    std::fs::create_dir_all(&cache).with_context(|| format!("create {}", cache.display()))?;
    // The cache hooks split their argument on spaces.
    anyhow::ensure!(
        !cache.to_string_lossy().contains(' '),
        "the build folder {} contains a space",
        cache.display()
    );
    let tarball = work.join("rootfs.tar");
    let include = format!("--include={PACKAGES}");
    let hooks = format!(
        "--hook-directory={}",
        images_dir().join("rootfs/hooks").display()
    );
    let sync_in = format!(
        "--setup-hook=sync-in {} /var/cache/apt/archives/",
        cache.display()
    );
    let sync_out = format!(
        "--customize-hook=sync-out /var/cache/apt/archives {}",
        cache.display()
    );
    println!("building the {SUITE} root filesystem with mmdebstrap (about half a minute)");
    let mut mmdebstrap = cmd!(
        sh,
        "mmdebstrap {MMDEBSTRAP_ARGS...} {include} {hooks} {sync_in} {sync_out} {SUITE} {tarball}"
    );
    // dpkg is about twice as fast on tmpfs: build the chroot in /dev/shm when it is there.
    if Path::new("/dev/shm").is_dir() {
        mmdebstrap = mmdebstrap.env("TMPDIR", "/dev/shm");
    }
    let built = mmdebstrap
        .run()
        .context("mmdebstrap (is the Debian mirror reachable?)");
    if let Err(err) = built {
        let _ = std::fs::remove_file(&tarball);
        return Err(err);
    }
    let mut import = cmd!(sh, "docker import").quiet().ignore_stdout();
    for change in IMPORT_CHANGES
        .iter()
        .map(|c| c.to_string())
        .chain([format!("LABEL {LABEL}={hash}")])
    {
        import = import.arg("--change").arg(change);
    }
    let imported = import
        .arg(&tarball)
        .arg(ROOTFS)
        .run()
        .context("docker import of the root filesystem");
    let _ = std::fs::remove_file(&tarball);
    imported?;
    println!("built {ROOTFS} in {:.1} s", step.elapsed().as_secs_f64());
    Ok(())
}

/// Whether an image is present in the local engine.
pub fn image_present(image: &str) -> bool {
    // Every compose command asks for the images it may use; an image found once stays for
    // the rest of the command.
    static PRESENT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    if PRESENT
        .lock()
        .is_ok_and(|present| present.iter().any(|p| p == image))
    {
        return true;
    }
    let found = Engine::get()
        .and_then(|engine| engine.image(image))
        .is_ok_and(|found| found.is_some());
    if found && let Ok(mut present) = PRESENT.lock() {
        present.push(image.to_owned());
    }
    found
}

/// The image compose will use for `image`, present in the engine: the one its variable names,
/// else the local drop-in, else the public one. Otherwise the command that provides it.
pub fn image_available(image: Image) -> Result<String> {
    if let Ok(chosen) = std::env::var(image.var) {
        return if image_present(&chosen) {
            Ok(chosen)
        } else {
            Err(usage(format!(
                "{} names the image {chosen}, which is not in the engine: `docker pull {chosen}`, \
                 or unset {} to use the local drop-in (`cargo xtask images`)",
                image.var, image.var
            )))
        };
    }
    for candidate in [image.local, image.public] {
        if image_present(candidate) {
            return Ok(candidate.to_owned());
        }
    }
    Err(usage(format!(
        "neither {} nor {} is in the engine: run `cargo xtask images` (builds the drop-in from \
         Debian packages, no registry needed) or `docker pull {}`",
        image.local, image.public, image.public
    )))
}

/// The images `services` need, got before anything is built: the ones compose would use are
/// there, or the missing ones are got the way `ci` gets them (pulled where a registry answers,
/// built from Debian packages where none does, with progress). An image the user named in its
/// variable is never replaced.
pub fn images_for(sh: &Shell, services: &[Service]) -> Result<()> {
    let mut missing = Vec::new();
    for service in services {
        let image = service.image();
        if let Err(err) = image_available(image) {
            if std::env::var_os(image.var).is_some() {
                return Err(err);
            }
            if !missing.contains(&image.public) {
                missing.push(image.public);
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "missing images: {}; pulling them, or building the drop-ins from Debian packages where no registry answers",
        missing.join(", ")
    );
    let first = missing[0];
    let pulled = cmd!(sh, "docker pull --quiet {first}")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok();
    if !pulled {
        preflight::mmdebstrap_or_install(sh)?;
    }
    ensure(sh)
}
