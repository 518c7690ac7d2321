//! Load runs on loopback, side by side with a peer (node's `oidc-provider`, configured in
//! `bench/peer.mjs`) and against the targets. Run by `bench/run.sh`, which builds in release
//! mode and raises the open-files limit first; prints one Markdown table.
//!
//! `cargo bench --bench load -- [--only token,mcp,streams,cluster,run]`
//!
//! What runs where: `mcp-connector dev` and `run` are the release binary in child
//! processes, so their resident memory and CPU time are read from `/proc/<pid>`; the peer is
//! a node child; the MCP server behind `/mcp` (`dev`'s `whoami`) and the Kubernetes API
//! double run in this process, on their own runtimes or tasks. Everything shares the
//! machine's cores, so rates are of the whole box, driver included; the CPU each server
//! spent per request is printed too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../tests/support/apiserver/mod.rs"]
mod apiserver;
mod client;
mod cluster;
mod mcp;
mod oauth;
mod procs;
mod serve;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use client::{Conn, Samples};
use oauth::Server;

/// Concurrent connections driving `/token`.
const TOKEN_WORKERS: usize = 16;
/// Codes redeemed in the timed authorization_code run of each server, and refresh tokens
/// (of as many grants) refreshed in the timed refresh_token run.
const OUR_CODES: usize = 20_000;
const DEV_CODES: usize = 2_000;
const PEER_CODES: usize = 2_000;
/// The fixed rate of the `/mcp` latency run, calls a second.
const MCP_RATE: f64 = 500.0;
/// Streams held open through `/mcp`.
const STREAMS: usize = 10_000;
/// Connectors reconciled.
const CONNECTORS: usize = 500;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let mcp_server = args.get(i + 2).map(String::as_str);
        return serve::main(&args[i + 1], mcp_server);
    }
    if let Some(i) = args.iter().position(|a| a == "--floor") {
        return serve::floor_main(&args[i + 1]);
    }
    for kind in ["hyper", "h2-h1", "h1-h2", "h2-h2", "axum"] {
        if let Some(i) = args.iter().position(|a| *a == format!("--{kind}-relay")) {
            return serve::relay_main(kind, &args[i + 1], &args[i + 2]);
        }
    }
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(String::from).collect::<Vec<_>>());
    let wants = |phase: &str| only.as_ref().is_none_or(|o| o.iter().any(|p| p == phase));

    // The in-process controller's warnings (failed reconcile passes) go to a file.
    let log = std::fs::File::create(procs::workdir("driver").join("driver.log")).unwrap();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::sync::Mutex::new(log))
        .with_ansi(false)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut report = Report::new();
    rt.block_on(async {
        if wants("token") {
            token_phase(&mut report).await;
        }
        if wants("mcp") {
            mcp_phase(&mut report).await;
        }
        if wants("streams") {
            streams_phase(&mut report).await;
        }
        if wants("cluster") {
            cluster_phase(&mut report).await;
        }
        if wants("run") {
            run_phase(&mut report).await;
        }
    });
    print!("{}", report.render());
}

/// The table, and the notes under it.
struct Report {
    rows: Vec<[String; 6]>,
    notes: Vec<String>,
    started: jiff::Timestamp,
    load_before: String,
}

fn verdict(met: bool) -> String {
    if met { "met" } else { "**missed**" }.into()
}

impl Report {
    fn new() -> Report {
        Report {
            rows: Vec::new(),
            notes: Vec::new(),
            started: jiff::Timestamp::now(),
            load_before: loadavg(),
        }
    }

    fn row(
        &mut self,
        what: &str,
        ours: String,
        peer: String,
        ratio: String,
        target: &str,
        met: String,
    ) {
        self.rows
            .push([what.into(), ours, peer, ratio, target.into(), met]);
    }

    fn note(&mut self, note: String) {
        eprintln!("load: {note}");
        self.notes.push(note);
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}\n", machine(self.started, &self.load_before));
        let head = [
            "measure",
            "mcp-connector",
            "oidc-provider (peer)",
            "ratio (ours better by)",
            "target",
            "met?",
        ];
        let _ = writeln!(out, "| {} |", head.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(head.len()));
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out.push('\n');
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        out
    }
}

fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine(started: jiff::Timestamp, load_before: &str) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    format!(
        "Machine: {} cores (nproc), {model}, {:.1} GiB memory; load average {load_before} \
         before the run, {} after; open-files limit {}; started {}",
        cores(),
        mem_kb / 1024.0 / 1024.0,
        loadavg(),
        procs::open_files_limit(),
        started.strftime("%Y-%m-%d %H:%M UTC"),
    )
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Mean time of `access_token::mint` (the signature, JSON and base64), measured here so
/// that the target uses this machine's number.
fn mint_time() -> Duration {
    use mcp_connector::oauth::access_token::mint;

    let keys = serve::fresh_keys();
    let claims = serve::sample_claims("http://127.0.0.1:8080");
    for _ in 0..200 {
        mint(&keys, &claims).unwrap();
    }
    // The fastest of five batches: the machine is shared, and others' load only slows.
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..1000 {
                mint(&keys, &claims).unwrap();
            }
            start.elapsed() / 1000
        })
        .min()
        .unwrap_or_default()
}

fn ms(v: f64) -> String {
    format!("{v:.2} ms")
}

fn per_s(v: f64) -> String {
    format!("{v:.0}/s")
}

fn times(v: f64) -> String {
    format!("{v:.1}×")
}

fn mib(v: f64) -> String {
    format!("{v:.1} MiB")
}

/// One server's `/token` runs.
struct TokenRuns {
    code: Samples,
    refresh: Samples,
    cpu_per_code: Duration,
    cpu_per_refresh: Duration,
    rss_idle: f64,
    rss_after: f64,
}

async fn token_runs(server: Server, proc: &procs::Proc, codes: usize) -> TokenRuns {
    let rss_idle = proc.rss_mib();
    let client = oauth::register(&server).await;

    // Warm up (node's JIT, both servers' allocators), untimed.
    let warm = oauth::codes(&client, 500, 8).await;
    oauth::redeem_all(&client, warm, TOKEN_WORKERS).await;

    let pool = oauth::codes(&client, codes, 8).await;
    let cpu = proc.cpu();
    let code = oauth::redeem_all(&client, pool, TOKEN_WORKERS).await;
    let cpu_code = proc.cpu() - cpu;

    let pool = oauth::refresh_tokens(&client, codes, 8).await;
    let cpu = proc.cpu();
    let refresh = oauth::refresh_all(&client, pool, TOKEN_WORKERS).await;
    let cpu_refresh = proc.cpu() - cpu;

    TokenRuns {
        cpu_per_code: per_request(cpu_code, code.micros.len()),
        cpu_per_refresh: per_request(cpu_refresh, refresh.micros.len()),
        code,
        refresh,
        rss_idle,
        rss_after: proc.rss_mib(),
    }
}

/// One run against the floor server (`serve::floor_main`).
struct FloorRun {
    label: &'static str,
    samples: Samples,
    cpu_per_request: Duration,
}

/// Two floors under `/token` here, from the same driver: the product's `serve` and an
/// axum router that parse each form and answer with a token response made once, and the
/// same signing an access token per request. They leave out the rest of `/token`: the
/// product's middleware, the grant state, sealing, the checks and the log line. The forms
/// are as long as real ones: each carries a real code of `ours`, which the floor ignores.
async fn floor_runs(ours: std::net::SocketAddr) -> Vec<FloorRun> {
    let client = oauth::register(&Server::ours(ours)).await;
    let code = oauth::codes(&client, 1, 1).await.remove(0);
    let codes = vec![code; OUR_CODES];
    let (proc, addr) = procs::floor_server().await;

    let mut runs = Vec::new();
    for (label, path) in [
        ("a form answered with a token response made once", "/fixed"),
        (
            "a form answered after signing an ES256 access token",
            "/signed",
        ),
    ] {
        let floor_client = oauth::Client {
            server: Server {
                token: path,
                ..Server::ours(addr)
            },
            ..client.clone()
        };
        oauth::redeem_all(&floor_client, codes[..500].to_vec(), TOKEN_WORKERS).await;

        let cpu = proc.cpu();
        let samples = oauth::redeem_all(&floor_client, codes.clone(), TOKEN_WORKERS).await;
        let cpu_per_request = per_request(proc.cpu() - cpu, samples.micros.len());
        runs.push(FloorRun {
            label,
            samples,
            cpu_per_request,
        });
    }
    runs
}

/// `cpu` shared out over `n` requests.
fn per_request(cpu: Duration, n: usize) -> Duration {
    cpu / u32::try_from(n.max(1)).unwrap_or(u32::MAX)
}

