//! Where service files live, and finding them by service name.

use std::path::{Path, PathBuf};

use super::{ConfigError, ServiceFile, load_any, read_service_file};

/// A service file found by [`discover`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveredService {
    /// The service name (the file's `name:`, else its stem).
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// Why the file cannot be used, if it cannot (the full `file:line:col:` message).
    pub error: Option<String>,
    /// The driver the file names, read once here, for a service a foreign supervisor runs.
    pub driver: Option<Box<crate::driver::DriverConfig>>,
    /// Whether the file names a driver but is invalid: nothing can drive it.
    pub bad_driver: bool,
}

/// The directories searched for service files, in order: `$ZDCTL_CONFIG_DIR` alone when
/// it is set, else `/etc/zdctl/services.d` then `$HOME/.config/zdctl/services.d`.
pub fn config_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os("ZDCTL_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return vec![PathBuf::from(dir)];
    }
    let mut dirs = vec![PathBuf::from("/etc/zdctl/services.d")];
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        dirs.push(PathBuf::from(home).join(".config/zdctl/services.d"));
    }
    dirs
}

/// The file of service `name`: `<name>.yaml` or `<name>.yml` in the first directory that
/// has one, else a file whose `name:` is `name`.
pub fn find_service(name: &str) -> Result<PathBuf, ConfigError> {
    find_in(name, &config_dirs())
}

