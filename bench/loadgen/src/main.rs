//! Echo load generator for the ferroloop benchmarks.
//!
//! Opens `--conns` connections to an echo server and on every connection repeats a
//! request/response round-trip: write a `--size` byte message, read back exactly `--size`
//! bytes and check that they are the message that was sent. After `--warmup-ms` it starts
//! counting for `--duration-ms`. A single thread drives all connections with non-blocking
//! sockets and epoll (via mio), so the client costs little CPU per round-trip.
//!
//! Output is one JSON object per line on stdout, so a caller can sample the server's CPU
//! time exactly at the edges of the measured window:
//!
//! ```text
//! {"event":"ready","conns":10}        all connections (and TLS handshakes) are up
//! {"event":"measure"}                 warm-up over, measured window starts
//! {"event":"done","round_trips":..}   measured window over (totals for the window)
//! ```
//!
//! Any failure (connect error, a connection without progress for `--io-timeout-ms`, early
//! EOF, wrong echoed bytes) is printed to stderr and the process exits with status 1.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::exit;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

struct Options {
    addr: SocketAddr,
    conns: usize,
    size: usize,
    warmup: Duration,
    duration: Duration,
    io_timeout: Duration,
    tls: Option<TlsOptions>,
}

struct TlsOptions {
    ca: String,
    server_name: String,
}

const USAGE: &str = "usage: loadgen --addr HOST:PORT [--conns 10] [--size 1024] [--warmup-ms 500] \
[--duration-ms 2000] [--io-timeout-ms 10000] [--tls --ca CA.pem [--server-name localhost]]";

fn fail(msg: impl AsRef<str>) -> ! {
    eprintln!("loadgen: error: {}", msg.as_ref());
    exit(1);
}

fn parse_args() -> Options {
    let mut addr = None;
    let mut conns = 10usize;
    let mut size = 1024usize;
    let mut warmup_ms = 500u64;
    let mut duration_ms = 2000u64;
    let mut io_timeout_ms = 10_000u64;
    let mut tls = false;
    let mut ca = None;
    let mut server_name = String::from("localhost");

    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            exit(0);
        }
        if flag == "--tls" {
            tls = true;
            continue;
        }
        let value = args
            .next()
            .unwrap_or_else(|| fail(format!("{flag} needs a value\n{USAGE}")));
        let number = |v: &str| -> u64 { v.parse().unwrap_or_else(|_| fail(format!("{flag}: not a number: {v}"))) };
        match flag.as_str() {
            "--addr" => {
                let resolved = value
                    .to_socket_addrs()
                    .unwrap_or_else(|e| fail(format!("--addr {value}: {e}")))
                    .next()
                    .unwrap_or_else(|| fail(format!("--addr {value}: no address")));
                addr = Some(resolved);
            }
            "--conns" => conns = number(&value) as usize,
            "--size" => size = number(&value) as usize,
            "--warmup-ms" => warmup_ms = number(&value),
            "--duration-ms" => duration_ms = number(&value),
            "--io-timeout-ms" => io_timeout_ms = number(&value),
            "--ca" => ca = Some(value),
            "--server-name" => server_name = value,
            _ => fail(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    let addr = addr.unwrap_or_else(|| fail(format!("--addr is required\n{USAGE}")));
    if conns == 0 || size == 0 || duration_ms == 0 {
        fail("--conns, --size and --duration-ms must be > 0");
    }
    let tls = if tls {
        let ca = ca.unwrap_or_else(|| fail("--tls needs --ca"));
        Some(TlsOptions { ca, server_name })
    } else {
        None
    };
    Options {
        addr,
        conns,
        size,
        warmup: Duration::from_millis(warmup_ms),
        duration: Duration::from_millis(duration_ms),
        io_timeout: Duration::from_millis(io_timeout_ms.max(1)),
        tls,
    }
}

fn tls_config(opts: &TlsOptions) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&opts.ca).unwrap_or_else(|e| fail(format!("reading {}: {e}", opts.ca)));
    for cert in certs {
        let cert = cert.unwrap_or_else(|e| fail(format!("parsing {}: {e}", opts.ca)));
        roots
            .add(cert)
            .unwrap_or_else(|e| fail(format!("adding {} as a root: {e}", opts.ca)));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| fail(format!("TLS config: {e}")))
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A connected, non-blocking stream: plain TCP or TLS over TCP.
enum Link {
    Plain(mio::net::TcpStream),
    Tls(Box<rustls::ClientConnection>, mio::net::TcpStream),
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock
}

impl Link {
    fn socket(&mut self) -> &mut mio::net::TcpStream {
        match self {
            Link::Plain(sock) | Link::Tls(_, sock) => sock,
        }
    }

