//! The `multipart/form-data` body of a presigned POST, read as it streams.
//!
//! A part's bytes are handed on as slices of the chunks they arrived in:
//! only the few bytes at a chunk's end that might begin a boundary are held
//! back (and copied) until the next chunk shows whether they do. multer,
//! behind axum's `Multipart`, copies every byte into a buffer of its own
//! first; for a package of gigabytes that copy was a tenth of the server's
//! work, on a path already bound by SHA-256.
//!
//! What a part's headers hold is parsed only as far as a presigned POST
//! needs: the `Content-Disposition` name and filename.

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use memchr::memmem;

/// The most a part's headers (or a preamble) may take.
pub const HEAD_LIMIT: usize = 16 * 1024;
/// Headers per part, at most.
const MAX_HEADERS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum FormError {
    #[error("the body could not be read: {0}")]
    Body(String),
    #[error("the body ended inside the form")]
    Incomplete,
    #[error("the form does not start with its boundary")]
    NoFirstBoundary,
    #[error("a boundary is followed by something other than a line end")]
    MalformedBoundary,
    #[error("a part's headers are malformed: {0}")]
    Headers(String),
    #[error("a part's headers are over {HEAD_LIMIT} bytes")]
    HeadersTooLarge,
    #[error("a part has no Content-Disposition: form-data header naming it")]
    Unnamed,
}

/// A part's name and filename, from its `Content-Disposition`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartHead {
    pub name: String,
    pub filename: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first boundary.
    Start,
    /// Right after a boundary: a part's headers follow, or the end.
    AfterBoundary,
    /// Inside a part's data.
    Data,
    /// After the closing boundary: the rest (an epilogue) is ignored.
    End,
}

pub struct Form<S> {
    body: S,
    /// `\r\n--` and the boundary: what ends a part's data.
    delimiter: Vec<u8>,
    finder: memmem::Finder<'static>,
    /// Received and not yet consumed.
    buffered: Bytes,
    /// The end of a chunk that may begin a delimiter, kept until the next
    /// chunk shows whether it does. Never longer than a delimiter or two.
    carry: Vec<u8>,
    state: State,
}

