//! The pool server `cargo xtask test` runs beside the suites: one process that hands out the
//! per-test databases of every test process of the run over a Unix socket, so that a test
//! waits for a rename on a connection already open, not for a login of its own
//! (`genesis_test_support::pool`). `test_db_pool SOCKET`: prints `ready` once it serves, and exits
//! when its standard input ends.

use std::path::PathBuf;

use genesis_test_support as support;

fn main() {
    let Some(socket) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: test_db_pool SOCKET");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let stdin_closed = async {
        let _ = tokio::task::spawn_blocking(|| {
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        })
        .await;
    };
    let ready = || {
        println!("ready");
        let _ = std::io::Write::flush(&mut std::io::stdout());
    };
    // Ready as soon as it listens: the clones are made while nextest starts the test
    // processes, instead of before it starts them.
    let served = runtime.block_on(support::pool::serve(
        &socket,
        support::pool::Ready::Listening,
        ready,
        stdin_closed,
    ));
    // A request still being answered does not hold the exit for long.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    if let Err(err) = served {
        eprintln!("test_db_pool: {}: {err}", socket.display());
        std::process::exit(1);
    }
}
