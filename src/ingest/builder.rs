//! The Arrow builders both decoders fill: one [`TableBuilder`] per measurement of a request,
//! one column builder per tag or field, merged into one `RecordBatch` per table at the end.
//!
//! Rows are appended in order. A column only pads itself with nulls when it is next written
//! (or at [`RequestBuilder::finish`]), so a row costs nothing for the columns it lacks. The
//! same bookkeeping catches a column written twice in one row: its length is already past the
//! row. Column kinds are fixed by the first value; a later value of another kind is a
//! [`BuildError::Conflict`] (MessagePack may ask for ints and floats to merge into floats).
//!
//! Hazard: a batch is dense (rows times columns), while line protocol and MessagePack rows are
//! sparse: a few bytes can name a new column, which then costs a null in every row of its
//! table. So the cells (values plus null padding) a request may materialize are budgeted in
//! proportion to its body ([`cell_budget`]), and tables per request and columns per table are
//! capped, since each builder costs more than the bytes that named it. Builders start empty.
//!
//! A cell is also the unit of the memory a request decodes to: eight bytes, the size of a value
//! (or null) in a numeric column, of a row's time, and of each eight bytes of string data. A
//! request holding a [`Reservation`] pays for its cells from the node's inflight budget as it
//! builds them, in tranches (see [`Budget::take`]), so concurrent requests cannot decode their
//! way past the budget that already bounds their bodies.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_storage::model::{ColumnKind, FieldType, TIME_COLUMN, TableId};
use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampNanosecondArray, UInt64Builder,
};
use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;

use super::admission::Reservation;
use super::{IngestError, TableWrite, shorten, validate_database_name, validate_measurement_name};

/// Most tables (measurements) one request may write.
pub(super) const MAX_TABLES_PER_REQUEST: usize = 10_000;

/// Most columns (tags plus fields) one table may get in one request.
pub(super) const MAX_COLUMNS_PER_TABLE: usize = 10_000;

/// Cells (values and null padding, all columns, times, string bytes) a request may build per
/// byte of body. Dense data needs at most one per byte (every value or time costs at least a
/// byte: MessagePack's smallest value is one byte, line protocol's `a=1,` four; and a string's
/// cells are an eighth of its bytes); the slack admits sparse columns.
const CELLS_PER_BODY_BYTE: usize = 2;

/// Decoded bytes one cell stands for: a value, a null or a time in its 64-bit slot.
const BYTES_PER_CELL: usize = 8;

/// The first payment for cells (8 KiB of decoded data): a one-line write holds little of the
/// budget, so thousands of small writes fit in it at once.
const FIRST_TRANCHE_CELLS: usize = 1024;

/// The largest payment for cells (4 MiB of decoded data). Payments double from the first to
/// this: few enough that their cost vanishes, small enough that what a request holds unused
/// stays small.
const MAX_TRANCHE_CELLS: usize = 512 * 1024;

/// Cells every request may build whatever its size, so small sparse requests always pass.
const MIN_CELLS: usize = 1 << 20;

/// Returns the cell budget of a request with a body of `body_len` bytes.
pub(super) fn cell_budget(body_len: usize) -> usize {
    body_len
        .saturating_mul(CELLS_PER_BODY_BYTE)
        .saturating_add(MIN_CELLS)
}

/// Most bytes of string data per column per request: Arrow `Utf8` offsets are `i32`.
const MAX_STRING_BYTES: usize = i32::MAX as usize;

/// A field value on its way into a column; strings borrow from the request body.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum FieldValue<'v> {
    /// A float.
    Float(f64),
    /// A signed integer.
    Integer(i64),
    /// An unsigned integer.
    UInteger(u64),
    /// A boolean.
    Boolean(bool),
    /// A string.
    String(&'v str),
}

impl FieldValue<'_> {
    /// Returns the column type this value would create.
    pub(super) fn field_type(&self) -> FieldType {
        match self {
            FieldValue::Float(_) => FieldType::Float,
            FieldValue::Integer(_) => FieldType::Integer,
            FieldValue::UInteger(_) => FieldType::UInteger,
            FieldValue::Boolean(_) => FieldType::Boolean,
            FieldValue::String(_) => FieldType::String,
        }
    }
}

