//! Slow clients: many connections that send part of a request's head and then nothing, while a
//! normal caller counts a job. Shows what they cost the tracker (resident memory while they
//! hang on), that the normal call is answered meanwhile, and when the tracker cuts them off
//! (its `--header-read-timeout`, 10 s by default).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::client::Conn;
use crate::load::{self, Endpoint};
use crate::tracker::Memory;

/// The tracker's default `--header-read-timeout`, which the benchmark does not change.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long past the timeout a slow client may still be connected before the run gives up.
const MARGIN: Duration = Duration::from_secs(20);

/// What a crowd of slow clients did to the tracker.
pub(crate) struct SlowClients {
    pub clients: usize,
    /// Resident memory while every slow client was connected.
    pub during: Memory,
    /// The normal call made meanwhile: its latency, or why it failed.
    pub call: Result<Duration, String>,
    /// From the last slow client's first bytes to the tracker closing the last of them.
    pub cut_after: Duration,
    /// Resident memory once they were all gone.
    pub after: Memory,
}

/// Opens `clients` slow connections to `endpoint`, makes one normal call, waits until the
/// tracker has closed every slow connection, and reads `memory` along the way.
pub(crate) fn measure(
    endpoint: &Endpoint,
    clients: usize,
    memory: &dyn Fn() -> Result<Memory, String>,
) -> Result<SlowClients, String> {
    let mut slow = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut stream = TcpStream::connect(endpoint.address)
            .map_err(|e| format!("slow client {i}: cannot connect: {e}"))?;
        stream
            .write_all(partial_head(endpoint.address, &endpoint.query).as_bytes())
            .map_err(|e| format!("slow client {i}: {e}"))?;
        slow.push(stream);
    }
    let sent = Instant::now();
    // Let the tracker accept and read them all before looking at its memory.
    std::thread::sleep(Duration::from_millis(500));
    let during = memory()?;
    let call = load::call(&mut Conn::new(endpoint.address), endpoint, 1, true);
    let call = match call.count {
        Some(_) => Ok(call.latency),
        None => Err(call.error.unwrap_or_else(|| "no count".into())),
    };
    if call.is_ok() {
        let done = load::call(&mut Conn::new(endpoint.address), endpoint, -1, true);
        if done.count.is_none() {
            return Err(format!(
                "the decrement after the slow clients failed: {:?}",
                done.error
            ));
        }
    }
    for (i, stream) in slow.iter_mut().enumerate() {
        let left = (HEADER_READ_TIMEOUT + MARGIN).saturating_sub(sent.elapsed());
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 256];
        match stream.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Ok(_) => return Err(format!("slow client {i} got an answer to half a request")),
            Err(e) => return Err(format!("slow client {i} was not cut off: {e}")),
        }
    }
    let cut_after = sent.elapsed();
    drop(slow);
    std::thread::sleep(Duration::from_millis(200));
    Ok(SlowClients {
        clients,
        during,
        call,
        cut_after,
        after: memory()?,
    })
}

/// A request line and some headers, without the blank line that would end them.
fn partial_head(address: SocketAddr, query: &str) -> String {
    format!("POST /increment{query} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: slow\r\nX-Waiting: ")
}
