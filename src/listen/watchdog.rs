//! A clock per connection: cuts a connection that stays idle too long, or that takes too long
//! to send a request's line and headers once it has begun one (a slow client).
//!
//! hyper's own `header_read_timeout` starts whenever the connection is ready for a request, so
//! it cannot tell an idle kept-alive connection from a slow one. Here the connection's socket is
//! watched instead: the first byte read while idle starts the header clock, the request's
//! handler stops it, and the end of the answer starts the idle clock again.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request in progress: waiting for the first byte of the next one.
    Idle,
    /// A request has begun: its line and headers are arriving.
    Head,
    /// A handler is answering: no clock runs (handlers bound their own time).
    Serving,
}

/// Which clock ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// The request's line and headers did not arrive in time.
    Header,
    /// No request came in time.
    Idle,
}

impl Expired {
    /// The metric's `reason` label.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Expired::Header => "header-timeout",
            Expired::Idle => "idle-timeout",
        }
    }
}

/// What one connection is doing; shared by its socket, its handler and its clock.
#[derive(Debug)]
pub(crate) struct Activity {
    phase: watch::Sender<Phase>,
}

impl Activity {
    /// A fresh connection: idle until its first byte.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            phase: watch::Sender::new(Phase::Idle),
        })
    }

    /// A handler is answering until the guard is dropped; then the connection is idle.
    pub(crate) fn serving(self: &Arc<Self>) -> Serving {
        self.phase.send_replace(Phase::Serving);
        Serving {
            activity: Arc::clone(self),
        }
    }

    /// A request's bytes have begun to arrive (if the connection was idle, its header clock
    /// starts).
    pub(crate) fn bytes_arrived(&self) {
        self.phase.send_if_modified(|phase| {
            let begins = *phase == Phase::Idle;
            if begins {
                *phase = Phase::Head;
            }
            begins
        });
    }

    /// Resolves when the connection has been idle for `idle`, or has spent `header` on one
    /// request's line and headers; never while a handler is answering.
    pub(crate) async fn expired(&self, header: Duration, idle: Duration) -> Expired {
        let mut phase = self.phase.subscribe();
        loop {
            let clock = match *phase.borrow_and_update() {
                Phase::Idle => Some((idle, Expired::Idle)),
                Phase::Head => Some((header, Expired::Header)),
                Phase::Serving => None,
            };
            let changed = match clock {
                Some((limit, expired)) => tokio::select! {
                    changed = phase.changed() => changed,
                    () = tokio::time::sleep(limit) => return expired,
                },
                None => phase.changed().await,
            };
            // The sender lives in `self`, which outlives this wait.
            if changed.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

/// A handler at work on a connection; dropping it makes the connection idle.
#[derive(Debug)]
pub(crate) struct Serving {
    activity: Arc<Activity>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.activity.phase.send_replace(Phase::Idle);
    }
}

/// A socket that tells its connection's [`Activity`] when a request's bytes begin to arrive,
/// and first gives back the bytes already read from it (see [`crate::listen::head`]).
#[derive(Debug)]
pub(crate) struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
    already_read: Bytes,
}

impl<T> Watched<T> {
    /// Watches `io` for `activity`; reads begin with `already_read`.
    pub(crate) fn new(io: T, activity: Arc<Activity>, already_read: Bytes) -> Self {
        Watched {
            io,
            activity,
            already_read,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.already_read.is_empty() {
            let n = self.already_read.len().min(buf.remaining());
            let first = self.already_read.split_to(n);
            buf.put_slice(&first);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_after_the_idle_timeout() {
        let activity = Activity::new();
        let started = tokio::time::Instant::now();
        assert_eq!(activity.expired(HEADER, IDLE).await, Expired::Idle);
        assert_eq!(started.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_of_a_request_starts_the_header_clock() {
        let activity = Activity::new();
        let (client, server) = tokio::io::duplex(64);
        let mut watched = Watched::new(server, Arc::clone(&activity), Bytes::new());
        let mut client = client;
        client.write_all(b"GET").await.expect("written");
        let mut buf = [0u8; 8];
        let read = watched.read(&mut buf).await.expect("read");
        assert_eq!(read, 3);
        let started = tokio::time::Instant::now();
        assert_eq!(activity.expired(HEADER, IDLE).await, Expired::Header);
        assert_eq!(started.elapsed(), HEADER);
    }

    #[tokio::test]
    async fn the_bytes_read_before_come_first() {
        let activity = Activity::new();
        let (mut client, server) = tokio::io::duplex(64);
        let mut watched = Watched::new(server, activity, Bytes::from_static(b"GET "));
        client.write_all(b"/ HTTP/1.1").await.expect("written");
        drop(client);
        let mut all = String::new();
        watched.read_to_string(&mut all).await.expect("read");
        assert_eq!(all, "GET / HTTP/1.1");
    }

    #[tokio::test(start_paused = true)]
    async fn no_clock_runs_while_a_handler_answers_and_idle_starts_after_it() {
        let activity = Activity::new();
        let serving = activity.serving();
        let waiting = tokio::time::timeout(IDLE * 10, activity.expired(HEADER, IDLE)).await;
        assert!(waiting.is_err(), "nothing expires while serving");
        drop(serving);
        let started = tokio::time::Instant::now();
        assert_eq!(activity.expired(HEADER, IDLE).await, Expired::Idle);
        assert_eq!(started.elapsed(), IDLE);
    }
}