/// Why a table or column refused a row or value. Carries no location: the decoders prefix
/// the line number or MessagePack path.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum BuildError {
    /// The measurement name breaks the naming rules.
    InvalidMeasurement(IngestError),
    /// The request names more than [`MAX_TABLES_PER_REQUEST`] tables.
    TooManyTables,
    /// The table would get more than [`MAX_COLUMNS_PER_TABLE`] columns.
    TooManyColumns,
    /// A tag or field is named `time`.
    ReservedName,
    /// A tag or field has an empty name.
    EmptyName,
    /// The same column is written twice in one row.
    Repeated {
        /// The column.
        column: String,
    },
    /// The column already has another kind in this request.
    Conflict {
        /// The column.
        column: String,
        /// The kind it got first.
        existing: ColumnKind,
        /// The kind of the refused value.
        new: ColumnKind,
    },
    /// The request would build more cells than its budget (see [`cell_budget`]).
    TooSparse {
        /// The budget, in cells.
        budget: usize,
    },
    /// The column would hold more string bytes than Arrow can address.
    StringsTooLarge {
        /// The column.
        column: String,
    },
    /// The node's inflight budget could not pay for more cells; the request's reason is kept
    /// by its [`RequestBuilder`] (see [`RequestBuilder::refusal`]).
    Unpaid,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::InvalidMeasurement(error) => write!(f, "{error}"),
            BuildError::TooManyTables => write!(
                f,
                "more than {MAX_TABLES_PER_REQUEST} measurements in one request"
            ),
            BuildError::TooManyColumns => write!(
                f,
                "more than {MAX_COLUMNS_PER_TABLE} columns for one measurement in one request"
            ),
            BuildError::ReservedName => write!(
                f,
                "column name \"{TIME_COLUMN}\" is reserved for the timestamp"
            ),
            BuildError::EmptyName => write!(f, "empty column name"),
            BuildError::Repeated { column } => {
                write!(f, "column \"{}\" appears twice in one row", shorten(column))
            }
            BuildError::Conflict {
                column,
                existing,
                new,
            } => write!(
                f,
                "column \"{}\" is {} here but {} earlier in the request",
                shorten(column),
                kind_name(*new),
                kind_name(*existing)
            ),
            BuildError::TooSparse { budget } => write!(
                f,
                "too sparse: the request needs more than {budget} cells (rows times columns, \
                 nulls included) for its size"
            ),
            BuildError::StringsTooLarge { column } => write!(
                f,
                "column \"{}\" holds more than {MAX_STRING_BYTES} bytes of strings",
                shorten(column)
            ),
            BuildError::Unpaid => write!(f, "the node's ingest budget cannot hold the rows"),
        }
    }
}

/// Names a column kind for messages: `tag`, `float field`, `string field`, ...
pub(super) fn kind_name(kind: ColumnKind) -> String {
    match kind {
        ColumnKind::Time => "time".to_string(),
        ColumnKind::Tag => "tag".to_string(),
        ColumnKind::Field(field_type) => format!("{field_type} field"),
    }
}

/// The values of one column, in the builder of its Arrow type.
enum ColumnData {
    Tag(StringBuilder),
    Float(Float64Builder),
    Integer(Int64Builder),
    UInteger(UInt64Builder),
    Boolean(BooleanBuilder),
    String(StringBuilder),
}

impl ColumnData {
    fn new(kind: ColumnKind) -> Self {
        match kind {
            // `Time` never reaches here (the name is reserved); a tag is the harmless answer.
            // Capacity 0: `new()` preallocates 1024 slots (8 KiB), which hostile bodies could
            // multiply by the column cap. Growth is geometric either way.
            ColumnKind::Time | ColumnKind::Tag => {
                ColumnData::Tag(StringBuilder::with_capacity(0, 0))
            }
            ColumnKind::Field(FieldType::Float) => {
                ColumnData::Float(Float64Builder::with_capacity(0))
            }
            ColumnKind::Field(FieldType::Integer) => {
                ColumnData::Integer(Int64Builder::with_capacity(0))
            }
            ColumnKind::Field(FieldType::UInteger) => {
                ColumnData::UInteger(UInt64Builder::with_capacity(0))
            }
            ColumnKind::Field(FieldType::Boolean) => {
                ColumnData::Boolean(BooleanBuilder::with_capacity(0))
            }
            ColumnKind::Field(FieldType::String) => {
                ColumnData::String(StringBuilder::with_capacity(0, 0))
            }
        }
    }

