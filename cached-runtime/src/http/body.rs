//! The body of every response the layer answers: a stored body (one
//! `Bytes`, shared with L1, never copied), nothing (`HEAD`, `304`), or the
//! handler's own body passed through as it streams, after what was read of
//! it while the layer tried to buffer it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

/// The error of a handler's body passed through.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a response from [`ResponseCache`](super::ResponseCache)
/// (and [`respond_json`](super::respond_json)).
pub struct ResponseBody {
    kind: Kind,
}

enum Kind {
    Full(Option<Bytes>),
    /// What was read while buffering, then the rest as it comes.
    Streamed {
        head: Option<Bytes>,
        rest: UnsyncBoxBody<Bytes, BoxError>,
    },
}

impl ResponseBody {
    /// A body of these bytes.
    pub fn full(bytes: Bytes) -> Self {
        let bytes = (!bytes.is_empty()).then_some(bytes);
        Self {
            kind: Kind::Full(bytes),
        }
    }

    /// No body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
        }
    }

    /// `head`, then the rest of `body`.
    pub(crate) fn streamed<B>(head: Bytes, body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            kind: Kind::Streamed {
                head: (!head.is_empty()).then_some(head),
                rest: body.map_err(Into::into).boxed_unsync(),
            },
        }
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Full(bytes) => f
                .debug_struct("ResponseBody")
                .field("len", &bytes.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Streamed { .. } => f.debug_struct("ResponseBody").finish_non_exhaustive(),
        }
    }
}

impl Default for ResponseBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Kind::Streamed { head, rest } => match head.take() {
                Some(head) => Poll::Ready(Some(Ok(Frame::data(head)))),
                None => Pin::new(rest).poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Streamed { head, rest } => head.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Streamed { head, rest } => {
                let head = head.as_ref().map_or(0, |b| b.len() as u64);
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(head));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(head));
                }
                hint
            }
        }
    }
}

/// A body read whole up to `limit` bytes, or what was read and the rest.
pub(crate) enum Buffered<B> {
    Whole(Bytes),
    Over(Bytes, B),
    /// The body failed: what was read, and the error.
    Failed(Bytes, BoxError),
}

/// Reads `body` whole if it is at most `limit` bytes (trailers are
/// dropped: a stored response has none).
pub(crate) async fn buffer<B>(mut body: B, limit: usize) -> Buffered<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let (mut chunks, mut read) = (Vec::new(), 0);
    while let Some(frame) = body.frame().await {
        let data = match frame.map(Frame::into_data) {
            // Empty frames are not kept: a body of them alone would grow
            // `chunks` without bound.
            Ok(Ok(data)) if data.is_empty() => continue,
            Ok(Ok(data)) => data,
            // Trailers end a body.
            Ok(Err(_trailers)) => break,
            Err(error) => return Buffered::Failed(joined(chunks), error.into()),
        };
        read += data.len();
        chunks.push(data);
        if read > limit {
            return Buffered::Over(joined(chunks), body);
        }
    }
    Buffered::Whole(joined(chunks))
}

/// The chunks as one `Bytes`; one chunk (a `Full` body) without a copy.
fn joined(mut chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => Bytes::from(chunks.concat()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(frames: Vec<Frame<Bytes>>) -> impl Body<Data = Bytes, Error = BoxError> + Unpin {
        let frames = frames.into_iter().map(Ok::<_, BoxError>);
        http_body_util::StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn empty_frames_are_not_kept_and_trailers_end_the_body() {
        let mut body = vec![Frame::data(Bytes::from_static(b"a"))];
        body.extend((0..10_000).map(|_| Frame::data(Bytes::new())));
        body.push(Frame::trailers(http::HeaderMap::new()));
        body.push(Frame::data(Bytes::from_static(b"after")));
        match buffer(frames(body), 16).await {
            Buffered::Whole(bytes) => assert_eq!(bytes, "a"),
            _ => panic!("a one-byte body is whole"),
        }
        let over = (0..5)
            .map(|_| Frame::data(Bytes::from_static(b"0123")))
            .collect();
        assert!(
            matches!(buffer(frames(over), 16).await, Buffered::Over(head, _) if head.len() == 20)
        );
    }
}
