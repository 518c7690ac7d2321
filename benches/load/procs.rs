//! The processes under test: `mcp-connector dev` and `run` (the release binary cargo built
//! for this bench) and the node peer, each in its own process so that its resident memory
//! and CPU time are its own; and what `/proc` says about them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The `mcp-connector` binary built with this bench.
pub const BIN: &str = env!("CARGO_BIN_EXE_mcp-connector");

/// A child process, killed when dropped.
pub struct Proc {
    pub child: Child,
    pub pid: u32,
}

impl Proc {
    /// Resident memory, MiB.
    pub fn rss_mib(&self) -> f64 {
        rss_mib(self.pid)
    }

    /// Resident memory that is the process's own (heap, stacks) and that is mapped from
    /// files (the binary's code, shared with other processes running it), MiB.
    pub fn rss_split_mib(&self) -> (f64, f64) {
        let anon = status_kb(self.pid, "RssAnon:") / 1024.0;
        let file = status_kb(self.pid, "RssFile:") / 1024.0;
        (anon, file)
    }

    /// CPU time used so far (user + system).
    pub fn cpu(&self) -> Duration {
        cpu_time(self.pid)
    }

    /// Read and write system calls made so far (`syscr`, `syscw` of `/proc/<pid>/io`).
    pub fn syscalls(&self) -> (u64, u64) {
        let text = std::fs::read_to_string(format!("/proc/{}/io", self.pid)).unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        (field("syscr:"), field("syscw:"))
    }

    /// Context switches of all its threads so far, voluntary (a thread waited: for a
    /// wake-up, a lock, or the socket) and not.
    pub fn context_switches(&self) -> u64 {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return 0;
        };
        let mut total = 0;
        for task in tasks.flatten() {
            let text = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            total += text
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
        total
    }

    /// Open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid)).map_or(0, Iterator::count)
    }

    /// Sends SIGTERM and waits at most `within` for the exit.
    pub async fn terminate(mut self, within: Duration) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let _ = tokio::time::timeout(within, self.child.wait()).await;
    }
}

