//! [`Entries`]: the iterator behind [`crate::Wal::read_from`], streaming verified entries from
//! the segment files.
//!
//! It borrows the writer's segment list, so the log cannot be appended to or trimmed while it
//! runs, and it reads each segment only up to the length the writer knows to be complete.
//! Entries below the start LSN are verified but their payloads are not kept. After the first
//! error the iterator ends.

use std::io::BufReader;
use std::iter::FusedIterator;
use std::path::Path;

use crate::error::WalError;
use crate::format::{Entry, Opened, SegmentReader, Step};
use crate::fs::{WalFile, WalFs};
use crate::lsn::Lsn;
use crate::segment::SegmentMeta;

/// Read buffer per open segment.
const READ_BUFFER_BYTES: usize = 128 * 1024;

/// Iterator over the entries with `lsn >= from`, in LSN order. Created by
/// [`crate::Wal::read_from`].
pub struct Entries<'a> {
    /// The filesystem the segments are opened on.
    fs: &'a dyn WalFs,
    /// Segments not opened yet, oldest first.
    remaining: std::slice::Iter<'a, SegmentMeta>,
    /// The segment being read; `None` between segments.
    current: Option<OpenSegment<'a>>,
    from: Lsn,
    /// Set after the last segment or the first error.
    finished: bool,
}

struct OpenSegment<'a> {
    path: &'a Path,
    reader: SegmentReader<BufReader<Box<dyn WalFile>>>,
}

impl<'a> Entries<'a> {
    /// Starts at the segment that holds `from` (or the oldest one, if `from` is older), and
    /// opens it.
    ///
    /// # Errors
    /// `Io`, `Corrupt` or `UnsupportedFormat` if that first segment cannot be opened.
    pub(crate) fn new(
        fs: &'a dyn WalFs,
        segments: &'a [SegmentMeta],
        from: Lsn,
    ) -> Result<Self, WalError> {
        let start = segments
            .partition_point(|segment| segment.first_lsn <= from)
            .saturating_sub(1);
        let mut remaining = segments[start..].iter();
        let current = remaining
            .next()
            .map(|meta| open_segment(fs, meta))
            .transpose()?;
        Ok(Self {
            fs,
            finished: current.is_none(),
            remaining,
            current,
            from,
        })
    }

    fn fail(&mut self, error: WalError) -> Option<Result<Entry, WalError>> {
        self.finished = true;
        self.current = None;
        Some(Err(error))
    }
}

impl Iterator for Entries<'_> {
    type Item = Result<Entry, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.finished {
            let Some(segment) = self.current.as_mut() else {
                match self
                    .remaining
                    .next()
                    .map(|meta| open_segment(self.fs, meta))
                {
                    None => self.finished = true,
                    Some(Ok(opened)) => self.current = Some(opened),
                    Some(Err(error)) => return self.fail(error),
                }
                continue;
            };
            match segment.reader.next_entry(Some(self.from)) {
                Ok(Step::Entry(entry)) => return Some(Ok(entry)),
                Ok(Step::Verified { .. }) => {}
                Ok(Step::End) => self.current = None,
                Ok(Step::Defect(kind)) => {
                    let error = WalError::Corrupt {
                        path: segment.path.to_path_buf(),
                        offset: segment.reader.offset(),
                        kind,
                    };
                    return self.fail(error);
                }
                Err(source) => {
                    let error = WalError::Io {
                        path: segment.path.to_path_buf(),
                        source,
                    };
                    return self.fail(error);
                }
            }
        }
        None
    }
}

impl FusedIterator for Entries<'_> {}

fn open_segment<'a>(fs: &dyn WalFs, meta: &'a SegmentMeta) -> Result<OpenSegment<'a>, WalError> {
    let path = meta.path.as_path();
    let file = fs.open_read(path).map_err(WalError::io_at(path))?;
    let source = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    match SegmentReader::open(source, meta.size_bytes, meta.first_lsn)
        .map_err(WalError::io_at(path))?
    {
        Opened::Ready(reader) => Ok(OpenSegment { path, reader }),
        Opened::Defect(kind) => Err(WalError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            kind,
        }),
        Opened::Unsupported { version, flags } => Err(WalError::UnsupportedFormat {
            path: path.to_path_buf(),
            version,
            flags,
        }),
    }
}