async fn token_phase(report: &mut Report) {
    let mint = mint_time();
    let cores = cores();
    let ceiling = cores as f64 / mint.as_secs_f64();

    if procs::wrapper().is_some() {
        // A short run of our server alone, under valgrind.
        let (proc, addr) = procs::memory_server("token-callgrind", None).await;
        let runs = token_runs(Server::ours(addr), &proc, 2_000).await;
        report.note(format!(
            "under callgrind: {} codes, {} refreshes",
            runs.code.micros.len(),
            runs.refresh.micros.len()
        ));
        proc.terminate(Duration::from_secs(60)).await;
        return;
    }
    let (ours_proc, ours_addr) = procs::memory_server("token", None).await;
    let mut ours = token_runs(Server::ours(ours_addr), &ours_proc, OUR_CODES).await;
    let floors = floor_runs(ours_addr).await;
    drop(ours_proc);
    let (dev_proc, dev_addr) = procs::dev("token-dev", None, false).await;
    let mut dev = token_runs(Server::ours(dev_addr), &dev_proc, DEV_CODES).await;
    drop(dev_proc);
    let (peer_proc, peer_addr) = procs::peer().await;
    let mut peer = token_runs(Server::peer(peer_addr), &peer_proc, PEER_CODES).await;
    drop(peer_proc);

    for (grant, o, p, cpu_o, cpu_p) in [
        (
            "authorization_code",
            &mut ours.code,
            &mut peer.code,
            ours.cpu_per_code,
            peer.cpu_per_code,
        ),
        (
            "refresh_token",
            &mut ours.refresh,
            &mut peer.refresh,
            ours.cpu_per_refresh,
            peer.cpu_per_refresh,
        ),
    ] {
        let (ro, rp) = (o.rate(), p.rate());
        let target = format!("≥ 10× peer and ≥ {:.0}/s", 0.6 * ceiling);
        let met = ro >= 10.0 * rp && ro >= 0.6 * ceiling;
        report.row(
            &format!("`/token` {grant}, {TOKEN_WORKERS} connections"),
            per_s(ro),
            per_s(rp),
            times(ro / rp),
            &target,
            verdict(met),
        );
        let (o50, p50, o99, p99) = (
            o.quantile_ms(0.5),
            p.quantile_ms(0.5),
            o.quantile_ms(0.99),
            p.quantile_ms(0.99),
        );
        report.row(
            &format!("`/token` {grant} p50 / p99"),
            format!("{} / {}", ms(o50), ms(o99)),
            format!("{} / {}", ms(p50), ms(p99)),
            format!("{} / {}", times(p50 / o50), times(p99 / o99)),
            "",
            String::new(),
        );
        report.row(
            &format!("`/token` {grant}: server CPU per token"),
            format!("{:.0} µs", cpu_o.as_secs_f64() * 1e6),
            format!("{:.0} µs", cpu_p.as_secs_f64() * 1e6),
            times(cpu_p.as_secs_f64() / cpu_o.as_secs_f64()),
            &format!(
                "{cores} cores ÷ this = {:.0}/s",
                cores as f64 / cpu_o.as_secs_f64()
            ),
            String::new(),
        );
        if o.errors + p.errors > 0 {
            report.note(format!(
                "{grant}: {} errors ours ({:?}), {} peer ({:?})",
                o.errors, o.first_error, p.errors, p.first_error
            ));
        }
    }
    for (grant, d, p) in [
        ("authorization_code", &mut dev.code, &mut peer.code),
        ("refresh_token", &mut dev.refresh, &mut peer.refresh),
    ] {
        let (rd, rp) = (d.rate(), p.rate());
        report.row(
            &format!("`/token` {grant} of the `dev` binary (grant state saved to a file)"),
            format!(
                "{} (p50 {}, p99 {})",
                per_s(rd),
                ms(d.quantile_ms(0.5)),
                ms(d.quantile_ms(0.99))
            ),
            per_s(rp),
            times(rd / rp),
            "",
            String::new(),
        );
        if d.errors > 0 {
            report.note(format!(
                "`dev` binary, {grant}: {} of {} requests failed, the first with {:?}",
                d.errors,
                d.errors + d.micros.len() as u64,
                d.first_error
            ));
        }
    }
    let ours_code_rate = ours.code.rate();
    for mut floor in floors {
        let rate = floor.samples.rate();
        report.row(
            &format!(
                "floor under `/token`: {}, {TOKEN_WORKERS} connections",
                floor.label
            ),
            format!(
                "{} (p50 {}), {:.0} µs server CPU each",
                per_s(rate),
                ms(floor.samples.quantile_ms(0.5)),
                floor.cpu_per_request.as_secs_f64() * 1e6
            ),
            "n/a".into(),
            format!("ours at {:.0} % of it", ours_code_rate / rate * 100.0),
            "",
            String::new(),
        );
        if floor.samples.errors > 0 {
            report.note(format!(
                "floor, {}: {} errors",
                floor.label, floor.samples.errors
            ));
        }
    }
    report.row(
        "resident memory before / after the `/token` runs",
        format!("{} / {}", mib(ours.rss_idle), mib(ours.rss_after)),
        format!("{} / {}", mib(peer.rss_idle), mib(peer.rss_after)),
        times(peer.rss_after / ours.rss_after),
        "",
        String::new(),
    );
    report.note(format!(
        "ES256 signing (`access_token::mint`, fastest of 5×1000 here): {:.1} µs; {cores} \
         cores ÷ that = {ceiling:.0}/s, 60 % = {:.0}/s. The peer is one node process (its \
         memory adapter cannot be shared between processes), so it uses one core.",
        mint.as_secs_f64() * 1e6,
        0.6 * ceiling
    ));
}