    /// Hands bytes over for sending; returns how many were taken (0: the socket is full).
    fn offer(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Link::Plain(sock) => match sock.write(data) {
                Ok(n) => Ok(n),
                Err(e) if would_block(&e) || e.kind() == ErrorKind::Interrupted => Ok(0),
                Err(e) => Err(e),
            },
            Link::Tls(conn, _) => {
                // No buffer limit is set, so rustls takes (and encrypts) everything at once.
                let n = conn.writer().write(data)?;
                self.flush()?;
                Ok(n)
            }
        }
    }

    /// Pushes encrypted bytes rustls still holds to the socket, as far as it accepts them.
    fn flush(&mut self) -> io::Result<()> {
        if let Link::Tls(conn, sock) = self {
            while conn.wants_write() {
                match conn.write_tls(sock) {
                    Ok(_) => {}
                    Err(e) if would_block(&e) => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Reads what has arrived into `buf`; returns 0 when nothing is available right now.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let eof = || io::Error::new(ErrorKind::UnexpectedEof, "server closed the connection");
        match self {
            Link::Plain(sock) => match sock.read(buf) {
                Ok(0) => Err(eof()),
                Ok(n) => Ok(n),
                Err(e) if would_block(&e) || e.kind() == ErrorKind::Interrupted => Ok(0),
                Err(e) => Err(e),
            },
            Link::Tls(conn, sock) => loop {
                match conn.reader().read(buf) {
                    Ok(0) => return Err(eof()),
                    Ok(n) => return Ok(n),
                    Err(e) if would_block(&e) => {}
                    Err(e) => return Err(e),
                }
                match conn.read_tls(sock) {
                    Ok(0) => return Err(eof()),
                    Ok(_) => {
                        conn.process_new_packets()
                            .map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("TLS: {e}")))?;
                    }
                    Err(e) if would_block(&e) => return Ok(0),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            },
        }
    }
}

/// Connects (and completes the TLS handshake) with a blocking socket, then switches it to
/// non-blocking mode for the event loop.
fn connect(opts: &Options, tls: Option<&(Arc<rustls::ClientConfig>, ServerName<'static>)>) -> io::Result<Link> {
    let mut sock = TcpStream::connect_timeout(&opts.addr, opts.io_timeout)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(opts.io_timeout))?;
    sock.set_write_timeout(Some(opts.io_timeout))?;
    let conn = match tls {
        None => None,
        Some((config, name)) => {
            let mut conn = rustls::ClientConnection::new(Arc::clone(config), name.clone())
                .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
            while conn.is_handshaking() {
                conn.complete_io(&mut sock)?;
            }
            conn.set_buffer_limit(None);
            Some(Box::new(conn))
        }
    };
    sock.set_nonblocking(true)?;
    let sock = mio::net::TcpStream::from_std(sock);
    Ok(match conn {
        None => Link::Plain(sock),
        Some(conn) => Link::Tls(conn, sock),
    })
}

/// Writes an iteration number into the first and last 8 bytes, so stale, duplicated or
/// reordered echoes do not compare equal to the message just sent.
fn stamp(msg: &mut [u8], iteration: u64) {
    let tag = iteration.to_le_bytes();
    let head = msg.len().min(8);
    msg[..head].copy_from_slice(&tag[..head]);
    if msg.len() >= 16 {
        let tail = msg.len() - 8;
        msg[tail..].copy_from_slice(&tag);
    }
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(0)
}

/// One connection's round-trip in progress.
struct Client {
    index: usize,
    link: Link,
    msg: Vec<u8>,
    echoed: Vec<u8>,
    sent: usize,
    received: usize,
    iteration: u64,
    last_progress: Instant,
    idle: bool,
}

impl Client {
    fn new(index: usize, link: Link, size: usize) -> Client {
        let mut msg: Vec<u8> = (0..size)
            .map(|i| (i.wrapping_mul(131) ^ index.wrapping_mul(7)) as u8)
            .collect();
        stamp(&mut msg, 0);
        Client {
            index,
            link,
            msg,
            echoed: vec![0u8; size],
            sent: 0,
            received: 0,
            iteration: 0,
            last_progress: Instant::now(),
            idle: false,
        }
    }

    /// Makes as much progress as the socket allows (edge-triggered: until it would block).
    /// Returns the number of round-trips completed. With `stop`, no new round-trip starts.
    fn drive(&mut self, stop: bool) -> Result<u64, String> {
        let index = self.index;
        let size = self.msg.len();
        let mut completed = 0;
        while !self.idle {
            let mut progressed = false;
            if self.sent < size {
                let n = self
                    .link
                    .offer(&self.msg[self.sent..])
                    .map_err(|e| format!("conn {index}: write: {e}"))?;
                self.sent += n;
                progressed |= n > 0;
            } else {
                self.link.flush().map_err(|e| format!("conn {index}: write: {e}"))?;
            }
            let n = self
                .link
                .recv(&mut self.echoed[self.received..])
                .map_err(|e| format!("conn {index}: read ({} of {size} bytes echoed): {e}", self.received))?;
            self.received += n;
            progressed |= n > 0;
            if self.received == size {
                if self.echoed != self.msg {
                    let at = first_difference(&self.echoed, &self.msg);
                    return Err(format!(
                        "conn {index}: round-trip {}: echoed bytes differ at offset {at}",
                        self.iteration
                    ));
                }
                completed += 1;
                self.iteration += 1;
                stamp(&mut self.msg, self.iteration);
                self.sent = 0;
                self.received = 0;
                self.idle = stop;
                progressed = true;
            }
            if !progressed {
                break;
            }
            self.last_progress = Instant::now();
        }
        Ok(completed)
    }
}

fn main() {
    let opts = parse_args();
    let tls = opts.tls.as_ref().map(|t| {
        let name = ServerName::try_from(t.server_name.clone())
            .unwrap_or_else(|e| fail(format!("--server-name {}: {e}", t.server_name)));
        (tls_config(t), name)
    });

    let mut poll = Poll::new().unwrap_or_else(|e| fail(format!("epoll: {e}")));
    let mut clients = Vec::with_capacity(opts.conns);
    for index in 0..opts.conns {
        let link = connect(&opts, tls.as_ref()).unwrap_or_else(|e| fail(format!("conn {index}: connect: {e}")));
        let mut client = Client::new(index, link, opts.size);
        poll.registry()
            .register(
                client.link.socket(),
                Token(index),
                Interest::READABLE | Interest::WRITABLE,
            )
            .unwrap_or_else(|e| fail(format!("conn {index}: epoll register: {e}")));
        clients.push(client);
    }

    let mut out = io::stdout().lock();
    let mut emit = |line: String| {
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            exit(1); // whoever reads our results is gone
        }
    };
    emit(format!("{{\"event\":\"ready\",\"conns\":{}}}", opts.conns));

    let mut round_trips = 0u64;
    let mut events = Events::with_capacity(opts.conns.max(16));
    let begin = Instant::now();
    let mut measure_from: Option<(Instant, u64)> = None;
    let mut stopping = false;
    let mut last_timeout_check = begin;

    // Start every connection's first round-trip; after that, readiness events drive them.
    for client in &mut clients {
        round_trips += client.drive(false).unwrap_or_else(|e| fail(e));
    }
    loop {
        let now = Instant::now();
        // Phase changes: warm-up -> measured window -> wind-down.
        if measure_from.is_none() && now >= begin + opts.warmup {
            measure_from = Some((now, round_trips));
            emit(String::from("{\"event\":\"measure\"}"));
        }
        if let (Some((t0, count0)), false) = (measure_from, stopping) {
            if now >= t0 + opts.duration {
                let seconds = now.duration_since(t0).as_secs_f64();
                let counted = round_trips - count0;
                emit(format!(
                    "{{\"event\":\"done\",\"round_trips\":{counted},\"bytes_each_way\":{},\
\"seconds\":{seconds:.6},\"conns\":{},\"size\":{},\"tls\":{}}}",
                    counted * opts.size as u64,
                    opts.conns,
                    opts.size,
                    opts.tls.is_some()
                ));
                stopping = true;
                // Let every connection finish the round-trip it is in, then close them all.
                for client in &mut clients {
                    client.idle = client.sent == 0 && client.received == 0;
                }
            }
        }
        if stopping && clients.iter().all(|c| c.idle) {
            return;
        }
        if now.duration_since(last_timeout_check) >= Duration::from_millis(100) {
            last_timeout_check = now;
            if let Some(c) = clients
                .iter()
                .find(|c| !c.idle && now.duration_since(c.last_progress) > opts.io_timeout)
            {
                fail(format!(
                    "conn {}: no progress for {} ms ({} of {} bytes sent, {} echoed)",
                    c.index,
                    opts.io_timeout.as_millis(),
                    c.sent,
                    opts.size,
                    c.received
                ));
            }
        }

        let next_phase = match measure_from {
            None => begin + opts.warmup,
            Some((t0, _)) if !stopping => t0 + opts.duration,
            _ => now + Duration::from_millis(50),
        };
        let wait = next_phase.saturating_duration_since(now).min(Duration::from_millis(50));
        if let Err(e) = poll.poll(&mut events, Some(wait)) {
            if e.kind() != ErrorKind::Interrupted {
                fail(format!("epoll wait: {e}"));
            }
        }
        for event in events.iter() {
            let client = &mut clients[event.token().0];
            round_trips += client.drive(stopping).unwrap_or_else(|e| fail(e));
        }
    }
}
