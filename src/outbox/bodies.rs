//! The bodies of queued deliveries on sled, kept beside the tree in append-only segment files
//! (`<store>/outbox-bodies/<n>.seg`), each written once.
//!
//! # Why outside the tree
//!
//! A webhook body is most of an outbox entry's bytes (about 700 of 1,100), and sled writes a
//! value far more often than once: the tree's last leaf takes the entries of a poll one by one,
//! and sled rewrites a leaf whole every few updates and splits it at 16 entries, so each entry's
//! bytes went to disk four to five times. Here they go once. The entry in the tree keeps
//! everything else (its JSON, with the body empty) behind a [`BodyRef`]: which segment, where,
//! how long, and the body's CRC-32.
//!
//! # Why nothing is lost
//!
//! - A page's bodies are written and synced (`fdatasync`) before any of the page's writes to
//!   sled begin, so an entry sled recovers after a crash or a power cut has its body on disk.
//!   Bodies whose page a crash then cut short are never referenced, and go with their segment.
//! - A segment is deleted only when no entry refers to it any more and a store flush has put
//!   the removals of those entries on disk ([`BodyLog::doomed`], then [`BodyLog::delete`]): a
//!   removal sled had not written yet when the process died would bring the entry back, and it
//!   must find its body.
//! - At open the references of every entry in the tree are counted again; a segment with none is
//!   deleted, and writing goes on in a new segment.
//! - A body that is not where its reference says (a file deleted by hand, a damaged disk) is an
//!   error naming the segment and the offset, never the body's contents.
//!
//! A retried entry is written back whole, body included (retries are few), so a destination that
//! keeps failing does not hold segments of delivered bodies at rest. `purge` overwrites the
//! bodies of the entries it erases with zeros before it releases them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A segment takes bodies until it holds this many bytes; then the next one begins. Small enough
/// that delivered bodies do not stay at rest long behind one slow entry, large enough that a
/// segment's file is made rarely.
pub(crate) const SEGMENT_BYTES: u64 = 8 << 20;

/// The folder of the segments, inside the store's.
pub(crate) const DIR: &str = "outbox-bodies";

/// The first byte of an outbox value whose body is in a segment. A JSON value (every other
/// outbox value, and every value an older version wrote) never begins with it.
const TAG: u8 = 0xB0;

/// Where a body is: its segment, offset and length, and its CRC-32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyRef {
    seg: u32,
    off: u64,
    len: u32,
    crc: u32,
}

impl BodyRef {
    /// The bytes a stored value spends on its reference, the tag included.
    const STORED: usize = 1 + 4 + 8 + 4 + 4;

    /// A stored outbox value: this reference, then the entry's JSON with the body left empty.
    pub(crate) fn stored_with(&self, json: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::STORED + json.len());
        v.push(TAG);
        v.extend_from_slice(&self.seg.to_be_bytes());
        v.extend_from_slice(&self.off.to_be_bytes());
        v.extend_from_slice(&self.len.to_be_bytes());
        v.extend_from_slice(&self.crc.to_be_bytes());
        v.extend_from_slice(json);
        v
    }

    /// The reference and the JSON of a stored outbox value whose body is in a segment; `None`
    /// for a value that is JSON whole.
    pub(crate) fn of_stored(value: &[u8]) -> Option<(BodyRef, &[u8])> {
        if value.first() != Some(&TAG) || value.len() < Self::STORED {
            return None;
        }
        let be4 = |at: usize| u32::from_be_bytes(value[at..at + 4].try_into().unwrap_or([0; 4]));
        let off = u64::from_be_bytes(value[5..13].try_into().unwrap_or([0; 8]));
        Some((
            BodyRef {
                seg: be4(1),
                off,
                len: be4(13),
                crc: be4(17),
            },
            &value[Self::STORED..],
        ))
    }
}

/// The JSON of a stored outbox value, whether its body is in a segment or inline.
pub(crate) fn json_of(value: &[u8]) -> &[u8] {
    BodyRef::of_stored(value).map_or(value, |(_, json)| json)
}

/// The segments: the one written to, and how many entries refer to each.
#[derive(Debug)]
pub(crate) struct BodyLog {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The segment written to, and its length.
    seg: u32,
    file: Arc<File>,
    len: u64,
    /// Open segments, for reads.
    open: HashMap<u32, Arc<File>>,
    /// Entries referring to each segment.
    live: HashMap<u32, u64>,
    /// Segments no entry refers to, waiting for a flush of the store before they go.
    doomed: Vec<u32>,
}