/// Samples of several timed slices, with the slices' total wall time.
fn pooled(slices: Vec<Samples>) -> Samples {
    let mut all = Samples::default();
    for s in slices {
        all.elapsed += s.elapsed;
        all.merge(s);
    }
    all
}

async fn login(addr: std::net::SocketAddr) -> String {
    let client = oauth::register(&Server::ours(addr)).await;
    let mut conn = Conn::open(addr).await.unwrap();
    let code = oauth::code(&mut conn, &client, &mut client::Jar::default()).await;
    oauth::redeem(&mut conn, &client, &code).await.access_token
}

/// One slice of a fixed-rate run.
const SLICE: Duration = Duration::from_millis(1500);

async fn mcp_phase(report: &mut Report) {
    let up = mcp::upstream();
    let up_url = format!("http://{up}/mcp");
    let direct = mcp::Target {
        addr: up,
        path: "/mcp".into(),
        bearer: None,
        extra: Vec::new(),
    };
    // LOAD_WRAP: the same server under a profiler (see `procs::memory_server`), HTTP/1.1.
    let (h1, h1_addr) = match procs::wrapper() {
        Some(_) => procs::memory_server("mcp-callgrind", Some(&up_url)).await,
        None => procs::dev("mcp-h1", Some(&up_url), false).await,
    };
    let (h2, h2_addr) = procs::dev("mcp-h2", Some(&up_url), true).await;
    let (hyper_relay, hyper_addr) = procs::relay_server("hyper", &up_url).await;
    let (axum_relay, axum_addr) = procs::relay_server("axum", &up_url).await;
    let to = |addr, bearer| mcp::Target {
        addr,
        path: "/mcp".into(),
        bearer,
        extra: Vec::new(),
    };
    let ours_h1 = to(h1_addr, Some(login(h1_addr).await));
    let identified = mcp::Target {
        extra: mcp::identity(&ours_h1).await,
        ..direct.clone()
    };
    // Each path: its label, the process whose CPU is measured, the target, and whether the
    // targets of the issue apply (ours) or it is a floor.
    let paths = [
        (
            "`/mcp`, HTTP/1.1 to the MCP server",
            Some(&h1),
            ours_h1,
            true,
        ),
        (
            "`/mcp`, HTTP/2 to the MCP server",
            Some(&h2),
            to(h2_addr, Some(login(h2_addr).await)),
            true,
        ),
        (
            "the MCP server called directly with the identity headers `/mcp` adds",
            None,
            identified,
            false,
        ),
        (
            "a bare TCP relay (the floor of any proxy here)",
            None,
            to(mcp::relay(up), None),
            false,
        ),
        (
            "a bare hyper HTTP/1.1 proxy (the floor of an HTTP proxy here)",
            Some(&hyper_relay),
            to(hyper_addr, None),
            false,
        ),
        (
            "the product's `serve`, axum and per-connection upstreams, nothing checked",
            Some(&axum_relay),
            to(axum_addr, None),
            false,
        ),
    ];

    // Warm up every path, then alternate short slices so that drift in the machine's
    // other load falls on all alike.
    mcp::fixed_rate(&direct, MCP_RATE, 4, Duration::from_millis(500)).await;
    for (_, _, target, _) in &paths {
        mcp::fixed_rate(target, MCP_RATE, 4, Duration::from_millis(500)).await;
    }
    let mut direct_slices = Vec::new();
    let mut slices: Vec<Vec<Samples>> = paths.iter().map(|_| Vec::new()).collect();
    let mut cpu = vec![Duration::ZERO; paths.len()];
    let mut switches = vec![0u64; paths.len()];
    let mut syscalls = vec![0u64; paths.len()];
    for _ in 0..4 {
        direct_slices.push(mcp::fixed_rate(&direct, MCP_RATE, 4, SLICE).await);
        for (i, (_, proc, target, _)) in paths.iter().enumerate() {
            let before = proc.map(|p| (p.cpu(), p.context_switches(), p.syscalls()));
            slices[i].push(mcp::fixed_rate(target, MCP_RATE, 4, SLICE).await);
            if let (Some(p), Some((c, s, (r, w)))) = (proc, before) {
                let (r2, w2) = p.syscalls();
                cpu[i] += p.cpu() - c;
                switches[i] += p.context_switches() - s;
                syscalls[i] += (r2 - r) + (w2 - w);
            }
        }
    }
    let mut d = pooled(direct_slices);
    let (d50, d99) = (d.quantile_ms(0.5), d.quantile_ms(0.99));
    report.note(format!(
        "`/mcp` at {MCP_RATE:.0} calls/s (`tools/call whoami` on an initialized session, {} \
         calls each way): direct p50 {} p99 {}.",
        d.micros.len(),
        ms(d50),
        ms(d99)
    ));
    for (i, mut p) in slices.into_iter().map(pooled).enumerate() {
        let (label, proc, _, ours) = &paths[i];
        let (p50, p99) = (p.quantile_ms(0.5), p.quantile_ms(0.99));
        let (add50, add99) = (p50 - d50, p99 - d99);
        report.row(
            &format!("{label}: added latency at {MCP_RATE:.0} calls/s, p50 / p99"),
            format!("{} / {}", ms(add50), ms(add99)),
            "n/a".into(),
            String::new(),
            if *ours { "≤ 0.1 ms / ≤ 1 ms" } else { "" },
            if *ours {
                verdict(add50 <= 0.1 && add99 <= 1.0)
            } else {
                String::new()
            },
        );
        let calls = p.micros.len().max(1) as f64;
        let spent = match proc {
            Some(_) => format!(
                "; the proxy spent {:.0} µs of CPU, {:.1} context switches and {:.1} read and \
                 write system calls per call (idle wake-ups included)",
                cpu[i].as_secs_f64() / calls * 1e6,
                switches[i] as f64 / calls,
                syscalls[i] as f64 / calls
            ),
            None => String::new(),
        };
        report.note(format!(
            "{label} at {MCP_RATE:.0} calls/s: p50 {} p99 {}{spent}; errors {} direct, {} \
             through it.",
            ms(p50),
            ms(p99),
            d.errors,
            p.errors
        ));
    }

    let mut direct_max = Vec::new();
    let mut maxes: Vec<Vec<Samples>> = paths.iter().map(|_| Vec::new()).collect();
    let mut cpu = vec![Duration::ZERO; paths.len()];
    let mut writes = vec![0u64; paths.len()];
    for _ in 0..2 {
        direct_max.push(mcp::max_rate(&direct, 16, Duration::from_secs(2)).await);
        for (i, (_, proc, target, _)) in paths.iter().enumerate() {
            let before = proc.map(|p| (p.cpu(), p.syscalls().1));
            maxes[i].push(mcp::max_rate(target, 16, Duration::from_secs(2)).await);
            if let (Some(p), Some((c, w))) = (proc, before) {
                cpu[i] += p.cpu() - c;
                writes[i] += p.syscalls().1 - w;
            }
        }
    }
    let dm = pooled(direct_max);
    report.note(format!(
        "`/mcp` maximum with 16 connections: {} direct (errors {}), which costs the driver and \
         the MCP server together {:.0} µs of CPU a call (2 cores ÷ the rate).",
        per_s(dm.rate()),
        dm.errors,
        cores() as f64 / dm.rate() * 1e6,
    ));
    for (i, pm) in maxes.into_iter().map(pooled).enumerate() {
        let (label, proc, _, ours) = &paths[i];
        let kept = pm.rate() / dm.rate();
        report.row(
            &format!("{label}: throughput kept (16 connections)"),
            format!("{:.0} %", kept * 100.0),
            "n/a".into(),
            String::new(),
            if *ours { "≥ 80 %" } else { "" },
            if *ours {
                verdict(kept >= 0.8)
            } else {
                String::new()
            },
        );
        let calls = pm.micros.len().max(1) as f64;
        let spent = match proc {
            Some(_) => format!(
                "; the proxy spent {:.0} µs of CPU and {:.1} write system calls per call",
                cpu[i].as_secs_f64() / calls * 1e6,
                writes[i] as f64 / calls
            ),
            None => String::new(),
        };
        report.note(format!(
            "{label} at its maximum: {} (errors {}){spent}.",
            per_s(pm.rate()),
            pm.errors
        ));
    }
    for proc in [h1, h2, hyper_relay, axum_relay] {
        proc.terminate(Duration::from_secs(60)).await;
    }
}

