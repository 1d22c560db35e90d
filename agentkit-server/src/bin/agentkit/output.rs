//! Writing to stdout: `outln!` and `out!` print like `println!` and `print!`, but a closed
//! stdout (the reader went away, as `head` does in `agentkit runs list | head -1`) ends the
//! process quietly with exit code 0, where `println!` panics ("failed printing to stdout:
//! Broken pipe", exit 101). Any other write error ends it with exit code 1 and says why.

use std::io::Write;

/// Print a line to stdout (see the module docs).
macro_rules! outln {
    () => {
        $crate::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Print to stdout without a newline, flushed at once (see the module docs).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*))
    };
}

/// Write `args` to stdout and flush it; exit quietly (0) when the reader is gone.
pub(crate) fn write(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        drop(stdout);
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(crate::client::exit::FAILED);
    }
}

/// Write `lines` to stdout, ignoring write errors: for a server's banner, which must not stop
/// the server when nobody reads its stdout.
pub(crate) fn lines_or_ignore(lines: &[String]) {
    let mut stdout = std::io::stdout().lock();
    for line in lines {
        if writeln!(stdout, "{line}").is_err() {
            return;
        }
    }
    let _ = stdout.flush();
}
