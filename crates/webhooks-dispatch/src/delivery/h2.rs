//! HTTP/2 connection settings: flow-control windows sized to what an attempt reads, bounded frames and header
//! lists, keep-alive pings.
//!
//! An attempt reads the response head and at most `max_response_body` bytes of the body. hyper's defaults
//! (2 MiB per stream, 5 MiB per connection, or an adaptive window that grows with the measured bandwidth) let
//! a receiver send megabytes that we buffer and never read. With windows this small, what a receiver can get
//! onto the wire per stream is the stream window plus what we read and released; past that it is blocked
//! until the stream ends, which it does as soon as the prefix is read (we reset it) or the deadline passes.

use std::time::Duration;

use hyper::client::conn::http2;
use hyper_util::rt::TokioTimer;

/// PING cadence and how long to wait for the answer before declaring the connection dead, so a silently
/// dropped connection (NAT timeout, crashed peer) is noticed instead of swallowing attempts.
const PING_INTERVAL: Duration = Duration::from_secs(20);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// The smallest frame size HTTP/2 allows (RFC 9113 §6.5.2); nothing we receive needs larger frames.
const MAX_FRAME_SIZE: u32 = 16 * 1024;
/// The smallest stream window: one full-size DATA frame, so a receiver writing whole frames is never stalled
/// mid-frame before we read anything.
const MIN_STREAM_WINDOW: u32 = MAX_FRAME_SIZE;
/// The connection window HTTP/2 starts every connection with (RFC 9113 §6.9.2); it cannot be lowered below
/// this, there being no setting for it, so asking for less would only mislead.
const MIN_CONNECTION_WINDOW: u32 = 65_535;
/// The largest window HTTP/2 allows (2^31 − 1).
const MAX_WINDOW: u64 = (1 << 31) - 1;
/// Largest decoded response header list accepted (the attribute hyper also uses by default, fixed here so a
/// change of hyper's default cannot widen it): a status and a few headers are all an attempt looks at.
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;

/// Flow-control windows for one configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Windows {
    stream: u32,
    connection: u32,
}

impl Windows {
    /// Windows for attempts that read at most `prefix` body bytes, with up to `streams` of them at once on a
    /// connection.
    ///
    /// The stream window is four times the prefix (at least one full frame): room for a well-behaved
    /// receiver's whole prefix and the end of its stream without waiting for a WINDOW_UPDATE. The connection
    /// window is the stream window times the streams one endpoint can have in flight (its per-endpoint cap),
    /// so those never wait for one another; attempts of several endpoints sharing one host and address share
    /// it, which costs them at most a wait for capacity that each reader releases as it reads.
    pub(super) fn for_prefix(prefix: usize, streams: usize) -> Windows {
        let prefix = u64::try_from(prefix).unwrap_or(u64::MAX);
        let stream = prefix
            .saturating_mul(4)
            .clamp(u64::from(MIN_STREAM_WINDOW), MAX_WINDOW);
        let streams = u64::try_from(streams.max(1)).unwrap_or(u64::MAX);
        let connection = stream
            .saturating_mul(streams)
            .clamp(u64::from(MIN_CONNECTION_WINDOW), MAX_WINDOW);
        // Both are at most 2^31 − 1 by the clamps.
        Windows {
            stream: u32::try_from(stream).unwrap_or(u32::MAX >> 1),
            connection: u32::try_from(connection).unwrap_or(u32::MAX >> 1),
        }
    }
}

/// A client connection builder with our settings, spawning its tasks on `exec`.
pub(super) fn builder<E: Clone>(exec: E, windows: Windows) -> http2::Builder<E> {
    let mut builder = http2::Builder::new(exec);
    builder
        .timer(TokioTimer::new())
        // Off before the sizes: an adaptive window would grow past them with the measured bandwidth.
        .adaptive_window(false)
        .initial_stream_window_size(windows.stream)
        .initial_connection_window_size(windows.connection)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_header_list_size(MAX_HEADER_LIST_SIZE)
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT)
        .keep_alive_while_idle(true);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_prefix_read_within_the_protocol_limits() {
        let default = Windows::for_prefix(4 * 1024, 16);
        assert_eq!((default.stream, default.connection), (16 * 1024, 256 * 1024));
        let large = Windows::for_prefix(1024 * 1024, 16);
        assert_eq!((large.stream, large.connection), (4 << 20, 64 << 20));
        let tiny = Windows::for_prefix(0, 1);
        assert_eq!(
            (tiny.stream, tiny.connection),
            (MIN_STREAM_WINDOW, MIN_CONNECTION_WINDOW)
        );
        let huge = Windows::for_prefix(usize::MAX, usize::MAX);
        assert_eq!((huge.stream, huge.connection), ((1 << 31) - 1, (1 << 31) - 1));
    }
}
