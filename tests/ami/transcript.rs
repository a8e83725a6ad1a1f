//! The fake AMI server is faithful: replaying every client request of the real-Asterisk
//! transcript against it yields the transcript's server bytes, line for line, with the
//! recorded delays and closes. The same replay runs against its process form
//! (`tests/peers/ami/server.py`, the chaos tests' AMI peer).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::common::fake_ami::{
    AUTH_FAIL_DELAY, AUTHTIMEOUT, FakeAmi, FakeAmiConfig, process_command,
};

/// The committed copy; when the project's shared/ directory is beside the repository the
/// copy must equal the original.
fn transcript() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let copy = std::fs::read_to_string(root.join("tests/ami/data/ami-transcript.txt"))
        .expect("transcript copy");
    let original = root.join("../shared/peers/ami-transcript.txt");
    if let Ok(orig) = std::fs::read_to_string(&original) {
        assert_eq!(
            orig,
            copy,
            "tests/ami/data/ami-transcript.txt differs from {}",
            original.display()
        );
    }
    copy
}

#[derive(Debug)]
enum Step {
    /// Client bytes.
    Send(Vec<u8>),
    /// Server lines (each with its CRLF), and the recorded delay in ms when given.
    Expect(Vec<String>, Option<u64>),
    /// Server closes, after the recorded delay.
    Eof(u64),
}

/// One TCP connection of the transcript.
#[derive(Debug, Default)]
struct Conn {
    section: String,
    steps: Vec<Step>,
}

fn unescape(s: &str) -> String {
    s.replace("\\r\\n", "\r\n")
}

