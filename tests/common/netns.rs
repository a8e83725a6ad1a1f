//! Network namespaces for chaos tests: [`Netns::new`] creates `ll<pid>-<n>` with a veth
//! pair (`lh…` on the host side, `lp…` inside) and a private /30 chosen per fixture
//! (`10.<100 + pid % 100>.<n / 64>.<(n % 64) * 4>`, skipped if any interface already has
//! it), so fixtures of parallel tests never collide. Peers run inside it: listening
//! sockets are created on a thread that entered it (`setns`), processes are spawned from
//! such a thread (so their PID is the server's own and `kill -9` hits it). Faults are real
//! packet loss: an nftables table inside the namespace that DROPs everything on its veth
//! ([`Netns::partition`] / [`Netns::heal`]). On drop the namespace it created (by name)
//! is deleted, which also removes the veth pair, and `/etc/netns/<name>` is removed.
//!
//! Needs root, `ip` (Debian `iproute2`) and `nft` (Debian `nftables`); if the namespace
//! cannot be made the test panics saying why (never skips).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::require_bin;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The name of a namespace plus what is needed to enter it; cheap to clone and `Send`, so
/// server fixtures can keep one to spawn their process in it again after a kill.
#[derive(Clone, Debug)]
pub struct NsRef {
    /// `ip netns` name.
    pub name: String,
    /// The address of the namespace's end of the veth pair (peers listen here).
    pub peer_ip: Ipv4Addr,
    /// The host end (the agent's source address towards the namespace).
    pub host_ip: Ipv4Addr,
}

impl NsRef {
    /// Runs `f` on a new thread that entered this namespace; its result.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = std::fs::File::open(&path)
                    .unwrap_or_else(|e| panic!("open {path} (namespace gone?): {e}"));
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns into {path}: {e}"));
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// A non-blocking TCP listener on `peer_ip:port` (0 = any) inside the namespace.
    pub fn bind_tcp(&self, port: u16) -> std::net::TcpListener {
        let ip = self.peer_ip;
        self.run_in(move || {
            let l = std::net::TcpListener::bind((ip, port))
                .unwrap_or_else(|e| panic!("bind tcp {ip}:{port} in namespace: {e}"));
            l.set_nonblocking(true).expect("nonblocking");
            l
        })
    }

    /// Spawns `cmd` (std) inside the namespace.
    pub fn spawn(&self, cmd: &mut Command) -> std::process::Child {
        self.run_in(|| cmd.spawn())
            .unwrap_or_else(|e| panic!("spawn {cmd:?} in {}: {e}", self.name))
    }

    /// Spawns `cmd` (tokio, needs the caller's runtime) inside the namespace.
    pub fn spawn_tokio(&self, cmd: &mut tokio::process::Command) -> tokio::process::Child {
        let h = tokio::runtime::Handle::current();
        self.run_in(move || {
            let _g = h.enter();
            cmd.spawn()
        })
        .unwrap_or_else(|e| panic!("spawn in {}: {e}", self.name))
    }

    /// `peer_ip:port`.
    pub fn peer(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.peer_ip, port)
    }

    /// Open TCP connections (state ESTABLISHED) to `peer_ip:port` in the namespace's own
    /// kernel table (the peer host's connection list).
    pub fn established_to(&self, port: u16) -> usize {
        let local = self.peer(port);
        self.run_in(move || {
            let text = std::fs::read_to_string("/proc/thread-self/net/tcp").unwrap_or_default();
            tcp_rows(&text)
                .filter(|r| r.local == local && r.state == 1)
                .count()
        })
    }
}

/// One row of `/proc/net/tcp`.
pub struct TcpRow {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    /// Kernel TCP state (1 = ESTABLISHED).
    pub state: u8,
    pub inode: u64,
}

fn hex_addr(s: &str) -> Option<SocketAddrV4> {
    let (ip, port) = s.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // The address is the in-memory (network order) word printed as a native integer.
    Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), port))
}

