//! Waits for a request's head before hyper takes the connection, so that a client that opens a
//! connection and dawdles over its headers holds a few hundred bytes, not hyper's buffers.
//!
//! hyper gives every connection an 8 KiB write buffer at once and an 8 KiB read buffer at its
//! first byte; with a thousand slow clients that is most of a sidecar's memory limit. Here a
//! connection's first bytes go into a small buffer that grows only as the head does, and hyper
//! is handed the connection (with those bytes in front, see [`crate::listen::watchdog::Watched`]) once
//! the head is complete, cannot be HTTP, or has reached the size limit, so that hyper still
//! gives every answer: 400, 414, 431.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::listen::watchdog::Activity;

/// What a connection's buffer starts with; a typical head fits.
const FIRST_BUFFER: usize = 512;

/// The most headers a request may have (hyper's default, which it answers 431 beyond).
pub(crate) const MAX_HEADERS: usize = 100;

/// Reads from `io` until the bytes so far hold a whole request head, or cannot be the start of
/// one, or fill `max_head`; returns them for hyper to parse. `None`: the client closed the
/// connection before that (nothing to answer).
pub(crate) async fn read<T: AsyncRead + Unpin>(
    io: &mut T,
    activity: &Activity,
    max_head: usize,
) -> std::io::Result<Option<Bytes>> {
    let mut buffer = BytesMut::with_capacity(FIRST_BUFFER.min(max_head.max(1)));
    loop {
        if buffer.len() == buffer.capacity() {
            // Double, up to the limit (the loop ends at the limit, so this always grows).
            let room = buffer
                .len()
                .min(max_head.saturating_sub(buffer.len()))
                .max(1);
            buffer.reserve(room);
        }
        let before = buffer.len();
        if io.read_buf(&mut buffer).await? == 0 {
            return Ok(None);
        }
        activity.bytes_arrived();
        let arrived = buffer.get(before..).unwrap_or_default();
        // Only a finished line can finish a head: parse again only then (at most one parse per
        // header line, so a client that trickles bytes costs no quadratic work), and at the
        // first bytes, which show at once whether this can be HTTP at all.
        let worth_parsing = before == 0 || arrived.contains(&b'\n');
        if buffer.len() >= max_head || (worth_parsing && !is_partial_head(&buffer)) {
            return Ok(Some(buffer.freeze()));
        }
    }
}

/// True while `bytes` are the beginning of a request head that is not complete yet.
fn is_partial_head(bytes: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    matches!(
        httparse::Request::new(&mut headers).parse(bytes),
        Ok(httparse::Status::Partial)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn head_of(chunks: &[&[u8]], max_head: usize) -> Option<Bytes> {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        for chunk in chunks {
            client.write_all(chunk).await.expect("written");
        }
        drop(client);
        let activity = Activity::new();
        read(&mut server, &activity, max_head).await.expect("read")
    }

    #[tokio::test]
    async fn a_whole_head_is_handed_on_with_what_follows_it() {
        let request: &[u8] = b"POST /increment HTTP/1.1\r\nHost: t\r\n\r\nGET /next";
        let head = head_of(&[request], 32 * 1024).await.expect("a head");
        assert!(head.starts_with(b"POST /increment"));
    }

    #[tokio::test]
    async fn a_head_that_arrives_line_by_line_is_waited_for() {
        let head = head_of(
            &[b"GET /healthz HTT", b"P/1.1\r\nHo", b"st: t\r\n", b"\r\n"],
            32 * 1024,
        )
        .await
        .expect("a head");
        assert_eq!(&head[..], b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    }

    #[tokio::test]
    async fn bytes_that_cannot_be_http_are_handed_on_at_the_first_line() {
        let head = head_of(&[b"\x16\x03\x01\x00\xa5\x01\x00\n"], 32 * 1024).await;
        assert!(head.is_some(), "hyper answers it 400");
    }

    #[tokio::test]
    async fn a_tls_hello_is_handed_on_at_once() {
        let head = head_of(
            &[b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"],
            32 * 1024,
        )
        .await;
        assert!(head.is_some(), "hyper answers it 400");
    }

    #[tokio::test]
    async fn a_head_that_reaches_the_limit_is_handed_on_for_hyper_to_refuse() {
        let big = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(5000));
        let head = head_of(&[big.as_bytes()], 1024).await.expect("handed on");
        assert!(head.len() >= 1024);
    }

    #[tokio::test]
    async fn a_client_that_leaves_before_finishing_its_head_is_not_answered() {
        assert_eq!(
            head_of(&[b"GET / HTTP/1.1\r\nHost:"], 32 * 1024).await,
            None
        );
        assert_eq!(head_of(&[], 32 * 1024).await, None);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_end_in_a_head_or_a_close_within_the_limit(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0..8),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let chunks: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let head = runtime.block_on(head_of(&chunks, 1024));
            if let Some(head) = head {
                let sent: usize = chunks.iter().map(|c| c.len()).sum();
                proptest::prop_assert!(head.len() <= sent);
                proptest::prop_assert!(head.len() >= 1024 || !is_partial_head(&head));
            }
        }
    }
}