fn delay_of(line: &str) -> Option<u64> {
    let i = line.find("(+")?;
    let rest = &line[i + 2..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Splits the transcript into connections: a banner line starts a new one.
fn parse(text: &str) -> Vec<Conn> {
    let mut conns: Vec<Conn> = Vec::new();
    let mut section = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("=====") {
            if let Some(title) = lines.next() {
                section = title.trim().to_string();
            }
            lines.next();
            continue;
        }
        if let Some(rest) = line.strip_prefix("<<< ") {
            let l = unescape(rest);
            if l.starts_with("Asterisk Call Manager/") || conns.is_empty() {
                conns.push(Conn {
                    section: section.clone(),
                    steps: Vec::new(),
                });
            }
            let conn = conns.last_mut().expect("connection");
            match conn.steps.last_mut() {
                Some(Step::Expect(ls, None)) => ls.push(l),
                _ => conn.steps.push(Step::Expect(vec![l], None)),
            }
        } else if let Some(rest) = line.strip_prefix(">>> ") {
            let conn = conns.last_mut().expect("client line before any banner");
            let b = unescape(rest).into_bytes();
            match conn.steps.last_mut() {
                Some(Step::Send(bytes)) => bytes.extend_from_slice(&b),
                _ => conn.steps.push(Step::Send(b)),
            }
        } else if line.contains("<connection closed by server (EOF)>") {
            let d = delay_of(line).expect("EOF delay");
            conns
                .last_mut()
                .expect("connection")
                .steps
                .push(Step::Eof(d));
        } else if line.trim_start().starts_with("(+")
            && let Some(conn) = conns.last_mut()
            && let Some(Step::Expect(_, d @ None)) = conn.steps.last_mut()
        {
            *d = delay_of(line);
        }
    }
    conns
}

/// Values that differ on every run in the real recording too: the Ping timestamp.
fn normalize(line: &str) -> String {
    if let Some(v) = line.strip_prefix("Timestamp: ") {
        let v = v.trim_end();
        let ok = v.split_once('.').is_some_and(|(s, us)| {
            s.len() >= 10
                && us.len() == 6
                && s.bytes().chain(us.bytes()).all(|b| b.is_ascii_digit())
        });
        assert!(ok, "timestamp `{v}` is not <epoch>.<micros>");
        return "Timestamp: <epoch.micros>\r\n".into();
    }
    line.to_string()
}

async fn replay(conn: &Conn, fake_addr: &str, authtimeout: Duration) {
    let what = &conn.section;
    let sock = TcpStream::connect(fake_addr).await.expect("connect fake");
    let (rd, mut wr) = sock.into_split();
    let mut rd = BufReader::new(rd);
    let mut last_request = Instant::now();
    for step in &conn.steps {
        match step {
            Step::Send(b) => {
                wr.write_all(b).await.expect("write");
                last_request = Instant::now();
            }
            Step::Expect(lines, delay) => {
                for want in lines {
                    let mut got = Vec::new();
                    tokio::time::timeout(Duration::from_secs(3), rd.read_until(b'\n', &mut got))
                        .await
                        .unwrap_or_else(|_| panic!("[{what}] no line, expected {want:?}"))
                        .expect("read");
                    let got = String::from_utf8(got).expect("utf-8");
                    assert_eq!(
                        normalize(&got),
                        normalize(want),
                        "[{what}] server line differs"
                    );
                }
                let took = last_request.elapsed();
                check_delay(what, *delay, took);
            }
            Step::Eof(delay) => {
                let mut rest = Vec::new();
                let limit = if *delay > 5000 {
                    authtimeout + Duration::from_secs(3)
                } else {
                    Duration::from_secs(3)
                };
                let n = tokio::time::timeout(limit, rd.read_until(b'\n', &mut rest))
                    .await
                    .unwrap_or_else(|_| panic!("[{what}] server did not close"))
                    .expect("read");
                assert_eq!(
                    n,
                    0,
                    "[{what}] expected EOF, got {:?}",
                    String::from_utf8_lossy(&rest)
                );
                let took = last_request.elapsed();
                if *delay > 5000 {
                    // The idle disconnect: shortened in this run (see below).
                    assert!(
                        took >= authtimeout,
                        "[{what}] closed after {took:?}, before authtimeout"
                    );
                } else {
                    check_delay(what, Some(*delay), took);
                }
            }
        }
    }
}

fn check_delay(what: &str, delay: Option<u64>, took: Duration) {
    match delay {
        Some(ms) if ms >= 500 => {
            let want = Duration::from_millis(ms * 9 / 10);
            assert!(
                took >= want,
                "[{what}] answered after {took:?}, recorded +{ms} ms"
            );
        }
        Some(_) => assert!(
            took < Duration::from_millis(500),
            "[{what}] answered after {took:?}, recorded +0 ms"
        ),
        None => {}
    }
}

#[test]
fn transcript_parses_into_the_recorded_connections() {
    let conns = parse(&transcript());
    // 1-3 share a connection, 4, 5-10, 11, 12, 13, 14, 15.
    assert_eq!(conns.len(), 8, "{conns:#?}");
    let sends: usize = conns
        .iter()
        .flat_map(|c| &c.steps)
        .filter(|s| matches!(s, Step::Send(_)))
        .count();
    assert_eq!(sends, 22);
    assert_eq!(FakeAmiConfig::default().authtimeout, AUTHTIMEOUT);
    assert_eq!(
        AUTHTIMEOUT,
        Duration::from_secs(10),
        "transcript: authtimeout=10"
    );
    assert_eq!(FakeAmiConfig::default().auth_fail_delay, AUTH_FAIL_DELAY);
}

#[tokio::test]
async fn fake_replays_the_real_asterisk_transcript_byte_for_byte() {
    let conns = parse(&transcript());
    // Defaults (1 s failed-login delay included) except: the MD5 challenge is fixed to the
    // recorded one, so the recorded Key is valid; the 10 s idle disconnect is shortened.
    let authtimeout = Duration::from_millis(300);
    let fake = FakeAmi::start(FakeAmiConfig {
        challenge: Some("142936734".into()),
        authtimeout,
        ..FakeAmiConfig::default()
    })
    .await;
    let addr = fake.address();
    let runs = conns.iter().map(|c| replay(c, &addr, authtimeout));
    futures_util::future::join_all(runs).await;
    assert_eq!(fake.connections(), conns.len());
}

#[tokio::test]
async fn process_peer_replays_the_real_asterisk_transcript_byte_for_byte() {
    let conns = parse(&transcript());
    // As above: the recorded challenge, a short idle disconnect, the default 1 s delay.
    let authtimeout = Duration::from_millis(300);
    let mut cmd = process_command(std::net::Ipv4Addr::LOCALHOST.into(), 0);
    cmd.env("CHALLENGE", "142936734")
        .env("AUTHTIMEOUT_MS", authtimeout.as_millis().to_string())
        .env(
            "AUTH_FAIL_DELAY_MS",
            AUTH_FAIL_DELAY.as_millis().to_string(),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let mut child = cmd
        .spawn()
        .expect("spawn python3 tests/peers/ami/server.py");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut ready = String::new();
    tokio::time::timeout(Duration::from_secs(20), out.read_line(&mut ready))
        .await
        .expect("server.py printed no ready line within 20 s")
        .expect("read server.py stdout");
    let port: u16 = ready
        .strip_prefix("listening ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("server.py ready line: {ready:?}"));
    let addr = format!("127.0.0.1:{port}");
    let runs = conns.iter().map(|c| replay(c, &addr, authtimeout));
    futures_util::future::join_all(runs).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
}