async fn streams_phase(report: &mut Report) {
    let up = mcp::upstream();
    let up_url = format!("http://{up}/mcp");
    let direct = mcp::Target {
        addr: up,
        path: "/mcp".into(),
        bearer: None,
        extra: Vec::new(),
    };
    // Over HTTP/1.1 to the MCP server, each stream through `/mcp` is two sockets in the
    // operator (client and MCP server side) and, here, two in this process (client and
    // MCP server); the open-files limit caps what fits.
    let limit = procs::open_files_limit();
    let one_each = STREAMS.min(limit.saturating_sub(600));
    let two_each = STREAMS.min(limit.saturating_sub(600) / 2 / 100 * 100);

    // (label, streams, HTTP/2 in, HTTP/2 to the MCP server)
    let mut variants = vec![
        (
            "HTTP/1.1 in, HTTP/1.1 to the MCP server",
            two_each,
            false,
            false,
        ),
        (
            "HTTP/2 in, HTTP/1.1 to the MCP server",
            one_each,
            true,
            false,
        ),
        (
            "HTTP/1.1 in, HTTP/2 to the MCP server",
            one_each,
            false,
            true,
        ),
        ("HTTP/2 in, HTTP/2 to the MCP server", STREAMS, true, true),
    ];
    if procs::wrapper().is_some() {
        // A short run under valgrind (massif): 1,000 HTTP/1.1 streams.
        variants = vec![(
            "HTTP/1.1 in, HTTP/1.1 to the MCP server",
            1_000,
            false,
            false,
        )];
    }
    for variant @ (label, count, http2_in, http2_out) in variants {
        let name = format!("streams-{}-{}", http2_in as u8 + 1, http2_out as u8 + 1);
        let (ours, addr) = match procs::wrapper() {
            Some(_) => procs::memory_server(&name, Some(&up_url)).await,
            None => procs::dev(&name, Some(&up_url), http2_out).await,
        };
        let proxied = mcp::Target {
            addr,
            path: "/mcp".into(),
            bearer: Some(login(addr).await),
            extra: Vec::new(),
        };
        mcp::max_rate(&proxied, 2, Duration::from_millis(200)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let base = ours.rss_mib();

        let ids = mcp::sessions(&direct, count, 16).await;
        let open = if http2_in {
            mcp::open_http2(&proxied, ids, 100).await
        } else {
            mcp::open_http1(&proxied, ids, 128).await
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (rss, fds) = (ours.rss_mib(), ours.fds());
        let per_kib = (rss - base) * 1024.0 / open.opened.max(1) as f64;
        let at_10k = base + per_kib * STREAMS as f64 / 1024.0;
        let (opened, failed, took) = (open.opened, open.failed, open.took);
        drop(open);

        let measured = if count >= STREAMS {
            mib(rss)
        } else {
            format!(
                "{} ({} streams); {} at 10,000",
                mib(rss),
                count,
                mib(at_10k)
            )
        };
        report.row(
            &format!("10,000 idle event streams through `/mcp`, {label}: resident memory"),
            measured,
            "n/a".into(),
            String::new(),
            "≤ 200 MiB",
            verdict(at_10k <= 200.0),
        );
        let shape = if http2_in {
            format!(
                "{} HTTP/2 connections of 100 streams in",
                count.div_ceil(100)
            )
        } else {
            "one HTTP/1.1 connection each in".into()
        };
        report.note(format!(
            "streams, {label}: {opened} of {count} opened in {:.1} s ({shape}), {failed} \
             failed; operator {} before, {} with them open ({per_kib:.1} KiB a stream), {fds} \
             open files.",
            took.as_secs_f64(),
            mib(base),
            mib(rss),
        ));
        ours.terminate(Duration::from_secs(60)).await;
        if procs::wrapper().is_none() {
            hyper_streams(report, &direct, &up_url, variant).await;
        }
    }
}

/// The floor under a row of streams: as many streams through a bare hyper proxy, which
/// holds for each what the protocols on its two sides need and nothing else. HTTP/1.1 in
/// and out is the proxy of the `/mcp` floors, a connection in and one out per stream; the
/// other rows go through `serve::pooled_relay`.
async fn hyper_streams(
    report: &mut Report,
    direct: &mcp::Target,
    up_url: &str,
    (label, count, http2_in, http2_out): (&str, usize, bool, bool),
) {
    let kind = match (http2_in, http2_out) {
        (false, false) => "hyper",
        (true, false) => "h2-h1",
        (false, true) => "h1-h2",
        (true, true) => "h2-h2",
    };
    let (relay, addr) = procs::relay_server(kind, up_url).await;
    let target = mcp::Target {
        addr,
        path: "/mcp".into(),
        bearer: None,
        extra: Vec::new(),
    };
    mcp::max_rate(&target, 2, Duration::from_millis(200)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = relay.rss_mib();

    let ids = mcp::sessions(direct, count, 16).await;
    let open = if http2_in {
        mcp::open_http2(&target, ids, 100).await
    } else {
        mcp::open_http1(&target, ids, 128).await
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = relay.rss_mib();
    let per_kib = (rss - base) * 1024.0 / open.opened.max(1) as f64;
    let at_10k = base + per_kib * STREAMS as f64 / 1024.0;
    report.row(
        &format!("the same streams through a bare hyper proxy (the floor), {label}"),
        format!(
            "{} ({} streams); {} at 10,000",
            mib(rss),
            open.opened,
            mib(at_10k)
        ),
        "n/a".into(),
        String::new(),
        "",
        String::new(),
    );
    report.note(format!(
        "streams through the bare hyper proxy, {label}: {} of {count} opened, {} failed; {} \
         before, {} with them open ({per_kib:.1} KiB a stream).",
        open.opened,
        open.failed,
        mib(base),
        mib(rss),
    ));
    drop(open);
    relay.terminate(Duration::from_secs(60)).await;
}

async fn cluster_phase(report: &mut Report) {
    let r = cluster::reconcile_many(CONNECTORS).await;
    let secs = r.ready.as_secs_f64();
    report.row(
        &format!(
            "{} `McpConnector`s reconciled to Ready (in process)",
            r.count
        ),
        format!("{secs:.1} s"),
        "n/a".into(),
        String::new(),
        "≤ 10 s",
        verdict(secs <= 10.0),
    );
    report.note(format!(
        "{} connectors: all Ready after {secs:.2} s, all served by the key store after {:.2} \
         s; {} reconcile passes ({} failed), {} API requests.",
        r.count,
        r.serving.as_secs_f64(),
        r.reconciles,
        r.errors,
        r.requests
    ));
}

async fn run_phase(report: &mut Report) {
    let r = cluster::idle_run(Duration::from_secs(3), CONNECTORS).await;
    report.row(
        "idle `mcp-connector run`: resident memory (one connector)",
        mib(r.one_mib),
        "n/a".into(),
        String::new(),
        "≤ 20 MiB",
        verdict(r.one_mib <= 20.0),
    );
    report.note(format!(
        "`mcp-connector run` on the API double: {} with no connector, {} with one (of which \
         {} its own heap and stacks, {} the binary's pages), {} with {} (all {} Ready {:.1} s \
         after they were created).",
        mib(r.empty_mib),
        mib(r.one_mib),
        mib(r.one_split.0),
        mib(r.one_split.1),
        mib(r.many_mib),
        r.many,
        r.many,
        r.many_ready.as_secs_f64()
    ));
}