/// A field of `/proc/<pid>/status`, in kB.
fn status_kb(pid: u32, field: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Resident memory of a process, MiB.
pub fn rss_mib(pid: u32) -> f64 {
    status_kb(pid, "VmRSS:") / 1024.0
}

/// User plus system CPU time of a process (`/proc/<pid>/stat`, at 100 ticks a second).
pub fn cpu_time(pid: u32) -> Duration {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after it are fixed.
    let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A folder for one phase's state and logs, under `target/bench-load/`.
pub fn workdir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("bench-load")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    Stdio::from(std::fs::File::create(dir.join(name)).unwrap())
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `addr` accepts connections.
pub async fn wait_listening(addr: SocketAddr, what: &str) {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `mcp-connector dev` signing everyone in as `alice`, proxying `/mcp` to `mcp_server`
/// (or its built-in `whoami`), in HTTP/2 from the first byte if `http2`. Logs at the
/// default level, as a deployment would, into the phase folder.
pub async fn dev(name: &str, mcp_server: Option<&str>, http2: bool) -> (Proc, SocketAddr) {
    let dir = workdir(name);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["dev", "--auto-login", "alice@example.com"])
        .args(["--listen", &addr.to_string()])
        .arg("--state-dir")
        .arg(dir.join("state"));
    if let Some(url) = mcp_server {
        cmd.args(["--mcp-server", url]);
    }
    if http2 {
        cmd.arg("--mcp-server-http2");
    }
    let proc = spawn(&mut cmd, &dir);
    wait_listening(addr, "mcp-connector dev").await;
    (proc, addr)
}

/// The command of LOAD_WRAP that the server runs under when profiling: valgrind or perf.
pub fn wrapper() -> Option<Vec<String>> {
    let args = std::env::var("LOAD_WRAP").ok()?;
    Some(args.split_whitespace().map(String::from).collect())
}

/// This bench re-executed as the OAuth server with in-memory grant state (see `serve.rs`).
pub async fn memory_server(name: &str, mcp_server: Option<&str>) -> (Proc, SocketAddr) {
    reexec(name, "--serve", mcp_server, "the in-memory OAuth server").await
}

/// This bench re-executed as the floor under `/token` (see `serve::floor_main`).
pub async fn floor_server() -> (Proc, SocketAddr) {
    reexec("token-floor", "--floor", None, "the floor server").await
}

/// This bench re-executed as a floor under `/mcp` or its streams, `kind` one of `hyper`,
/// `axum`, `h2-h1`, `h1-h2` and `h2-h2` (see `serve::relay_main`), in front of the MCP
/// server at `mcp_server`.
pub async fn relay_server(kind: &str, mcp_server: &str) -> (Proc, SocketAddr) {
    let (name, flag) = (format!("{kind}-relay"), format!("--{kind}-relay"));
    reexec(&name, &flag, Some(mcp_server), "a floor").await
}

/// This bench started again as `<flag> ADDR [MCP_SERVER_URL]`, logging into the phase folder
/// `name`; once it listens, the process and its address.
async fn reexec(
    name: &str,
    flag: &str,
    mcp_server: Option<&str>,
    what: &str,
) -> (Proc, SocketAddr) {
    let dir = workdir(name);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let exe = std::env::current_exe().unwrap();
    // LOAD_WRAP="valgrind --tool=callgrind --callgrind-out-file=F" (or massif, or
    // "perf record -e cpu-clock -g -o F --") runs it under a profiler.
    let mut cmd = match wrapper().as_deref() {
        Some([program, args @ ..]) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(exe);
            cmd
        }
        _ => Command::new(exe),
    };
    cmd.args([flag, &addr.to_string()]);
    cmd.args(mcp_server);
    let proc = spawn(&mut cmd, &dir);
    wait_listening(addr, what).await;
    (proc, addr)
}

/// The node peer (`bench/peer.mjs`); its issuer is `http://<addr>`.
pub async fn peer() -> (Proc, SocketAddr) {
    let dir = workdir("peer");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/peer.mjs");
    let mut child = Command::new("node")
        .arg(script)
        .env("NODE_ENV", "production")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log_file(&dir, "stderr.log"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (mut reader, mut line) = (BufReader::new(stdout), String::new());
    tokio::time::timeout(Duration::from_secs(30), reader.read_line(&mut line))
        .await
        .expect("the peer did not start")
        .unwrap();
    let issuer = line
        .trim()
        .strip_prefix("PEER_READY ")
        .unwrap_or_else(|| panic!("the peer said {line:?}"));
    let addr = issuer.trim_start_matches("http://").parse().unwrap();
    (Proc { child, pid }, addr)
}

/// `mcp-connector run` against the API server at `api_url`, watching `namespace`.
pub fn run(api_url: &str, namespace: &str, listen: SocketAddr, admin: SocketAddr) -> Proc {
    let dir = workdir("run");
    let kubeconfig = dir.join("kubeconfig");
    let config = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: double\n\
         clusters: [{{name: double, cluster: {{server: \"{api_url}\"}}}}]\n\
         users: [{{name: bench, user: {{token: bench}}}}]\n\
         contexts: [{{name: double, context: {{cluster: double, user: bench, \
         namespace: {namespace}}}}}]\n"
    );
    std::fs::write(&kubeconfig, config).unwrap();

    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--namespace", namespace])
        .args(["--listen", &listen.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAME", "mcp-connector-0")
        .env("POD_NAMESPACE", namespace);
    spawn(&mut cmd, &dir)
}

/// Starts `cmd` with no input and its output logged into `dir`, killed when dropped.
fn spawn(cmd: &mut Command, dir: &Path) -> Proc {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log_file(dir, "stdout.log"))
        .stderr(log_file(dir, "stderr.log"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    Proc { child, pid }
}

/// The soft limit of open files of this process (children inherit it).
pub fn open_files_limit() -> usize {
    let text = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1024)
}
