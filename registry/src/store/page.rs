//! Pagination of newest-first listings: a page token is the sequence number of the last item
//! of the previous page, and the next page starts below it.

use crate::error::{Error, Result};

/// The sequence number a listing continues below: `i64::MAX` for the first page.
///
/// # Errors
/// [`Error::BadRequest`] for a token this server did not hand out.
pub(crate) fn parse_page_token(token: Option<&str>) -> Result<i64> {
    match token {
        None | Some("") => Ok(i64::MAX),
        Some(t) => t.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            Error::BadRequest(format!(
                "invalid page_token {}: pass the next_page_token of the previous page",
                ferry_api::names::printable(t)
            ))
        }),
    }
}