impl<S, E> Form<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    pub fn new(body: S, boundary: &str) -> Self {
        let delimiter = [b"\r\n--", boundary.as_bytes()].concat();
        let finder = memmem::Finder::new(&delimiter).into_owned();
        Self { body, delimiter, finder, buffered: Bytes::new(), carry: Vec::new(), state: State::Start }
    }

    /// The next part's head, after skipping what is left of the current
    /// part's data; `None` after the closing boundary.
    pub async fn next_part(&mut self) -> Result<Option<PartHead>, FormError> {
        loop {
            match self.state {
                State::End => return Ok(None),
                State::Data => while self.next_chunk().await?.is_some() {},
                State::Start => {
                    // The first boundary has no line end before it, unless a preamble does.
                    let delimiter = self.delimiter.clone();
                    let first = &delimiter[2..];
                    let end = self
                        .buffer_until(|b| {
                            Ok(if b.starts_with(first) {
                                Some(first.len())
                            } else {
                                memmem::find(b, &delimiter).map(|i| i + delimiter.len())
                            })
                        })
                        .await
                        .map_err(|e| match e {
                            FormError::Incomplete | FormError::HeadersTooLarge => FormError::NoFirstBoundary,
                            other => other,
                        })?;
                    self.buffered.advance(end);
                    self.state = State::AfterBoundary;
                }
                State::AfterBoundary => return self.read_head().await,
            }
        }
    }

    /// The rest of a boundary line, then the part's headers.
    async fn read_head(&mut self) -> Result<Option<PartHead>, FormError> {
        self.buffer_until(|b| Ok((b.len() >= 2).then_some(2))).await?;
        if self.buffered.starts_with(b"--") {
            self.state = State::End;
            return Ok(None);
        }
        let line_end = self.buffer_until(|b| Ok(memchr::memchr(b'\n', b).map(|i| i + 1))).await?;
        let line = &self.buffered[..line_end];
        // Transport padding (spaces, tabs) may come before the line end.
        if !line.ends_with(b"\r\n") || line[..line.len() - 2].iter().any(|&b| b != b' ' && b != b'\t') {
            return Err(FormError::MalformedBoundary);
        }
        self.buffered.advance(line_end);
        // The headers end at an empty line (at once, when there are none).
        let head_end = self
            .buffer_until(|b| {
                Ok(if b.starts_with(b"\r\n") { Some(2) } else { memmem::find(b, b"\r\n\r\n").map(|i| i + 4) })
            })
            .await?;
        let head = self.buffered.split_to(head_end);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::parse_headers(&head, &mut headers) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(FormError::Headers("they do not end".into())),
            Err(e) => return Err(FormError::Headers(e.to_string())),
        }
        let disposition = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-disposition"))
            .ok_or(FormError::Unnamed)?;
        let value = std::str::from_utf8(disposition.value)
            .map_err(|_| FormError::Headers("Content-Disposition is not UTF-8".into()))?;
        let head = parse_disposition(value).ok_or(FormError::Unnamed)?;
        self.state = State::Data;
        Ok(Some(head))
    }

    /// The current part's next bytes; `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, FormError> {
        if self.state != State::Data {
            return Ok(None);
        }
        let d = self.delimiter.len();
        loop {
            if !self.carry.is_empty() {
                // A delimiter that begins in the carry ends within d - 1 bytes after it.
                // (At the body's end the carry is data, and the end is found below.)
                while self.buffered.len() < d - 1 {
                    let Some(chunk) = self.fetch().await? else { break };
                    self.carry.extend_from_slice(&self.buffered);
                    self.buffered = chunk;
                }
                let mut joint = std::mem::take(&mut self.carry);
                let carried = joint.len();
                joint.extend_from_slice(&self.buffered[..self.buffered.len().min(d - 1)]);
                match self.finder.find(&joint) {
                    Some(i) if i < carried => {
                        if i + d <= carried {
                            // It ends in the carry too (the chunks were tiny): what
                            // follows it goes back in front of the rest.
                            let mut rest = BytesMut::from(&joint[i + d..carried]);
                            rest.extend_from_slice(&self.buffered);
                            self.buffered = rest.freeze();
                        } else {
                            self.buffered.advance(i + d - carried);
                        }
                        self.state = State::AfterBoundary;
                        joint.truncate(i);
                        return Ok((!joint.is_empty()).then(|| Bytes::from(joint)));
                    }
                    _ => {
                        joint.truncate(carried);
                        return Ok(Some(Bytes::from(joint)));
                    }
                }
            }
            if self.buffered.is_empty() {
                let Some(chunk) = self.fetch().await? else { return Err(FormError::Incomplete) };
                self.buffered = chunk;
            }
            if let Some(i) = self.finder.find(&self.buffered) {
                let data = self.buffered.split_to(i);
                self.buffered.advance(d);
                self.state = State::AfterBoundary;
                return Ok((!data.is_empty()).then_some(data));
            }
            // All but a tail that may begin a delimiter is data.
            let keep = (d - 1).min(self.buffered.len());
            let data = self.buffered.split_to(self.buffered.len() - keep);
            self.carry.extend_from_slice(&std::mem::take(&mut self.buffered));
            if !data.is_empty() {
                return Ok(Some(data));
            }
        }
    }

    /// The current part's data as a stream (for bodies too large to hold).
    pub fn part_stream(&mut self) -> impl Stream<Item = Result<Bytes, FormError>> + Unpin + '_ {
        Box::pin(futures::stream::unfold(self, |form| async move {
            let item = form.next_chunk().await.transpose()?;
            Some((item, form))
        }))
    }

    /// Reads chunks into `buffered` (copying: for headers only) until
    /// `found` answers where what it looks for ends.
    async fn buffer_until(
        &mut self,
        found: impl Fn(&[u8]) -> Result<Option<usize>, FormError>,
    ) -> Result<usize, FormError> {
        loop {
            if let Some(end) = found(&self.buffered)? {
                return if end > HEAD_LIMIT { Err(FormError::HeadersTooLarge) } else { Ok(end) };
            }
            if self.buffered.len() > HEAD_LIMIT {
                return Err(FormError::HeadersTooLarge);
            }
            let Some(chunk) = self.fetch().await? else { return Err(FormError::Incomplete) };
            if self.buffered.is_empty() {
                self.buffered = chunk;
            } else {
                let mut joined = BytesMut::with_capacity(self.buffered.len() + chunk.len());
                joined.extend_from_slice(&self.buffered);
                joined.extend_from_slice(&chunk);
                self.buffered = joined.freeze();
            }
        }
    }

    /// The body's next non-empty chunk; `None` at its end.
    async fn fetch(&mut self) -> Result<Option<Bytes>, FormError> {
        loop {
            match self.body.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => return Ok(Some(chunk)),
                Some(Err(e)) => return Err(FormError::Body(e.to_string())),
                None => return Ok(None),
            }
        }
    }
}