/// The rows of a `/proc/net/tcp` text.
pub fn tcp_rows(text: &str) -> impl Iterator<Item = TcpRow> + '_ {
    text.lines().skip(1).filter_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        Some(TcpRow {
            local: hex_addr(f.get(1)?)?,
            remote: hex_addr(f.get(2)?)?,
            state: u8::from_str_radix(f.get(3)?, 16).ok()?,
            inode: f.get(9)?.parse().ok()?,
        })
    })
}

/// A network namespace this test created, deleted on drop.
pub struct Netns {
    r: NsRef,
    host_if: String,
    peer_if: String,
}

fn ip_bin() -> PathBuf {
    require_bin("ip", "iproute2", &["/usr/sbin", "/sbin"])
}

fn nft_bin() -> PathBuf {
    require_bin("nft", "nftables", &["/usr/sbin", "/sbin"])
}

/// Runs a command; panics with its output if it fails.
fn must(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({cmd:?}): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn addr_in_use(ip: Ipv4Addr) -> bool {
    let out = Command::new(ip_bin())
        .args(["-o", "-4", "addr", "show"])
        .output()
        .expect("ip addr show");
    String::from_utf8_lossy(&out.stdout).contains(&format!(" {ip}/"))
}

impl Netns {
    /// Creates the namespace, its veth pair and addresses; `lo` is up inside.
    pub fn new() -> Self {
        let pid = std::process::id();
        let (n, host_ip, peer_ip) = loop {
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            let base = [
                10,
                100 + (pid % 100) as u8,
                (n / 64 % 256) as u8,
                ((n % 64) * 4) as u8,
            ];
            let host_ip = Ipv4Addr::new(base[0], base[1], base[2], base[3] + 1);
            let peer_ip = Ipv4Addr::new(base[0], base[1], base[2], base[3] + 2);
            if !addr_in_use(host_ip) && !addr_in_use(peer_ip) {
                break (n, host_ip, peer_ip);
            }
        };
        let name = format!("ll{pid}-{n}");
        let out = Command::new(ip_bin())
            .args(["netns", "add", &name])
            .output()
            .expect("run `ip netns add`");
        assert!(
            out.status.success(),
            "chaos tests need a network namespace, but `ip netns add {name}` failed: {} \
             (run the tests as root with iproute2 installed)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let ns = Netns {
            r: NsRef {
                name: name.clone(),
                peer_ip,
                host_ip,
            },
            host_if: format!("lh{pid:x}-{n}"),
            peer_if: format!("lp{pid:x}-{n}"),
        };
        let ip = ip_bin();
        must(
            Command::new(&ip).args([
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &ns.peer_if,
                "netns",
                &name,
            ]),
            "create the veth pair",
        );
        must(
            Command::new(&ip).args(["addr", "add", &format!("{host_ip}/30"), "dev", &ns.host_if]),
            "host address",
        );
        must(
            Command::new(&ip).args(["link", "set", &ns.host_if, "up"]),
            "host link up",
        );
        must(
            Command::new(&ip).args([
                "-n",
                &name,
                "addr",
                "add",
                &format!("{peer_ip}/30"),
                "dev",
                &ns.peer_if,
            ]),
            "namespace address",
        );
        must(
            Command::new(&ip).args(["-n", &name, "link", "set", &ns.peer_if, "up"]),
            "namespace link up",
        );
        must(
            Command::new(&ip).args(["-n", &name, "link", "set", "lo", "up"]),
            "namespace lo up",
        );
        // No ICMP rate limit in the peer's namespace (the default, one error per second
        // and destination after a burst of 6, would make a UDP peer that is gone look
        // silent rather than refused after a few rounds of kill and restart).
        ns.r.run_in(|| std::fs::write("/proc/sys/net/ipv4/icmp_ratelimit", "0"))
            .expect("set net.ipv4.icmp_ratelimit = 0 in the namespace");
        ns
    }

    /// The clonable reference (name and addresses).
    pub fn r(&self) -> &NsRef {
        &self.r
    }

    fn nft(&self, script: &str, what: &str) {
        let mut child = Command::new(ip_bin())
            .args(["netns", "exec", &self.r.name])
            .arg(nft_bin())
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write nft script");
        let out = child.wait_with_output().expect("nft");
        assert!(
            out.status.success(),
            "{what}: nft failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// 100 % loss on the namespace's link: every packet in or out of its veth is DROPped
    /// (no RST, no ICMP: the peer just goes silent).
    pub fn partition(&self) {
        let i = &self.peer_if;
        self.nft(
            &format!(
                "table inet lifeline_chaos {{\n\
                 chain in {{ type filter hook input priority -300; policy accept; iifname \"{i}\" drop; }}\n\
                 chain out {{ type filter hook output priority -300; policy accept; oifname \"{i}\" drop; }}\n\
                 }}\n"
            ),
            "partition",
        );
    }

    /// A slow handshake for TCP `port`: two of every three SYNs to it are dropped, so a
    /// connect completes only on the client's second SYN retransmission (1 s + 2 s
    /// later). For the `tcp` kind, whose only exchange is the kernel's handshake (which a
    /// userspace relay cannot delay; this kernel has no `netem`/`fq` qdisc).
    pub fn slow_syn(&self, port: u16) {
        self.nft(
            &format!(
                "table inet lifeline_slow {{\n\
                 chain in {{ type filter hook input priority -300; policy accept; \
                 tcp dport {port} tcp flags & (syn|ack) == syn numgen inc mod 3 != 2 drop; }}\n\
                 }}\n"
            ),
            "slow handshake",
        );
    }

    /// Drops every TCP packet the namespace sends to `to` (the peer there looks silent
    /// from this namespace only).
    pub fn block_tcp_to(&self, to: SocketAddrV4) {
        self.nft(
            &format!(
                "table inet lifeline_block {{\n\
                 chain out {{ type filter hook output priority -300; policy accept; \
                 ip daddr {} tcp dport {} drop; }}\n\
                 }}\n",
                to.ip(),
                to.port()
            ),
            "block a peer",
        );
    }

    /// Removes [`Netns::block_tcp_to`]'s rule.
    pub fn unblock(&self) {
        self.nft("delete table inet lifeline_block\n", "unblock");
    }

    /// A default route via the host end of the veth: every host address is reachable
    /// from the namespace (not only the /30's).
    pub fn default_route(&self) {
        must(
            Command::new(ip_bin()).args([
                "-n",
                &self.r.name,
                "route",
                "add",
                "default",
                "via",
                &self.r.host_ip.to_string(),
            ]),
            "default route in the namespace",
        );
    }

    /// Removes the partition.
    pub fn heal(&self) {
        self.nft("delete table inet lifeline_chaos\n", "heal");
    }

    /// Makes `addr` (on the namespace's `lo`) a silent address: every packet sent to it
    /// is dropped on arrival (in the input hook: a drop in the output hook would fail the
    /// sender's `send` with EPERM at once, which is not silence). Writes `/etc/netns/<name>/resolv.conf` naming it as the only
    /// nameserver (`ip netns exec` bind-mounts it over `/etc/resolv.conf`).
    pub fn silent_resolver(&self, addr: Ipv4Addr) {
        must(
            Command::new(ip_bin()).args([
                "-n",
                &self.r.name,
                "addr",
                "add",
                &format!("{addr}/32"),
                "dev",
                "lo",
            ]),
            "silent address",
        );
        self.nft(
            &format!(
                "table inet lifeline_silent {{\n\
                 chain in {{ type filter hook input priority -300; policy accept; ip daddr {addr} drop; }}\n\
                 }}\n"
            ),
            "silent resolver",
        );
        let dir = self.etc_dir();
        std::fs::create_dir_all(&dir).expect("mkdir /etc/netns/<name>");
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {addr}\noptions timeout:1 attempts:1\n"),
        )
        .expect("write resolv.conf");
    }

    fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.r.name)
    }

    /// `ip netns exec <name> <program>` (runs with the namespace's `/etc/netns` files).
    pub fn exec(&self, program: &std::path::Path) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(ip_bin());
        c.args(["netns", "exec", &self.r.name]).arg(program);
        c
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl std::ops::Deref for Netns {
    type Target = NsRef;
    fn deref(&self) -> &NsRef {
        &self.r
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(ip_bin())
            .args(["netns", "del", &self.r.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // The host end goes with its peer; delete it by name in case it did not.
        let _ = Command::new(ip_bin())
            .args(["link", "del", &self.host_if])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}