    fn kind(&self) -> ColumnKind {
        match self {
            ColumnData::Tag(_) => ColumnKind::Tag,
            ColumnData::Float(_) => ColumnKind::Field(FieldType::Float),
            ColumnData::Integer(_) => ColumnKind::Field(FieldType::Integer),
            ColumnData::UInteger(_) => ColumnKind::Field(FieldType::UInteger),
            ColumnData::Boolean(_) => ColumnKind::Field(FieldType::Boolean),
            ColumnData::String(_) => ColumnKind::Field(FieldType::String),
        }
    }

    fn append_nulls(&mut self, count: usize) {
        match self {
            ColumnData::Tag(builder) | ColumnData::String(builder) => builder.append_nulls(count),
            ColumnData::Float(builder) => builder.append_nulls(count),
            ColumnData::Integer(builder) => builder.append_nulls(count),
            ColumnData::UInteger(builder) => builder.append_nulls(count),
            ColumnData::Boolean(builder) => builder.append_nulls(count),
        }
    }

    /// Turns an integer column into a float column, value for value (MessagePack clients
    /// often send `1` and `1.5` to the same field; they mean floats).
    fn promote_to_float(&mut self) {
        let floats = match self {
            ColumnData::Integer(builder) => {
                let values = builder.finish();
                let mut floats = Float64Builder::with_capacity(values.len());
                values
                    .iter()
                    .for_each(|value| floats.append_option(value.map(|v| v as f64)));
                floats
            }
            ColumnData::UInteger(builder) => {
                let values = builder.finish();
                let mut floats = Float64Builder::with_capacity(values.len());
                values
                    .iter()
                    .for_each(|value| floats.append_option(value.map(|v| v as f64)));
                floats
            }
            _ => return,
        };
        *self = ColumnData::Float(floats);
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnData::Tag(builder) | ColumnData::String(builder) => Arc::new(builder.finish()),
            ColumnData::Float(builder) => Arc::new(builder.finish()),
            ColumnData::Integer(builder) => Arc::new(builder.finish()),
            ColumnData::UInteger(builder) => Arc::new(builder.finish()),
            ColumnData::Boolean(builder) => Arc::new(builder.finish()),
        }
    }
}

/// One column of a table being built.
struct ColumnBuilder {
    name: String,
    data: ColumnData,
    /// Rows covered so far (values and nulls); rows `len..` are implicitly null until padded.
    len: usize,
}

impl ColumnBuilder {
    /// Takes the cells needed to write `row` (its padding and the value) from `cells_left`,
    /// or refuses a second value for a row already written.
    #[inline]
    fn charge(&self, row: usize, cells_left: &mut Budget<'_>) -> Result<(), BuildError> {
        if self.len > row {
            return Err(BuildError::Repeated {
                column: self.name.clone(),
            });
        }
        cells_left.take(row + 1 - self.len)
    }

    fn conflict(&self, new: ColumnKind) -> BuildError {
        BuildError::Conflict {
            column: self.name.clone(),
            existing: self.data.kind(),
            new,
        }
    }
}

/// What is left of a request's cell budget, and what pays for it.
#[derive(Debug, Default)]
struct Budget<'r> {
    /// Cells paid for and not yet built.
    paid: usize,
    /// Cells the request may still build beyond `paid`, once paid for.
    unpaid: usize,
    /// The whole budget, for messages.
    total: usize,
    /// Pays for cells from the node's inflight budget; `None` builds them unmetered.
    reservation: Option<&'r mut Reservation>,
    /// Bytes the reservation held before the first cell (the body).
    base: usize,
    /// Why the reservation could not grow, once it could not.
    refusal: Option<IngestError>,
}

impl<'r> Budget<'r> {
    fn new(total: usize, reservation: Option<&'r mut Reservation>) -> Self {
        let base = reservation.as_deref().map_or(0, Reservation::bytes);
        let metered = reservation.is_some();
        Self {
            paid: if metered { 0 } else { total },
            unpaid: if metered { total } else { 0 },
            total,
            reservation,
            base,
            refusal: None,
        }
    }

    /// Takes `cells` from the budget, paying for another tranche first when the paid cells run
    /// out. The common case is one subtraction.
    #[inline]
    fn take(&mut self, cells: usize) -> Result<(), BuildError> {
        match self.paid.checked_sub(cells) {
            Some(left) => {
                self.paid = left;
                Ok(())
            }
            None => self.pay(cells),
        }
    }

