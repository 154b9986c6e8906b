//! The pages of one window (one `since`), walked in bounded chunks: the one way both a poll's
//! passes and the silent baseline read the API.

use crate::config::Resource;
use crate::ingest::client::{ApiError, PageEnd, PageEvent, PageReader};
use crate::ingest::ctx::{PollCtx, PollError};
use crate::ingest::diff;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::hash::{Hash, Hasher};

/// A guard against an endpoint that ignores the page parameter and never returns a short page:
/// the most pages one pass reads.
pub(crate) const MAX_PAGES_PER_POLL: u32 = 100_000;

/// What [`PageWalk::next`] hands over.
pub(crate) enum Step {
    /// The next records of a page.
    Records(Records),
    /// The page broke off and is being read again from its start: its records come again.
    Restart,
}

/// Consecutive records of one page.
pub(crate) struct Records {
    /// The records, as sent.
    pub(crate) records: Vec<Value>,
    /// Their page number.
    pub(crate) page: u32,
    /// Whether the page ends with them.
    pub(crate) page_end: bool,
}

/// The ids of one page, as far as read: their count and a hash of them in order, so that a page
/// repeating the previous one is recognised without keeping either page.
#[derive(Default)]
struct PageIds {
    count: u64,
    hash: std::hash::DefaultHasher,
}

/// The pages of one window (one `since`), walked in bounded chunks. It starts the next page's
/// request while the last chunk of a full page is stored (a full page is always followed by
/// another request, so requests per poll do not change; none when `page_delay` is set), refuses a
/// page that repeats the previous one, and stops at the first short page.
///
/// An endpoint that ignores the page parameter serves everything as page after page of the same
/// records: when such a page holds more records than `page_size`, it was the whole window, and
/// the walk ends after its first repeat (not stored again); a repeated page of at most
/// `page_size` records is the error it always was, since it may be one page of many.
pub(crate) struct PageWalk<'a, I> {
    ctx: &'a PollCtx<I>,
    res: &'a Resource,
    since: DateTime<Utc>,
    page_no: u32,
    reader: Option<PageReader>,
    prefetched: Option<PageReader>,
    /// Pages requested.
    pub(crate) pages: u32,
    /// Records read (a page read again after it broke off counts once).
    pub(crate) records: u64,
    page_records: u64,
    ids: PageIds,
    /// The previous page's id count and hash, and its record count.
    previous: Option<(u64, u64, u64)>,
    done: bool,
    /// How the walk's first page ended (its `Date` is the poll's reading of the API's clock).
    pub(crate) first_end: Option<PageEnd>,
    /// The walk ended on a page that repeated the previous one, which held every record (an
    /// endpoint that ignores the page parameter); the repeat's chunks were handed over already.
    pub(crate) ended_on_repeat: bool,
}

impl<'a, I> PageWalk<'a, I> {
    /// A walk from page `first` of the window since `since`.
    pub(crate) fn new(
        ctx: &'a PollCtx<I>,
        res: &'a Resource,
        since: DateTime<Utc>,
        first: u32,
    ) -> PageWalk<'a, I> {
        PageWalk {
            ctx,
            res,
            since,
            page_no: first,
            reader: None,
            prefetched: None,
            pages: 0,
            records: 0,
            page_records: 0,
            ids: PageIds::default(),
            previous: None,
            done: false,
            first_end: None,
            ended_on_repeat: false,
        }
    }

    /// The next chunk; `None` once the window is read.
    pub(crate) async fn next<E>(&mut self) -> Result<Option<Step>, PollError<E>> {
        if self.done {
            return Ok(None);
        }
        let page = self.page_no;
        if self.reader.is_none() {
            if self.ctx.cancel.is_cancelled() {
                return Err(PollError::Cancelled(self.res.name.clone()));
            }
            if self.pages > 0 && !self.ctx.page_delay.is_zero() {
                tokio::time::sleep(self.ctx.page_delay).await;
            }
            self.pages += 1;
            let reader = match self.prefetched.take() {
                Some(r) => r,
                None => self.ctx.client.read_page(self.res, self.since, page),
            };
            self.reader = Some(reader);
        }
        let Some(reader) = self.reader.as_mut() else {
            return Ok(None);
        };
        let chunk = match reader.next().await? {
            PageEvent::Restart => {
                self.records -= self.page_records;
                self.page_records = 0;
                self.ids = PageIds::default();
                return Ok(Some(Step::Restart));
            }
            PageEvent::Chunk(c) => c,
        };
        let n = chunk.records.len() as u64;
        self.page_records += n;
        self.records += n;
        for r in &chunk.records {
            if let Ok(id) = diff::record_id(r, &self.res.id_field) {
                self.ids.count += 1;
                id.hash(&mut self.ids.hash);
            }
        }
        let Some(end) = chunk.end else {
            return Ok(Some(Step::Records(Records {
                records: chunk.records,
                page,
                page_end: false,
            })));
        };
        self.reader = None;
        if self.first_end.is_none() {
            self.first_end = Some(end);
        }
        let ids = std::mem::take(&mut self.ids);
        let this = (ids.count, ids.hash.finish(), end.records);
        let page_records = std::mem::take(&mut self.page_records);
        if let Some(prev) = self.previous {
            if this.0 > 0 && (this.0, this.1) == (prev.0, prev.1) {
                if prev.2 > u64::from(self.res.page_size) {
                    tracing::warn!(resource = %self.res.name, page, records = prev.2, page_size = self.res.page_size, param = %self.res.page_param, "the endpoint ignores the page parameter: the page repeats the previous one, which held every record; taking that as the whole window");
                    self.records -= page_records;
                    self.done = true;
                    self.ended_on_repeat = true;
                    return Ok(None);
                }
                return Err(ApiError::PageRepeats {
                    resource: self.res.name.clone(),
                    page,
                    param: self.res.page_param.clone(),
                }
                .into());
            }
        }
        self.previous = Some(this);
        if end.last || self.pages >= MAX_PAGES_PER_POLL {
            self.done = true;
        } else {
            self.page_no += 1;
            if self.ctx.page_delay.is_zero() {
                self.prefetched = Some(self.ctx.client.read_page(
                    self.res,
                    self.since,
                    self.page_no,
                ));
            }
        }
        Ok(Some(Step::Records(Records {
            records: chunk.records,
            page,
            page_end: true,
        })))
    }
}