impl BodyLog {
    /// Opens the segments in `store_dir`, given the references of every entry stored: a segment
    /// none of them names is deleted, and a new one is begun.
    pub(crate) fn open(
        store_dir: &Path,
        refs: impl IntoIterator<Item = BodyRef>,
    ) -> io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = store_dir.join(DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let mut live: HashMap<u32, u64> = HashMap::new();
        for r in refs {
            *live.entry(r.seg).or_default() += 1;
        }
        let mut last = live.keys().copied().max().unwrap_or(0);
        for f in std::fs::read_dir(&dir)? {
            let f = f?;
            let Some(seg) = seg_of_name(&f.file_name().to_string_lossy()) else {
                continue;
            };
            last = last.max(seg);
            if !live.contains_key(&seg) {
                std::fs::remove_file(f.path())?;
            }
        }
        let seg = last + 1;
        let file = Arc::new(create(&dir, seg)?);
        Ok(BodyLog {
            dir,
            inner: Mutex::new(Inner {
                seg,
                open: HashMap::from([(seg, file.clone())]),
                file,
                len: 0,
                live,
                doomed: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding it left counts at worst one off: a segment kept too long.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `bodies` and syncs them to disk; their references, in order. Each counts as
    /// referred to from now on: the caller releases those it does not store.
    pub(crate) fn append(&self, bodies: &[&[u8]]) -> io::Result<Vec<BodyRef>> {
        let mut all = Vec::with_capacity(bodies.iter().map(|b| b.len()).sum());
        let mut inner = self.lock();
        if inner.len >= SEGMENT_BYTES {
            let seg = inner.seg + 1;
            let file = Arc::new(create(&self.dir, seg)?);
            let old = std::mem::replace(&mut inner.seg, seg);
            inner.file = file.clone();
            inner.open.insert(seg, file);
            inner.len = 0;
            if inner.live.get(&old).copied().unwrap_or(0) == 0 {
                inner.doomed.push(old);
            }
        }
        let mut refs = Vec::with_capacity(bodies.len());
        for b in bodies {
            let len = u32::try_from(b.len())
                .map_err(|_| io::Error::other("a delivery's body is larger than 4 GiB"))?;
            refs.push(BodyRef {
                seg: inner.seg,
                off: inner.len + all.len() as u64,
                len,
                crc: crc32fast::hash(b),
            });
            all.extend_from_slice(b);
        }
        let mut file: &File = &inner.file;
        let written = file.write_all(&all).and_then(|()| file.sync_data());
        // After a failed write the file's end is not known: the next bodies go to a new segment.
        inner.len = match written {
            Ok(()) => inner.len + all.len() as u64,
            Err(_) => SEGMENT_BYTES,
        };
        written?;
        let seg = inner.seg;
        *inner.live.entry(seg).or_default() += refs.len() as u64;
        Ok(refs)
    }

    /// The body `r` refers to.
    pub(crate) fn read(&self, r: &BodyRef) -> io::Result<String> {
        let file = {
            let mut inner = self.lock();
            match inner.open.get(&r.seg) {
                Some(f) => f.clone(),
                None => {
                    let f = Arc::new(File::open(self.dir.join(seg_name(r.seg))).map_err(|e| {
                        io::Error::new(e.kind(), format!("segment {}: {e}", r.seg))
                    })?);
                    inner.open.insert(r.seg, f.clone());
                    f
                }
            }
        };
        let mut buf = vec![0; r.len as usize];
        file.read_exact_at(&mut buf, r.off).map_err(|e| {
            io::Error::new(e.kind(), format!("segment {} at {}: {e}", r.seg, r.off))
        })?;
        if crc32fast::hash(&buf) != r.crc {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "segment {} at {}: the body is damaged (CRC mismatch)",
                    r.seg, r.off
                ),
            ));
        }
        String::from_utf8(buf).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("segment {} at {}: the body is not UTF-8", r.seg, r.off),
            )
        })
    }

    /// One entry no longer refers to `r` (its removal is written to sled already).
    pub(crate) fn release(&self, r: &BodyRef) {
        let mut inner = self.lock();
        let left = match inner.live.get_mut(&r.seg) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n
            }
            None => return,
        };
        if left == 0 {
            inner.live.remove(&r.seg);
            if r.seg != inner.seg {
                inner.doomed.push(r.seg);
            }
        }
    }

    /// Overwrites the body `r` refers to with zeros, syncs it, and releases it.
    pub(crate) fn erase(&self, r: &BodyRef) -> io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join(seg_name(r.seg)))?;
        file.write_all_at(&vec![0; r.len as usize], r.off)?;
        file.sync_data()?;
        self.release(r);
        Ok(())
    }

    /// Takes the segments no entry refers to; call before a flush of the store, and pass them
    /// to [`BodyLog::delete`] once it has succeeded (or back to [`BodyLog::keep`] if not).
    pub(crate) fn doomed(&self) -> Vec<u32> {
        std::mem::take(&mut self.lock().doomed)
    }

    /// Gives back segments taken by [`BodyLog::doomed`] whose flush failed.
    pub(crate) fn keep(&self, segs: Vec<u32>) {
        self.lock().doomed.extend(segs);
    }

    /// Deletes segments taken by [`BodyLog::doomed`]. A file that cannot be deleted is logged
    /// and deleted at the next open.
    pub(crate) fn delete(&self, segs: Vec<u32>) {
        if segs.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for seg in segs {
            inner.open.remove(&seg);
            if let Err(e) = std::fs::remove_file(self.dir.join(seg_name(seg))) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(
                        segment = seg,
                        "cannot delete a spent segment of outbox bodies (the next open does): {e}"
                    );
                }
            }
        }
    }

    /// Makes the segment written to count as full, so the next append begins another (the
    /// tests' way to rotate without writing 8 MiB).
    #[cfg(test)]
    pub(crate) fn fill_segment(&self) {
        self.lock().len = SEGMENT_BYTES;
    }

    /// The segments on disk, by number (the tests count them).
    #[cfg(test)]
    pub(crate) fn segments_on_disk(&self) -> Vec<u32> {
        let mut segs: Vec<u32> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|f| seg_of_name(&f.ok()?.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default();
        segs.sort_unstable();
        segs
    }
}