    #[cold]
    fn pay(&mut self, cells: usize) -> Result<(), BuildError> {
        let short = cells - self.paid;
        if short > self.unpaid {
            return Err(BuildError::TooSparse { budget: self.total });
        }
        let paid_so_far = self.total - self.unpaid;
        let tranche = paid_so_far
            .clamp(FIRST_TRANCHE_CELLS, MAX_TRANCHE_CELLS)
            .max(short)
            .min(self.unpaid);
        if let Some(reservation) = self.reservation.as_deref_mut() {
            let cells_paid = paid_so_far + tranche;
            let bytes = self
                .base
                .saturating_add(cells_paid.saturating_mul(BYTES_PER_CELL));
            if let Err(error) = reservation.grow_to(bytes) {
                self.refusal = Some(match error {
                    IngestError::TooLarge { limit } => IngestError::DecodedTooLarge { limit },
                    other => other,
                });
                return Err(BuildError::Unpaid);
            }
        }
        self.unpaid -= tranche;
        self.paid = self.paid + tranche - cells;
        Ok(())
    }
}

/// Appends a string to a `Utf8` builder, taking its bytes' cells from `cells`, unless the
/// column would outgrow `i32` offsets.
#[inline]
fn append_string(
    builder: &mut StringBuilder,
    value: &str,
    name: &str,
    cells: &mut Budget<'_>,
) -> Result<(), BuildError> {
    if builder.values_slice().len() + value.len() > MAX_STRING_BYTES {
        return Err(BuildError::StringsTooLarge {
            column: name.to_string(),
        });
    }
    cells.take(value.len() / BYTES_PER_CELL)?;
    builder.append_value(value);
    Ok(())
}

/// Checks, without writing anything, that a value of `kind` may go into column `name` of
/// `table` (`None`: a table the request does not have yet) in a new row: the name is allowed,
/// and an existing column has that kind. Returns whether the column would be new. Lenient
/// decoding checks a whole line this way before it writes any of it, since a row cannot be
/// taken back out of the builders.
pub(super) fn check_column(
    table: Option<&TableBuilder<'_>>,
    name: &str,
    kind: ColumnKind,
) -> Result<bool, BuildError> {
    match table.and_then(|table| Some(&table.columns[*table.by_name.get(name)?])) {
        Some(column) if column.data.kind() == kind => Ok(false),
        Some(column) => Err(column.conflict(kind)),
        None => check_name(name).map(|()| true),
    }
}

/// Refuses the names no column may have: the timestamp's, and the empty one.
fn check_name(name: &str) -> Result<(), BuildError> {
    if name == TIME_COLUMN {
        return Err(BuildError::ReservedName);
    }
    if name.is_empty() {
        return Err(BuildError::EmptyName);
    }
    Ok(())
}

/// The rows of one measurement in one request.
pub(super) struct TableBuilder<'r> {
    measurement: String,
    times: Vec<i64>,
    columns: Vec<ColumnBuilder>,
    by_name: HashMap<String, usize>,
    /// Column index by position in the previous line or row: lines of one measurement mostly
    /// list the same keys in the same order, so a string compare replaces a hash lookup.
    slot_cache: Vec<usize>,
    /// The request's whole remaining cell budget while this is the current table; handed
    /// back by [`RequestBuilder::table`] when another table becomes current.
    cells: Budget<'r>,
}