/// `form-data; name="..."; filename="..."`: `None` unless it is form-data with a name.
fn parse_disposition(value: &str) -> Option<PartHead> {
    let mut params = split_params(value).into_iter();
    if !params.next()?.0.eq_ignore_ascii_case("form-data") {
        return None;
    }
    let (mut name, mut filename) = (None, None);
    for (key, value) in params {
        match key.to_ascii_lowercase().as_str() {
            "name" => name = value,
            "filename" => filename = value,
            _ => {}
        }
    }
    Some(PartHead { name: name?, filename })
}

/// `a; k=v; k2="quoted; \"v\""` as (key, value) pairs, the first without one.
fn split_params(value: &str) -> Vec<(String, Option<String>)> {
    let mut params = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == ';' || c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let mut param_value = None;
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek() == Some(&' ') {
                chars.next();
            }
            let mut v = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => v.extend(chars.next()),
                        '"' => break,
                        c => v.push(c),
                    }
                }
                // Anything between the closing quote and the next ';' is dropped.
                while chars.peek().is_some_and(|&c| c != ';') {
                    chars.next();
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ';' {
                        break;
                    }
                    v.push(c);
                    chars.next();
                }
                v.truncate(v.trim_end().len());
            }
            param_value = Some(v);
        }
        params.push((key.trim().to_string(), param_value));
        if chars.next().is_none() {
            return params;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDARY: &str = "XyZ-boundary-42";

    fn body(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, filename, data) in parts {
            out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
            let filename = filename.map(|f| format!("; filename=\"{f}\"")).unwrap_or_default();
            out.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n").as_bytes(),
            );
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        out
    }

    type Parts = Vec<(PartHead, Vec<u8>)>;

    async fn parse_chunks(chunks: Vec<Bytes>) -> Result<Parts, FormError> {
        let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::convert::Infallible>));
        let mut form = Form::new(stream, BOUNDARY);
        let mut parts = Vec::new();
        while let Some(head) = form.next_part().await? {
            let mut data = Vec::new();
            while let Some(chunk) = form.next_chunk().await? {
                assert!(!chunk.is_empty(), "an empty chunk");
                data.extend_from_slice(&chunk);
            }
            parts.push((head, data));
        }
        Ok(parts)
    }

    async fn parse_split(body: &[u8], at: &[usize]) -> Result<Parts, FormError> {
        let mut chunks = Vec::new();
        let mut start = 0;
        for &end in at.iter().chain([body.len()].iter()) {
            chunks.push(Bytes::copy_from_slice(&body[start..end]));
            start = end;
        }
        parse_chunks(chunks).await
    }

    fn head(name: &str, filename: Option<&str>) -> PartHead {
        PartHead { name: name.into(), filename: filename.map(Into::into) }
    }

    #[tokio::test]
    async fn reads_every_part_however_the_body_is_split() {
        // Data that comes close to the delimiter without being it.
        let tricky = format!("a\r\n--{}\r\n-\r\n--{}X", &BOUNDARY[..5], &BOUNDARY[..BOUNDARY.len() - 1]);
        let form = body(&[
            ("key", None, b"0123abcd"),
            ("empty", None, b""),
            ("file", Some("big; \\\"odd\\\".tar"), tricky.as_bytes()),
        ]);
        let expected = vec![
            (head("key", None), b"0123abcd".to_vec()),
            (head("empty", None), Vec::new()),
            (head("file", Some("big; \"odd\".tar")), tricky.as_bytes().to_vec()),
        ];
        // One chunk, every split in two and in three.
        assert_eq!(parse_split(&form, &[]).await.unwrap(), expected);
        for i in 0..=form.len() {
            assert_eq!(parse_split(&form, &[i]).await.unwrap(), expected, "split at {i}");
            for j in (i..=form.len()).step_by(7) {
                assert_eq!(parse_split(&form, &[i, j]).await.unwrap(), expected, "split at {i}, {j}");
            }
        }
        // One byte at a time.
        let bytes: Vec<_> = (1..form.len()).collect();
        assert_eq!(parse_split(&form, &bytes).await.unwrap(), expected);
    }

    #[tokio::test]
    async fn hands_on_large_data_without_copying_it() {
        let data = vec![7u8; 1 << 20];
        let form = Bytes::from(body(&[("file", Some("p.tar"), &data)]));
        let range = form.as_ptr() as usize..form.as_ptr() as usize + form.len();
        let stream = futures::stream::iter([Ok::<_, std::convert::Infallible>(form.clone())]);
        let mut form = Form::new(stream, BOUNDARY);
        assert_eq!(form.next_part().await.unwrap(), Some(head("file", Some("p.tar"))));
        let chunk = form.next_chunk().await.unwrap().unwrap();
        assert_eq!(chunk.len(), data.len());
        assert!(range.contains(&(chunk.as_ptr() as usize)), "the data was copied");
        assert_eq!(form.next_chunk().await.unwrap(), None);
        assert_eq!(form.next_part().await.unwrap(), None);
    }

    #[tokio::test]
    async fn takes_a_preamble_padding_and_an_epilogue() {
        let mut form = b"a preamble\r\n".to_vec();
        form.extend(body(&[("key", None, b"v")]).iter().copied());
        let padded = String::from_utf8(form).unwrap().replacen(
            &format!("{BOUNDARY}\r\n"),
            &format!("{BOUNDARY} \t\r\n"),
            1,
        );
        let mut form = padded.into_bytes();
        form.extend_from_slice(b"an epilogue");
        assert_eq!(parse_split(&form, &[]).await.unwrap(), vec![(head("key", None), b"v".to_vec())]);
    }

    #[tokio::test]
    async fn refuses_malformed_forms() {
        let good = body(&[("key", None, b"value"), ("file", Some("f"), b"data")]);
        let cut = |n: usize| good[..good.len() - n].to_vec();
        // Cut inside the data, inside the last boundary, before the closing dashes.
        for n in [12, 19, 20, 25, 4 + BOUNDARY.len()] {
            assert!(matches!(parse_split(&cut(n), &[]).await, Err(FormError::Incomplete)), "cut {n}");
        }
        type Case = (Vec<u8>, fn(&FormError) -> bool);
        let cases: Vec<Case> = vec![
            (b"no boundary at all".to_vec(), |e| matches!(e, FormError::NoFirstBoundary)),
            (Vec::new(), |e| matches!(e, FormError::NoFirstBoundary)),
            (format!("--{BOUNDARY}junk\r\n\r\n").into_bytes(), |e| matches!(e, FormError::MalformedBoundary)),
            (
                format!("--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{BOUNDARY}--").into_bytes(),
                |e| matches!(e, FormError::Unnamed),
            ),
            (
                format!("--{BOUNDARY}\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx").into_bytes(),
                |e| matches!(e, FormError::Unnamed),
            ),
            (format!("--{BOUNDARY}\r\nBad Header\r\n\r\nx").into_bytes(), |e| {
                matches!(e, FormError::Headers(_))
            }),
            (format!("--{BOUNDARY}\r\nX-Long: {}\r\n\r\nx", "a".repeat(HEAD_LIMIT + 1)).into_bytes(), |e| {
                matches!(e, FormError::HeadersTooLarge)
            }),
        ];
        for (form, expected) in cases {
            let error = parse_split(&form, &[]).await.unwrap_err();
            assert!(
                expected(&error),
                "{:?}: {error:?}",
                String::from_utf8_lossy(&form[..form.len().min(80)])
            );
        }
    }

    #[tokio::test]
    async fn reports_a_failing_body() {
        let stream =
            futures::stream::iter([Ok(Bytes::from(format!("--{BOUNDARY}\r\n"))), Err("reset by peer")]);
        let mut form = Form::new(stream, BOUNDARY);
        assert!(matches!(form.next_part().await, Err(FormError::Body(e)) if e == "reset by peer"));
    }

    #[test]
    fn parses_dispositions() {
        assert_eq!(parse_disposition("form-data; name=file"), Some(head("file", None)));
        assert_eq!(
            parse_disposition("Form-Data;NAME=\"a b\"; filename=x.tar "),
            Some(head("a b", Some("x.tar")))
        );
        assert_eq!(parse_disposition("form-data; filename=\"x\""), None);
        assert_eq!(parse_disposition("inline; name=\"a\""), None);
    }
}
