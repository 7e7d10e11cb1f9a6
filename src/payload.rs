//! The payload of one WAL entry: every table write of one acknowledged request.
//!
//! Layout (little-endian): `u32` table count, then per table `u16` database length, database,
//! `u16` measurement length, measurement, `u32` length, and an Arrow IPC stream holding the
//! schema (with the tag/field kinds in its field metadata) and one record batch. Arrow IPC keeps
//! every value and type exactly, so replay rebuilds the very batch that was acknowledged.
//! Decoding never panics: WAL bytes passed their CRC, but a bug or a format change must show up
//! as an error naming the LSN, not as a crash.

use std::io::Cursor;

use arc_storage::TableId;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::ingest::TableWrite;

/// A WAL payload that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The bytes end early or hold an impossible length.
    #[error("wal payload truncated or malformed at byte {offset}: {reason}")]
    Malformed {
        /// Byte offset inside the payload.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
    /// Arrow could not encode or decode the batch of a table.
    #[error("wal payload arrow ipc for {table}: {source}")]
    Arrow {
        /// The table whose batch failed.
        table: String,
        /// The Arrow error.
        source: arrow::error::ArrowError,
    },
}

/// Encodes the table writes of one request.
///
/// # Errors
/// When Arrow cannot encode a batch, or a name is longer than 65535 bytes.
pub fn encode(writes: &[TableWrite]) -> Result<Vec<u8>, PayloadError> {
    let mut out = Vec::with_capacity(
        64 + writes
            .iter()
            .map(|write| write.batch.get_array_memory_size())
            .sum::<usize>(),
    );
    out.extend_from_slice(&(writes.len() as u32).to_le_bytes());
    for write in writes {
        put_str(&mut out, &write.table.database)?;
        put_str(&mut out, &write.table.measurement)?;
        let length_at = out.len();
        out.extend_from_slice(&0u32.to_le_bytes());
        let start = out.len();
        {
            let arrow_error = |source| PayloadError::Arrow {
                table: write.table.to_string(),
                source,
            };
            let mut writer =
                StreamWriter::try_new(&mut out, &write.batch.schema()).map_err(arrow_error)?;
            writer.write(&write.batch).map_err(arrow_error)?;
            writer.finish().map_err(arrow_error)?;
        }
        let length = u32::try_from(out.len() - start).map_err(|_| PayloadError::Malformed {
            offset: start,
            reason: format!("batch of {} larger than 4 GiB", write.table),
        })?;
        out[length_at..length_at + 4].copy_from_slice(&length.to_le_bytes());
    }
    Ok(out)
}

fn put_str(out: &mut Vec<u8>, text: &str) -> Result<(), PayloadError> {
    let length = u16::try_from(text.len()).map_err(|_| PayloadError::Malformed {
        offset: out.len(),
        reason: format!("name of {} bytes is too long", text.len()),
    })?;
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], PayloadError> {
        let end = self
            .offset
            .checked_add(count)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| PayloadError::Malformed {
                offset: self.offset,
                reason: format!(
                    "needs {count} bytes, {} left",
                    self.bytes.len() - self.offset
                ),
            })?;
        let slice = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(slice)
    }

    fn u16(&mut self) -> Result<u16, PayloadError> {
        let bytes = self.take(2)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self) -> Result<u32, PayloadError> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn string(&mut self) -> Result<String, PayloadError> {
        let length = self.u16()? as usize;
        let offset = self.offset;
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| PayloadError::Malformed {
            offset,
            reason: "name is not UTF-8".into(),
        })
    }
}

/// Walks the tables of a payload written by [`encode`]: each table with its Arrow IPC bytes and
/// their offset. Checks the table count and that nothing trails the last table.
fn for_each_table(
    bytes: &[u8],
    mut visit: impl FnMut(TableId, &[u8], usize) -> Result<(), PayloadError>,
) -> Result<usize, PayloadError> {
    let mut reader = Reader { bytes, offset: 0 };
    let count = reader.u32()? as usize;
    // Each table takes at least 8 bytes, so a count beyond that is corruption, not a reason
    // to allocate.
    if count > bytes.len() / 8 {
        return Err(PayloadError::Malformed {
            offset: 0,
            reason: format!("table count {count} exceeds payload size"),
        });
    }
    for _ in 0..count {
        let database = reader.string()?;
        let measurement = reader.string()?;
        let length = reader.u32()? as usize;
        let ipc = reader.take(length)?;
        visit(TableId::new(database, measurement), ipc, reader.offset)?;
    }
    if reader.offset != bytes.len() {
        return Err(PayloadError::Malformed {
            offset: reader.offset,
            reason: "trailing bytes".into(),
        });
    }
    Ok(count)
}

/// Decodes a payload written by [`encode`].
///
/// # Errors
/// When the bytes are truncated, hold impossible lengths, or Arrow rejects a batch.
pub fn decode(bytes: &[u8]) -> Result<Vec<TableWrite>, PayloadError> {
    let mut writes = Vec::new();
    for_each_table(bytes, |table, ipc, offset| {
        let arrow_error = |source| PayloadError::Arrow {
            table: table.to_string(),
            source,
        };
        let stream = StreamReader::try_new(Cursor::new(ipc), None).map_err(arrow_error)?;
        let mut batches: Vec<RecordBatch> = Vec::with_capacity(1);
        for batch in stream {
            batches.push(batch.map_err(arrow_error)?);
        }
        let batch = match batches.len() {
            1 => batches.pop().expect("length checked"),
            found => {
                return Err(PayloadError::Malformed {
                    offset,
                    reason: format!("{table}: expected one batch, found {found}"),
                });
            }
        };
        writes.push(TableWrite { table, batch });
        Ok(())
    })?;
    Ok(writes)
}

/// Returns the tables a payload written by [`encode`] holds, without decoding their rows.
///
/// # Errors
/// When the bytes are truncated or hold impossible lengths.
pub fn tables(bytes: &[u8]) -> Result<Vec<TableId>, PayloadError> {
    let mut tables = Vec::new();
    for_each_table(bytes, |table, _, _| {
        tables.push(table);
        Ok(())
    })?;
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{Precision, decode_line_protocol};

    #[test]
    fn test_should_round_trip_table_writes() {
        let body = b"cpu,host=a usage=1.5,count=3i,ok=t,note=\"x y\" 1700000000000000001\nmem,host=b free=7u 1700000000000000002\n";
        let writes = decode_line_protocol(body, "default", Precision::Ns, 0, None).unwrap();
        let bytes = encode(&writes).unwrap();
        let decoded = decode(&bytes).unwrap();
        assert_eq!(decoded.len(), writes.len());
        let names: Vec<TableId> = writes.iter().map(|write| write.table.clone()).collect();
        assert_eq!(tables(&bytes).unwrap(), names);
        for (left, right) in writes.iter().zip(&decoded) {
            assert_eq!(left.table, right.table);
            assert_eq!(left.batch, right.batch);
            assert_eq!(left.batch.schema(), right.batch.schema());
        }
    }

    #[test]
    fn test_should_reject_truncated_and_garbage_payloads_without_panic() {
        let body = b"cpu,host=a usage=1.5 1700000000000000001\n";
        let writes = decode_line_protocol(body, "default", Precision::Ns, 0, None).unwrap();
        let bytes = encode(&writes).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
            assert!(tables(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(&[0xff; 64]).is_err());
        let mut extended = bytes.clone();
        extended.push(0);
        assert!(decode(&extended).is_err());
    }
}