impl TableBuilder<'_> {
    /// A column of this table whose name, lowercased, is `lowered`.
    pub(super) fn column_like(&self, lowered: &str) -> Option<&str> {
        self.by_name
            .keys()
            .find(|name| name.to_lowercase() == lowered)
            .map(String::as_str)
    }

    fn new(measurement: &str) -> Self {
        Self {
            measurement: measurement.to_string(),
            times: Vec::new(),
            columns: Vec::new(),
            by_name: HashMap::new(),
            slot_cache: Vec::new(),
            cells: Budget::default(),
        }
    }

    /// Returns the number of rows so far.
    pub(super) fn rows(&self) -> usize {
        self.times.len()
    }

    /// Starts a row at `time_ns` (its time takes a cell) and returns its index.
    #[inline]
    pub(super) fn push_row(&mut self, time_ns: i64) -> Result<usize, BuildError> {
        self.cells.take(1)?;
        self.times.push(time_ns);
        Ok(self.times.len() - 1)
    }

    /// Returns the index of column `name`, creating it with `kind` if it is new. `slot` is the
    /// key's position in its line or row, for the lookup cache; `None` skips the cache.
    ///
    /// An existing column keeps its kind whatever `kind` says: the append checks it.
    #[inline]
    pub(super) fn column(
        &mut self,
        slot: Option<usize>,
        name: &str,
        kind: ColumnKind,
    ) -> Result<usize, BuildError> {
        if let Some(slot) = slot
            && let Some(&index) = self.slot_cache.get(slot)
            && self.columns[index].name == name
        {
            return Ok(index);
        }
        let index = match self.by_name.get(name) {
            Some(&index) => index,
            None => self.create_column(name, kind)?,
        };
        if let Some(slot) = slot {
            if slot < self.slot_cache.len() {
                self.slot_cache[slot] = index;
            } else if slot == self.slot_cache.len() {
                self.slot_cache.push(index);
            }
        }
        Ok(index)
    }

    /// Returns the number of columns so far.
    pub(super) fn columns(&self) -> usize {
        self.columns.len()
    }

    fn create_column(&mut self, name: &str, kind: ColumnKind) -> Result<usize, BuildError> {
        check_name(name)?;
        if self.columns.len() >= MAX_COLUMNS_PER_TABLE {
            return Err(BuildError::TooManyColumns);
        }
        let index = self.columns.len();
        self.columns.push(ColumnBuilder {
            name: name.to_string(),
            data: ColumnData::new(kind),
            len: 0,
        });
        self.by_name.insert(name.to_string(), index);
        Ok(index)
    }

    /// Writes a tag value into `row` of column `column`.
    #[inline]
    pub(super) fn append_tag(
        &mut self,
        column: usize,
        row: usize,
        value: &str,
    ) -> Result<(), BuildError> {
        let column = &mut self.columns[column];
        column.charge(row, &mut self.cells)?;
        let ColumnData::Tag(builder) = &mut column.data else {
            return Err(column.conflict(ColumnKind::Tag));
        };
        if column.len < row {
            builder.append_nulls(row - column.len);
        }
        append_string(builder, value, &column.name, &mut self.cells)?;
        column.len = row + 1;
        Ok(())
    }

    /// Writes a field value into `row` of column `column`. With `merge_numbers`, integers and
    /// floats meeting in one column make it a float column (MessagePack's rule); without it,
    /// as in line protocol where every value spells its type, they conflict.
    #[inline]
    pub(super) fn append_field(
        &mut self,
        column: usize,
        row: usize,
        value: FieldValue<'_>,
        merge_numbers: bool,
    ) -> Result<(), BuildError> {
        let column = &mut self.columns[column];
        if merge_numbers
            && matches!(value, FieldValue::Float(_))
            && matches!(
                column.data,
                ColumnData::Integer(_) | ColumnData::UInteger(_)
            )
        {
            column.data.promote_to_float();
        }
        // Type check first, so a refused value leaves the column untouched.
        let accepted = matches!(
            (&column.data, value),
            (ColumnData::Float(_), FieldValue::Float(_))
                | (ColumnData::Integer(_), FieldValue::Integer(_))
                | (ColumnData::UInteger(_), FieldValue::UInteger(_))
                | (ColumnData::Boolean(_), FieldValue::Boolean(_))
                | (ColumnData::String(_), FieldValue::String(_))
        ) || (merge_numbers
            && matches!(
                (&column.data, value),
                (
                    ColumnData::Float(_),
                    FieldValue::Integer(_) | FieldValue::UInteger(_)
                )
            ));
        if !accepted {
            return Err(column.conflict(ColumnKind::Field(value.field_type())));
        }
        column.charge(row, &mut self.cells)?;
        if column.len < row {
            column.data.append_nulls(row - column.len);
        }
        match (&mut column.data, value) {
            (ColumnData::Float(builder), FieldValue::Float(v)) => builder.append_value(v),
            (ColumnData::Float(builder), FieldValue::Integer(v)) => builder.append_value(v as f64),
            (ColumnData::Float(builder), FieldValue::UInteger(v)) => builder.append_value(v as f64),
            (ColumnData::Integer(builder), FieldValue::Integer(v)) => builder.append_value(v),
            (ColumnData::UInteger(builder), FieldValue::UInteger(v)) => builder.append_value(v),
            (ColumnData::Boolean(builder), FieldValue::Boolean(v)) => builder.append_value(v),
            (ColumnData::String(builder), FieldValue::String(v)) => {
                append_string(builder, v, &column.name, &mut self.cells)?
            }
            // Excluded by the check above.
            _ => return Err(column.conflict(ColumnKind::Field(value.field_type()))),
        }
        column.len = row + 1;
        Ok(())
    }

    /// Builds the batch: `time`, then tags by name, then fields by name. `None` if no rows.
    /// The final null padding is taken from `cells`.
    fn finish(
        self,
        database: &str,
        cells: &mut Budget<'_>,
    ) -> Result<Option<TableWrite>, IngestError> {
        let rows = self.times.len();
        if rows == 0 {
            return Ok(None);
        }
        let padding: usize = self.columns.iter().map(|column| rows - column.len).sum();
        cells
            .take(padding)
            .map_err(|error| IngestError::Invalid(format!("{}: {error}", self.measurement)))?;
        let table = TableId::new(database, self.measurement);
        let mut columns = self.columns;
        columns.sort_by(|a, b| {
            let a_is_field = !matches!(a.data, ColumnData::Tag(_));
            let b_is_field = !matches!(b.data, ColumnData::Tag(_));
            (a_is_field, &a.name).cmp(&(b_is_field, &b.name))
        });
        let mut fields = Vec::with_capacity(columns.len() + 1);
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len() + 1);
        fields.push(ColumnKind::Time.arrow_field(TIME_COLUMN));
        arrays.push(Arc::new(TimestampNanosecondArray::from(self.times)));
        for mut column in columns {
            if column.len < rows {
                column.data.append_nulls(rows - column.len);
            }
            fields.push(column.data.kind().arrow_field(&column.name));
            arrays.push(column.data.finish());
        }
        let batch =
            RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|error| {
                // Cannot happen (every column was padded to `rows`); refuse rather than panic.
                IngestError::Invalid(format!("building the batch of {table}: {error}"))
            })?;
        Ok(Some(TableWrite { table, batch }))
    }
}

