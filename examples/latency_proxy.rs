//! A delay proxy for `scripts/bench.sh`'s `LATENCY` knob (a bench tool; not shipped): forwards
//! TCP from a local port to an upstream server and holds every byte the upstream sends for a
//! set time, plus a random jitter, before passing it on. Requests go upstream at once, so every
//! request–answer round trip costs the delay, as on a network with that latency: the machine's
//! kernel has no netem, and real S3 and KMS answer in milliseconds where the emulators answer in
//! microseconds. Bytes keep their order (a later chunk never overtakes an earlier one).
//!
//! ```text
//! latency_proxy LISTEN UPSTREAM DELAY_MS [JITTER_MS]
//! ```
//!
//! Prints the address it listens on (LISTEN may use port 0), then serves until killed.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Clone, Copy)]
struct Delay {
    base: Duration,
    jitter_ms: u64,
}

impl Delay {
    fn draw(self) -> Duration {
        let jitter = if self.jitter_ms == 0 {
            0
        } else {
            rand::random::<u64>() % (self.jitter_ms + 1)
        };
        self.base + Duration::from_millis(jitter)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, delay_ms, rest @ ..] = args.as_slice() else {
        bail!("usage: latency_proxy LISTEN UPSTREAM DELAY_MS [JITTER_MS]");
    };
    let delay = Delay {
        base: Duration::from_millis(delay_ms.parse().context("DELAY_MS: a whole number")?),
        jitter_ms: match rest.first() {
            Some(j) => j.parse().context("JITTER_MS: a whole number")?,
            None => 0,
        },
    };
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        let (client, _) = listener.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if let Err(e) = relay(client, &upstream, delay).await {
                eprintln!("latency_proxy: connection to {upstream}: {e}");
            }
        });
    }
}

/// One connection: the client's bytes go upstream as they come; the upstream's are each due
/// `delay` after they arrived, and are written in order when due.
async fn relay(client: TcpStream, upstream: &str, delay: Delay) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async move {
        tokio::io::copy(&mut client_read, &mut server_write).await?;
        server_write.shutdown().await
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let hold = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut last = Instant::now();
        loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            let due = (Instant::now() + delay.draw()).max(last);
            last = due;
            if tx.send((due, buf[..n].to_vec())).is_err() {
                return Ok(());
            }
        }
    };
    let down = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            client_write.write_all(&bytes).await?;
        }
        client_write.shutdown().await
    };
    let (a, b, c) = tokio::join!(up, hold, down);
    a.and(b).and(c)
}
