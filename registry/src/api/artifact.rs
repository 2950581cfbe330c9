//! `GET …/versions/{v}/artifact`: the model bytes, streamed, with `ETag` and `Range`.

use std::ops::Range;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;

use super::extract::Path;
use crate::AppState;
use crate::error::{Error, Result};
use ferry_api::names::{self, VersionRef};

pub async fn download(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    names::validate("model", &name)?;
    let record = state
        .store
        .get_version(&name, &VersionRef::parse(&version)?)
        .await?;
    let size = u64::try_from(record.size)
        .map_err(|_| Error::Internal(format!("negative size for {name}:{}", record.version)))?;
    let etag = format!("\"{}\"", record.sha256);
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && etag_matches(inm, &etag)
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        insert(&mut response, header::ETAG, &etag);
        return Ok(response);
    }
    // A Range is honoured only if the client's copy is still this one (If-Range).
    let range_applies = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(spec) if range_applies => parse_range(spec, size)?,
        _ => None,
    };
    let read = state.blobs.read(&record.sha256, range.clone()).await?;
    let counter = state.metrics.download_bytes.clone();
    let stream = read.stream.map(move |chunk| {
        if let Ok(bytes) = &chunk {
            counter.inc_by(bytes.len() as u64);
        }
        chunk
    });
    let mut response = Response::new(Body::from_stream(stream));
    let length = read.range.end - read.range.start;
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        insert(
            &mut response,
            header::CONTENT_RANGE,
            &format!(
                "bytes {}-{}/{size}",
                read.range.start,
                read.range.end.saturating_sub(1)
            ),
        );
    }
    insert(&mut response, header::CONTENT_LENGTH, &length.to_string());
    insert(
        &mut response,
        header::CONTENT_TYPE,
        "application/octet-stream",
    );
    insert(&mut response, header::ETAG, &etag);
    insert(&mut response, header::ACCEPT_RANGES, "bytes");
    insert(
        &mut response,
        header::CONTENT_DISPOSITION,
        &format!("attachment; filename=\"{name}-v{}.onnx\"", record.version),
    );
    // RFC 9530: lets any client verify the bytes it assembled, ranges or not.
    if let Ok(raw) = hex::decode(&record.sha256) {
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        insert(
            &mut response,
            header::HeaderName::from_static("repr-digest"),
            &format!("sha-256=:{b64}:"),
        );
    }
    Ok(response)
}

fn insert(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
}

fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.trim() == "*"
        || if_none_match
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == etag)
}

/// Parses a single-range `Range` header against an artifact of `size` bytes.
///
/// Returns `None` (serve everything) for forms this server does not split (several ranges) or
/// cannot read, as RFC 9110 allows; an unsatisfiable range is a 416.
fn parse_range(spec: &str, size: u64) -> Result<Option<Range<u64>>> {
    let Some(set) = spec.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if set.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = set.trim().split_once('-') else {
        return Ok(None);
    };
    let (start, end) = (start.trim(), end.trim());
    let range = if start.is_empty() {
        // Suffix range: the last `end` bytes.
        let Ok(n) = end.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 {
            return Err(Error::RangeNotSatisfiable { size });
        }
        size.saturating_sub(n)..size
    } else {
        let Ok(first) = start.parse::<u64>() else {
            return Ok(None);
        };
        let last = if end.is_empty() {
            size.saturating_sub(1)
        } else {
            match end.parse::<u64>() {
                Ok(last) if last >= first => last.min(size.saturating_sub(1)),
                _ => return Ok(None),
            }
        };
        if first >= size {
            return Err(Error::RangeNotSatisfiable { size });
        }
        first..last + 1
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some(0..10));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some(90..100));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some(90..100));
        assert_eq!(parse_range("bytes=-500", 100).unwrap(), Some(0..100));
        assert_eq!(parse_range("bytes=95-200", 100).unwrap(), Some(95..100));
        assert_eq!(parse_range("bytes=0-1,5-6", 100).unwrap(), None);
        assert_eq!(parse_range("items=0-1", 100).unwrap(), None);
        assert_eq!(parse_range("bytes=9-3", 100).unwrap(), None);
        assert!(matches!(
            parse_range("bytes=100-", 100),
            Err(Error::RangeNotSatisfiable { size: 100 })
        ));
        assert!(parse_range("bytes=-0", 100).is_err());
    }

    #[test]
    fn etags_match_lists_weak_tags_and_star() {
        assert!(etag_matches("\"a\"", "\"a\""));
        assert!(etag_matches("\"b\", W/\"a\"", "\"a\""));
        assert!(etag_matches("*", "\"a\""));
        assert!(!etag_matches("\"b\"", "\"a\""));
    }
}
