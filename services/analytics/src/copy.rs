//! Rows for `COPY ... FROM STDIN (FORMAT binary)`: the cheapest way to add many new rows to a
//! table (no statement parameters to decode, rows inserted in bulk). The format is described in
//! the PostgreSQL manual, "COPY", section "Binary Format".

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A COPY binary stream being built, row by row.
pub struct BinaryRows {
    buffer: Vec<u8>,
}

impl BinaryRows {
    pub fn new() -> Self {
        let mut buffer = Vec::with_capacity(1 << 16);
        buffer.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buffer.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buffer.extend_from_slice(&0i32.to_be_bytes()); // no header extension
        Self { buffer }
    }

    /// Starts a row of `fields` values; exactly that many must follow.
    pub fn row(&mut self, fields: i16) {
        self.buffer.extend_from_slice(&fields.to_be_bytes());
    }

    fn value(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            Some(bytes) => {
                let len = i32::try_from(bytes.len()).expect("a value under 2 GiB");
                self.buffer.extend_from_slice(&len.to_be_bytes());
                self.buffer.extend_from_slice(bytes);
            }
            None => self.buffer.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }

    pub fn uuid(&mut self, value: Uuid) {
        self.value(Some(value.as_bytes()));
    }

    pub fn text(&mut self, value: Option<&str>) {
        self.value(value.map(str::as_bytes));
    }

    pub fn int4(&mut self, value: i32) {
        self.value(Some(&value.to_be_bytes()));
    }

    pub fn timestamptz(&mut self, value: Option<DateTime<Utc>>) {
        let micros = value.map(|t| (t.timestamp_micros() - POSTGRES_EPOCH_MICROS).to_be_bytes());
        self.value(micros.as_ref().map(|m| m.as_slice()));
    }

    /// The stream, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.buffer.extend_from_slice(&(-1i16).to_be_bytes());
        self.buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn encodes_header_values_nulls_and_trailer() {
        let mut rows = BinaryRows::new();
        rows.row(4);
        rows.uuid(Uuid::from_u128(1));
        rows.text(None);
        rows.int4(-2);
        rows.timestamptz(Some(Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 1).unwrap()));
        let bytes = rows.finish();
        let mut expected = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&[0, 4]);
        expected.extend_from_slice(&[0, 0, 0, 16]);
        expected.extend_from_slice(Uuid::from_u128(1).as_bytes());
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xfe]);
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40]);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(bytes, expected);
    }
}
