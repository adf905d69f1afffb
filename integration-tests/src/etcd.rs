//! A real etcd on loopback for the tests of the replicated store (#18): Debian's
//! `etcd-server` package (`.ci/run` installs it), one or more members in a temporary
//! directory, killed, stopped and restarted by the tests. Where `etcd` is missing,
//! [`EtcdCluster::start`] says so on standard error and returns `None`, and the test skips.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a member may take to answer `/health`.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

/// The `etcd` binary: on `PATH`, or Debian's `/usr/bin/etcd`.
pub fn etcd_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("etcd"))
            .collect::<Vec<_>>()
    });
    on_path
        .chain([PathBuf::from("/usr/bin/etcd")])
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// One member.
pub struct Member {
    /// Its name in the cluster.
    pub name: String,
    /// Its client URL.
    pub client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A cluster of members on loopback, killed when dropped.
pub struct EtcdCluster {
    binary: PathBuf,
    /// The members, in the order started.
    pub members: Vec<Member>,
    initial_cluster: String,
    /// Data directories and logs.
    pub dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Start `n` members and wait until each answers; `None` (said on standard error)
    /// when there is no `etcd` on this machine.
    ///
    /// # Panics
    /// When etcd is there but does not start.
    pub fn start(n: usize) -> Option<Self> {
        let Some(binary) = etcd_binary() else {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: no etcd on PATH or at /usr/bin/etcd: install Debian's etcd-server \
                 package (apt-get install -y etcd-server; .ci/run does) to run this test"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let name = format!("m{i}");
                Member {
                    client_url: format!("http://127.0.0.1:{}", free_port()),
                    peer_url: format!("http://127.0.0.1:{}", free_port()),
                    data_dir: dir.path().join(&name),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    child: None,
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            binary,
            members,
            initial_cluster,
            dir,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_healthy(i);
        }
        Some(cluster)
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .unwrap_or_else(|e| panic!("{}: {e}", m.log.display()));
        let child = Command::new(&self.binary)
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.client_url])
            .args(["--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url])
            .args(["--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "seccomp-test"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.members[i].child = Some(child);
    }

    /// Whether member `i` answers `GET /health` with `"health":"true"`.
    pub fn healthy(&self, i: usize) -> bool {
        let addr = self.members[i].client_url.trim_start_matches("http://");
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply.contains("\"health\":\"true\"")
    }

    /// Wait until member `i` is healthy.
    ///
    /// # Panics
    /// When it is not within 30 s (its log is printed).
    pub fn wait_healthy(&self, i: usize) {
        let end = Instant::now() + HEALTHY_WITHIN;
        while !self.healthy(i) {
            if Instant::now() >= end {
                let log = std::fs::read_to_string(&self.members[i].log).unwrap_or_default();
                panic!(
                    "etcd member {} at {} not healthy within {HEALTHY_WITHIN:?}:\n{log}",
                    self.members[i].name, self.members[i].client_url
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every member's client URL, comma-separated (a `--etcd-endpoints` value).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start member `i` again on its data directory (after [`EtcdCluster::kill`]) and
    /// wait until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i);
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