fn find_in(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, ConfigError> {
    for dir in dirs {
        for ext in ["yaml", "yml"] {
            let path = dir.join(format!("{name}.{ext}"));
            if path.is_file() {
                return Ok(path);
            }
        }
    }
    for dir in dirs {
        if let Some(path) = service_files(dir)
            .into_iter()
            .find(|path| declared_name(path).as_deref() == Some(name))
        {
            return Ok(path);
        }
    }
    Err(ConfigError::NotFound {
        name: name.to_owned(),
        searched: dirs.to_vec(),
    })
}

/// Every service file in the config directories, loaded and validated, sorted by name.
/// A file that fails keeps its place in the list with its error.
pub fn discover() -> Vec<DiscoveredService> {
    discover_in(&config_dirs())
}

fn discover_in(dirs: &[PathBuf]) -> Vec<DiscoveredService> {
    let mut found: Vec<DiscoveredService> = dirs
        .iter()
        .flat_map(|dir| service_files(dir))
        .map(|path| match load_any(&path) {
            Ok(ServiceFile::Native(config)) => DiscoveredService {
                name: config.name,
                path,
                error: None,
                driver: None,
                bad_driver: false,
            },
            Ok(ServiceFile::Driver(config)) => DiscoveredService {
                name: config.name.clone(),
                path,
                error: None,
                driver: Some(config),
                bad_driver: false,
            },
            Ok(ServiceFile::BrokenNative(err)) => broken(path, &err, false),
            // A file that cannot be read is no driver's; an invalid one names a driver.
            Err(err) => {
                let bad_driver =
                    matches!(err, ConfigError::Invalid { .. } | ConfigError::Many { .. });
                broken(path, &err, bad_driver)
            }
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.path.cmp(&b.path)));
    found
}

fn broken(path: PathBuf, err: &ConfigError, bad_driver: bool) -> DiscoveredService {
    DiscoveredService {
        name: declared_name(&path).unwrap_or_else(|| stem(&path)),
        path,
        error: Some(err.to_string()),
        driver: None,
        bad_driver,
    }
}

/// `*.yaml` and `*.yml` entries in `dir`, sorted; a missing directory has none. Anything
/// but a directory is listed, so that a FIFO or a device named like a service file shows up
/// with its error instead of vanishing; it is never opened.
fn service_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let yaml = path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml");
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            yaml && !hidden && std::fs::metadata(path).is_ok_and(|m| !m.is_dir())
        })
        .collect();
    files.sort();
    files
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The top-level `name:` of a file, by a line scan: cheap, and works on files that do
/// not parse.
fn declared_name(path: &Path) -> Option<String> {
    let text = read_service_file(path).ok()?;
    text.lines().find_map(|line| {
        let value = line.strip_prefix("name:")?;
        let value = value.split(" #").next().unwrap_or(value).trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty()).then(|| value.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
        let path = dir.join(file);
        if let Err(err) = std::fs::write(&path, text) {
            panic!("{}: {err}", path.display());
        }
        path
    }

    #[test]
    fn find_prefers_the_file_stem_then_a_declared_name_in_dir_order() -> std::io::Result<()> {
        let first = tempfile::tempdir()?;
        let second = tempfile::tempdir()?;
        let dirs = vec![first.path().to_owned(), second.path().to_owned()];
        let api = write(second.path(), "api.yml", "command: [true]\n");
        let other = write(
            first.path(),
            "other.yaml",
            "name: 'web' # the site\ncommand: [true]\n",
        );
        assert_eq!(find_in("api", &dirs).ok(), Some(api));
        assert_eq!(find_in("web", &dirs).ok(), Some(other));
        Ok(())
    }

    #[test]
    fn not_found_lists_every_directory_searched() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let dirs = vec![dir.path().to_owned(), PathBuf::from("/nonexistent/zd")];
        let err = find_in("ghost", &dirs).expect_err("no such service");
        let msg = err.to_string();
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(msg.contains("/nonexistent/zd"), "{msg}");
        assert!(msg.starts_with("no service named 'ghost'"), "{msg}");
        Ok(())
    }

    fn mkfifo(path: &Path) {
        if let Err(err) = nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        {
            panic!("mkfifo {}: {err}", path.display());
        }
    }

    /// Runs `f` on its own thread; fails the test if it blocks for 20 s.
    fn returns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        match rx.recv_timeout(std::time::Duration::from_secs(20)) {
            Ok(value) => value,
            Err(_) => panic!("blocked"),
        }
    }

    #[test]
    fn discover_lists_a_fifo_and_a_deeply_nested_file_with_their_errors() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        write(dir.path(), "good.yaml", "command: [true]\n");
        mkfifo(&dir.path().join("api.yaml"));
        let deep = format!("command: {}{}\n", "[".repeat(50_000), "]".repeat(50_000));
        write(dir.path(), "deep.yaml", &deep);
        let dirs = vec![dir.path().to_owned()];
        let found = returns(move || discover_in(&dirs));
        let errors: Vec<(&str, &str)> = found
            .iter()
            .map(|s| (s.name.as_str(), s.error.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(errors[0].0, "api");
        assert!(errors[0].1.contains("named pipe (FIFO)"), "{errors:?}");
        assert_eq!(errors[1].0, "deep");
        assert!(errors[1].1.contains("nests deeper than 64"), "{errors:?}");
        assert_eq!(errors[2], ("good", ""));
        // Finding a service by its declared name passes over the FIFO.
        let dirs = vec![dir.path().to_owned()];
        assert!(returns(move || find_in("web", &dirs)).is_err());
        Ok(())
    }

    #[test]
    fn discover_lists_good_and_broken_files_sorted_by_name() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        write(dir.path(), "b.yaml", "command: [true]\n");
        write(dir.path(), "a.yaml", "name: zeta\ncommand: [true]\n");
        write(
            dir.path(),
            "broken.yml",
            "command: [true]\nlisten: [nope]\n",
        );
        write(dir.path(), "notes.txt", "not a service\n");
        let found = discover_in(&[dir.path().to_owned()]);
        let names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b", "broken", "zeta"]);
        assert!(found[0].error.is_none(), "{:?}", found[0].error);
        let error = found[1].error.as_deref().unwrap_or_default();
        assert!(error.contains("broken.yml:2:"), "{error}");
        Ok(())
    }

    #[test]
    fn a_file_with_several_problems_is_listed_with_all_of_them() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        write(
            dir.path(),
            "api.yaml",
            "command: [true]
foo: 1
handoff: x
",
        );
        write(
            dir.path(),
            "web.yaml",
            "driver: nginx
timout: 5s
watch: x
",
        );
        let found = discover_in(&[dir.path().to_owned()]);
        let [api, web] = &found[..] else {
            panic!("{found:?}");
        };
        for (service, bad_driver) in [(api, false), (web, true)] {
            let error = service.error.as_deref().unwrap_or_default();
            assert_eq!(error.lines().count(), 2, "{error}");
            assert_eq!(service.bad_driver, bad_driver, "{error}");
        }
        Ok(())
    }
}
