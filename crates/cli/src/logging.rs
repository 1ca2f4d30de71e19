//! Logging: `ZD_LOG` (an env-filter directive such as `debug` or `zd_core=trace`) wins;
//! otherwise `-v` raises the level one step per use from the command's default.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the stderr subscriber. `base` is the level with no `-v`: 0 warn, 1 info,
/// 2 debug, 3 trace.
pub fn init(base: u8, verbose: u8) {
    let filter = match std::env::var("ZD_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .unwrap_or_else(|e| {
                eprintln!("warning: ignoring ZD_LOG='{directives}': {e}");
                EnvFilter::new(level(base, verbose))
            }),
        _ => EnvFilter::new(level(base, verbose)),
    };
    // A second init (tests calling main_exit twice) is harmless: keep the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

fn level(base: u8, verbose: u8) -> &'static str {
    match base.saturating_add(verbose) {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

#[cfg(test)]
mod tests {
    use super::level;

    #[test]
    fn each_verbose_flag_raises_the_level_one_step() {
        assert_eq!(level(0, 0), "warn");
        assert_eq!(level(0, 1), "info");
        assert_eq!(level(1, 1), "debug");
        assert_eq!(level(0, 9), "trace");
    }
}