/// All tables of one request.
pub(super) struct RequestBuilder<'d, 'r> {
    database: &'d str,
    tables: Vec<TableBuilder<'r>>,
    by_measurement: HashMap<String, usize>,
    /// The table of the previous line: consecutive lines mostly share a measurement. It holds
    /// the cell budget (see [`TableBuilder::cells`]).
    last: Option<usize>,
    /// The cell budget while no table holds it.
    cells: Budget<'r>,
}

impl<'d, 'r> RequestBuilder<'d, 'r> {
    /// Starts a request for `database` whose body is `body_len` bytes (which sets its cell
    /// budget). With a `reservation` (which already holds the body), the cells are paid for
    /// from it as they are built.
    ///
    /// # Errors
    ///
    /// [`IngestError::Invalid`] if the database name breaks the naming rules.
    pub(super) fn new(
        database: &'d str,
        body_len: usize,
        reservation: Option<&'r mut Reservation>,
    ) -> Result<Self, IngestError> {
        validate_database_name(database)?;
        Ok(Self {
            database,
            tables: Vec::new(),
            by_measurement: HashMap::new(),
            last: None,
            cells: Budget::new(cell_budget(body_len), reservation),
        })
    }

    /// Why the inflight budget refused to pay for the request's cells, if it did: the answer
    /// to give instead of the [`BuildError::Unpaid`] a decoder saw.
    pub(super) fn refusal(&mut self) -> Option<IngestError> {
        match self.last {
            Some(last) => self.tables[last].cells.refusal.take(),
            None => self.cells.refusal.take(),
        }
    }