fn seg_name(seg: u32) -> String {
    format!("{seg:08}.seg")
}

fn seg_of_name(name: &str) -> Option<u32> {
    name.strip_suffix(".seg")?.parse().ok()
}

/// A new, empty segment, readable by its owner only.
fn create(dir: &Path, seg: u32) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(seg_name(seg)))?;
    // The new name is durable with its folder, so a synced body is found after a power cut.
    File::open(dir)?.sync_all()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_read_back_as_written_and_a_damaged_one_is_an_error_naming_where() {
        let dir = tempfile::tempdir().unwrap();
        let log = BodyLog::open(dir.path(), []).unwrap();
        let refs = log
            .append(&[b"{\"a\":1}", b"", "{\"n\":\"\u{e9}\"}".as_bytes()])
            .unwrap();
        assert_eq!(log.read(&refs[0]).unwrap(), "{\"a\":1}");
        assert_eq!(log.read(&refs[1]).unwrap(), "");
        assert_eq!(log.read(&refs[2]).unwrap(), "{\"n\":\"\u{e9}\"}");
        let stored = refs[2].stored_with(b"{\"json\":true}");
        assert_eq!(
            BodyRef::of_stored(&stored),
            Some((refs[2], &b"{\"json\":true}"[..]))
        );
        assert_eq!(json_of(&stored), b"{\"json\":true}");
        assert_eq!(json_of(b"{\"inline\":1}"), b"{\"inline\":1}");
        assert_eq!(BodyRef::of_stored(b"{\"inline\":1}"), None);

        let seg = dir.path().join(DIR).join(seg_name(refs[0].seg));
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[2] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        let log = BodyLog::open(dir.path(), refs.clone()).unwrap();
        let err = log.read(&refs[0]).unwrap_err().to_string();
        assert!(
            err.contains("CRC mismatch") && err.contains("at 0"),
            "{err}"
        );
        assert!(!err.contains("{\"a\""), "no body in the error: {err}");
        assert_eq!(log.read(&refs[2]).unwrap(), "{\"n\":\"\u{e9}\"}");
    }

    #[test]
    fn a_segment_goes_only_after_its_last_entry_is_released_and_a_flush_passed() {
        let dir = tempfile::tempdir().unwrap();
        let log = BodyLog::open(dir.path(), []).unwrap();
        let first = log.append(&[b"one", b"two"]).unwrap();
        // Fill the first segment so the next append begins another.
        log.fill_segment();
        let second = log.append(&[b"three"]).unwrap();
        assert_ne!(first[0].seg, second[0].seg);
        assert_eq!(log.segments_on_disk(), vec![first[0].seg, second[0].seg]);
        log.release(&first[0]);
        assert!(log.doomed().is_empty(), "one entry still refers to it");
        log.release(&first[1]);
        let doomed = log.doomed();
        assert_eq!(doomed, vec![first[0].seg]);
        assert_eq!(
            log.segments_on_disk().len(),
            2,
            "nothing goes before the flush"
        );
        log.delete(doomed);
        assert_eq!(log.segments_on_disk(), vec![second[0].seg]);
        // The segment written to stays, released or not.
        log.release(&second[0]);
        assert!(log.doomed().is_empty());
    }

    #[test]
    fn an_open_keeps_the_segments_referred_to_and_begins_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let (kept, orphan) = {
            let log = BodyLog::open(dir.path(), []).unwrap();
            let kept = log.append(&[b"kept"]).unwrap();
            log.fill_segment();
            let orphan = log.append(&[b"never stored"]).unwrap();
            (kept, orphan)
        };
        let log = BodyLog::open(dir.path(), kept.clone()).unwrap();
        let on_disk = log.segments_on_disk();
        assert!(on_disk.contains(&kept[0].seg));
        assert!(
            !on_disk.contains(&orphan[0].seg),
            "a segment nothing refers to is deleted"
        );
        assert_eq!(on_disk.len(), 2, "the kept one and a new one: {on_disk:?}");
        assert!(on_disk[1] > orphan[0].seg, "numbers are never reused");
        assert_eq!(log.read(&kept[0]).unwrap(), "kept");
        log.erase(&kept[0]).unwrap();
        assert!(log
            .read(&kept[0])
            .unwrap_err()
            .to_string()
            .contains("CRC mismatch"));
        let bytes = std::fs::read(dir.path().join(DIR).join(seg_name(kept[0].seg))).unwrap();
        assert!(bytes.iter().all(|b| *b == 0), "erased to zeros");
    }
}