    /// Returns the table of `measurement`, creating it (after checking the name) if new.
    #[inline]
    pub(super) fn table(&mut self, measurement: &str) -> Result<&mut TableBuilder<'r>, BuildError> {
        let index = match self.last {
            Some(last) if self.tables[last].measurement == measurement => {
                return Ok(&mut self.tables[last]);
            }
            _ => match self.by_measurement.get(measurement) {
                Some(&index) => index,
                None => self.create_table(measurement)?,
            },
        };
        // Pass the budget from the previous current table to this one.
        if let Some(last) = self.last {
            self.cells = std::mem::take(&mut self.tables[last].cells);
        }
        self.tables[index].cells = std::mem::take(&mut self.cells);
        self.last = Some(index);
        Ok(&mut self.tables[index])
    }

    /// Returns the table of `measurement` if the request has it; if not, checks that it could
    /// be created, without creating it.
    pub(super) fn peek_table(
        &self,
        measurement: &str,
    ) -> Result<Option<&TableBuilder<'r>>, BuildError> {
        if let Some(&index) = self.by_measurement.get(measurement) {
            return Ok(Some(&self.tables[index]));
        }
        validate_measurement_name(measurement).map_err(BuildError::InvalidMeasurement)?;
        if self.tables.len() >= MAX_TABLES_PER_REQUEST {
            return Err(BuildError::TooManyTables);
        }
        Ok(None)
    }

    fn create_table(&mut self, measurement: &str) -> Result<usize, BuildError> {
        validate_measurement_name(measurement).map_err(BuildError::InvalidMeasurement)?;
        if self.tables.len() >= MAX_TABLES_PER_REQUEST {
            return Err(BuildError::TooManyTables);
        }
        let index = self.tables.len();
        self.tables.push(TableBuilder::new(measurement));
        self.by_measurement.insert(measurement.to_string(), index);
        Ok(index)
    }

    /// Builds one [`TableWrite`] per table with rows, in order of first appearance.
    ///
    /// # Errors
    ///
    /// [`IngestError::Invalid`] if padding the tables' columns would exceed the cell budget;
    /// the [`refusal`](Self::refusal) if the inflight budget cannot pay for the padding.
    pub(super) fn finish(mut self) -> Result<Vec<TableWrite>, IngestError> {
        let database = self.database;
        let mut cells = match self.last {
            Some(last) => std::mem::take(&mut self.tables[last].cells),
            None => self.cells,
        };
        let mut writes = Vec::with_capacity(self.tables.len());
        for table in self.tables {
            match table.finish(database, &mut cells) {
                Ok(Some(write)) => writes.push(write),
                Ok(None) => {}
                Err(error) => return Err(cells.refusal.take().unwrap_or(error)),
            }
        }
        Ok(writes)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};

    use super::*;

    #[test]
    fn test_should_pad_missing_values_with_nulls_and_sort_columns() {
        let mut request = RequestBuilder::new("db", 0, None).unwrap();
        let table = request.table("cpu").unwrap();
        let row = table.push_row(1).unwrap();
        let usage = table
            .column(Some(0), "usage", ColumnKind::Field(FieldType::Float))
            .unwrap();
        table
            .append_field(usage, row, FieldValue::Float(1.5), false)
            .unwrap();
        let row = table.push_row(2).unwrap();
        let host = table.column(Some(0), "host", ColumnKind::Tag).unwrap();
        table.append_tag(host, row, "a").unwrap();
        table.push_row(3).unwrap();
        let writes = request.finish().unwrap();
        assert_eq!(writes.len(), 1);
        let batch = &writes[0].batch;
        assert_eq!(
            crate::ingest::test_support::column_names(batch),
            ["time", "host", "usage"]
        );
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.column(1).null_count(), 2);
        assert_eq!(batch.column(2).as_primitive::<Float64Type>().value(0), 1.5);
        assert!(batch.column(2).is_null(1) && batch.column(2).is_null(2));
    }

    #[test]
    fn test_should_refuse_a_column_written_twice_in_one_row() {
        let mut request = RequestBuilder::new("db", 0, None).unwrap();
        let table = request.table("cpu").unwrap();
        let row = table.push_row(1).unwrap();
        let usage = table
            .column(None, "usage", ColumnKind::Field(FieldType::Integer))
            .unwrap();
        table
            .append_field(usage, row, FieldValue::Integer(1), false)
            .unwrap();
        let error = table
            .append_field(usage, row, FieldValue::Integer(2), false)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "column \"usage\" appears twice in one row"
        );
    }

    #[test]
    fn test_should_merge_ints_and_floats_only_when_asked() {
        let mut request = RequestBuilder::new("db", 0, None).unwrap();
        let table = request.table("cpu").unwrap();
        let column = table
            .column(None, "v", ColumnKind::Field(FieldType::Integer))
            .unwrap();
        let row = table.push_row(1).unwrap();
        table
            .append_field(column, row, FieldValue::Integer(2), false)
            .unwrap();
        let row = table.push_row(2).unwrap();
        let error = table
            .append_field(column, row, FieldValue::Float(0.5), false)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "column \"v\" is float field here but integer field earlier in the request"
        );
        table
            .append_field(column, row, FieldValue::Float(0.5), true)
            .unwrap();
        let row = table.push_row(3).unwrap();
        table
            .append_field(column, row, FieldValue::Integer(3), true)
            .unwrap();
        let writes = request.finish().unwrap();
        let values = writes[0].batch.column(1).as_primitive::<Float64Type>();
        assert_eq!(values.values().to_vec(), vec![2.0, 0.5, 3.0]);
    }

    #[test]
    fn test_should_refuse_reserved_empty_and_too_many_columns() {
        let mut request = RequestBuilder::new("db", 0, None).unwrap();
        let table = request.table("cpu").unwrap();
        assert_eq!(
            table.column(None, "time", ColumnKind::Tag),
            Err(BuildError::ReservedName)
        );
        assert_eq!(
            table.column(None, "", ColumnKind::Tag),
            Err(BuildError::EmptyName)
        );
        for i in 0..MAX_COLUMNS_PER_TABLE {
            table
                .column(None, &format!("c{i}"), ColumnKind::Tag)
                .unwrap();
        }
        assert_eq!(
            table.column(None, "one_more", ColumnKind::Tag),
            Err(BuildError::TooManyColumns)
        );
    }

    #[test]
    fn test_should_refuse_too_many_tables_and_bad_names() {
        assert!(RequestBuilder::new("1db", 0, None).is_err());
        let mut request = RequestBuilder::new("db", 0, None).unwrap();
        assert!(matches!(
            request.table("bad name"),
            Err(BuildError::InvalidMeasurement(_))
        ));
        for i in 0..MAX_TABLES_PER_REQUEST {
            request.table(&format!("m{i}")).unwrap();
        }
        assert!(matches!(
            request.table("one_more"),
            Err(BuildError::TooManyTables)
        ));
        // Tables without rows produce no write.
        assert!(request.finish().unwrap().is_empty());
    }

    #[test]
    fn test_should_refuse_requests_sparser_than_the_cell_budget() {
        // One new column per row: the padding grows with rows times columns.
        let mut request = RequestBuilder::new("db", 0, None).unwrap();
        let table = request.table("cpu").unwrap();
        let mut refused = None;
        for row in 0..5_000usize {
            let outcome = table.push_row(row as i64).and_then(|time| {
                let column = table
                    .column(None, &format!("c{row}"), ColumnKind::Tag)
                    .unwrap();
                table.append_tag(column, time, "x")
            });
            if let Err(error) = outcome {
                refused = Some((row, error));
                break;
            }
        }
        let (row, error) = refused.expect("the budget should run out");
        assert!(matches!(error, BuildError::TooSparse { budget } if budget == MIN_CELLS));
        // (1 + 1) + (1 + 2) + ... + (1 + row) cells were built when the budget ran out.
        assert!(row * (row + 1) / 2 <= MIN_CELLS && row < 1_500, "{row}");
    }

    #[test]
    fn test_should_charge_final_padding_and_share_the_budget_across_tables() {
        let mut request = RequestBuilder::new("db", 0, None).unwrap();
        let cpu = request.table("cpu").unwrap();
        let column = cpu.column(None, "a", ColumnKind::Tag).unwrap();
        let row = cpu.push_row(0).unwrap();
        cpu.append_tag(column, row, "x").unwrap();
        // Half a million more rows (a cell each for their times) without a value for `a`: its
        // padding, another half million, is due at finish.
        for time in 0..(MIN_CELLS / 2) as i64 {
            cpu.push_row(time).unwrap();
        }
        let mem = request.table("mem").unwrap();
        let column = mem.column(None, "b", ColumnKind::Tag).unwrap();
        let row = mem.push_row(0).unwrap();
        mem.append_tag(column, row, "y").unwrap();
        let error = request.finish().unwrap_err();
        assert!(error.to_string().starts_with("cpu: too sparse"), "{error}");
        assert_eq!(cell_budget(10), 20 + MIN_CELLS);
    }

    #[test]
    fn test_should_keep_kinds_in_field_metadata() {
        let mut request = RequestBuilder::new("db", 0, None).unwrap();
        let table = request.table("cpu").unwrap();
        let row = table.push_row(5).unwrap();
        let column = table
            .column(None, "n", ColumnKind::Field(FieldType::Integer))
            .unwrap();
        table
            .append_field(column, row, FieldValue::Integer(7), false)
            .unwrap();
        let writes = request.finish().unwrap();
        let schema = writes[0].batch.schema();
        assert_eq!(
            ColumnKind::of_field(schema.field(0)),
            Some(ColumnKind::Time)
        );
        assert!(!schema.field(0).is_nullable());
        assert_eq!(
            ColumnKind::of_field(schema.field(1)),
            Some(ColumnKind::Field(FieldType::Integer))
        );
        assert_eq!(
            writes[0]
                .batch
                .column(1)
                .as_primitive::<Int64Type>()
                .value(0),
            7
        );
        assert_eq!(writes[0].table, TableId::new("db", "cpu"));
    }
}
