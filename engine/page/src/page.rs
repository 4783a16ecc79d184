//! Fixed-size PAX pages.
//!
//! A page is `PAGE_BYTES` of 16-byte-aligned memory laid out as:
//!
//! ```text
//! [occupancy bitmap: one bit per slot]  [column 0: slots × width]  [column 1 …]  [heap →]
//! ```
//!
//! Every region starts 16-byte aligned, so a fixed-width column is directly castable to a
//! typed slice (`&[u32]`, `&[i64]`, `&[U256]`…) for column-at-a-time scans. A variable-length
//! column stores an 8-byte reference per slot: `(offset, len)` into the page heap, or, with the
//! overflow flag set, an index into the page's overflow list (values too big for the heap).
//! The page header (live count, heap cursor…) lives in the `Page` struct, not in the buffer.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::value::{ColumnType, Value, I256, U256};
use crate::PageError;

/// Size of every page's buffer.
pub const PAGE_BYTES: usize = 8192;
/// Upper bound on slots per page (slot numbers are `u16`).
pub const MAX_SLOTS_PER_PAGE: usize = 8192;
/// Variable-length values longer than this go to the page's overflow list, not its heap.
pub const OVERFLOW_THRESHOLD_BYTES: usize = 512;
/// Largest single variable-length value.
pub const MAX_VALUE_BYTES: usize = 16 << 20;
/// Largest row: fixed part plus all variable-length values.
pub const MAX_ROW_BYTES: usize = 32 << 20;
/// Heap bytes budgeted per variable-length column when sizing a page's slot count.
const VAR_BYTES_PER_SLOT_GUESS: usize = 24;
/// A page of a table with variable-length columns keeps at least this much heap.
const MIN_HEAP_BYTES: usize = 256;
const ALIGN: usize = 16;
const OVERFLOW_FLAG: u32 = 1 << 31;

#[cfg(target_endian = "big")]
compile_error!("page column arrays are little-endian and cast in place; big-endian hosts are unsupported");

/// A row's address: page number and slot within the page, packed in a `u64`
/// (page in the high 32 bits, so row ids sort by page then slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowId(u64);

impl RowId {
    pub fn new(page: u32, slot: u16) -> RowId {
        RowId(((page as u64) << 16) | slot as u64)
    }
    pub fn page(self) -> u32 {
        (self.0 >> 16) as u32
    }
    pub fn slot(self) -> u16 {
        self.0 as u16
    }
    /// The packed form, as stored in indexes.
    pub fn to_u64(self) -> u64 {
        self.0
    }
    /// Inverse of [`RowId::to_u64`]. Row ids only ever use the low 48 bits.
    pub fn from_u64(raw: u64) -> RowId {
        debug_assert!(raw >> 48 == 0, "row id {raw:#x} uses more than 48 bits");
        RowId(raw)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C, align(16))]
struct Chunk([u8; ALIGN]);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ColumnSlot {
    ty: ColumnType,
    offset: usize,
    width: usize,
}

/// Where each column of a table lives inside a page. One per table, shared by its pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageLayout {
    columns: Box<[ColumnSlot]>,
    slots: usize,
    bitmap_words: usize,
    heap_start: usize,
    fixed_row_bytes: usize,
    has_var_len: bool,
}

impl PageLayout {
    /// Computes the layout for a table with these column types.
    ///
    /// Slots per page are chosen so the fixed-width arrays plus an estimated heap share
    /// fill the page; fails if even one row's fixed part cannot fit.
    pub fn new(types: &[ColumnType]) -> Result<PageLayout, PageError> {
        let fixed_row_bytes: usize = types.iter().map(|t| t.fixed_width()).sum();
        let var_cols = types.iter().filter(|t| t.is_var_len()).count();
        let has_var_len = var_cols > 0;
        let min_heap = if has_var_len { MIN_HEAP_BYTES } else { 0 };
        let slot_bits = (fixed_row_bytes + var_cols * VAR_BYTES_PER_SLOT_GUESS) * 8 + 1;
        let mut slots = (PAGE_BYTES.saturating_sub(min_heap) * 8 / slot_bits).min(MAX_SLOTS_PER_PAGE);
        loop {
            if slots == 0 {
                return Err(PageError::FixedRowTooWide {
                    bytes: fixed_row_bytes,
                    // One slot: the bitmap word and each column array round up to 16 bytes.
                    max: PAGE_BYTES.saturating_sub(min_heap + ALIGN * (types.len() + 1)),
                });
            }
            let layout = Self::place(types, slots, fixed_row_bytes, has_var_len);
            if layout.heap_start + min_heap <= PAGE_BYTES {
                return Ok(layout);
            }
            slots -= 1;
        }
    }

    fn place(types: &[ColumnType], slots: usize, fixed_row_bytes: usize, has_var_len: bool) -> PageLayout {
        let bitmap_words = slots.div_ceil(64);
        let mut offset = align_up(bitmap_words * 8);
        let columns = types
            .iter()
            .map(|&ty| {
                let width = ty.fixed_width();
                let slot = ColumnSlot { ty, offset, width };
                offset = align_up(offset + width * slots);
                slot
            })
            .collect();
        PageLayout { columns, slots, bitmap_words, heap_start: offset, fixed_row_bytes, has_var_len }
    }

    pub fn column_count(&self) -> usize {
        self.columns.len()
    }
    /// The type of column `col`, if there is one.
    pub fn column_type(&self, col: usize) -> Option<ColumnType> {
        self.columns.get(col).map(|c| c.ty)
    }
    pub fn slots_per_page(&self) -> usize {
        self.slots
    }
    /// Bytes of heap in an empty page (0 for tables without variable-length columns).
    pub fn heap_bytes(&self) -> usize {
        if self.has_var_len {
            PAGE_BYTES - self.heap_start
        } else {
            0
        }
    }
    pub fn fixed_row_bytes(&self) -> usize {
        self.fixed_row_bytes
    }

    /// Checks a row's arity, value types and size against this layout.
    /// Returns the row's total size in bytes (fixed part + variable-length values).
    pub fn check_row(&self, row: &[Value]) -> Result<usize, PageError> {
        if row.len() != self.columns.len() {
            return Err(PageError::WrongArity { expected: self.columns.len(), got: row.len() });
        }
        let mut bytes = self.fixed_row_bytes;
        for (col, (value, slot)) in row.iter().zip(self.columns.iter()).enumerate() {
            let got = value.column_type();
            if got != slot.ty {
                return Err(PageError::TypeMismatch { column: col, expected: slot.ty, got });
            }
            if let Some(b) = value.var_bytes() {
                if b.len() > MAX_VALUE_BYTES {
                    return Err(PageError::ValueTooLarge {
                        column: col,
                        bytes: b.len(),
                        max: MAX_VALUE_BYTES,
                    });
                }
                bytes += b.len();
            }
        }
        if bytes > MAX_ROW_BYTES {
            return Err(PageError::RowTooLarge { bytes, max: MAX_ROW_BYTES });
        }
        Ok(bytes)
    }

    /// Which of a row's variable-length values are stored inline (in the heap) and the heap
    /// bytes they need. Big values always overflow; if the rest still would not fit an empty
    /// page's heap, everything overflows — so any valid row fits into an empty page.
    fn inline_plan(&self, row: &[Value]) -> (bool, usize) {
        if !self.has_var_len {
            return (true, 0);
        }
        let inline: usize = row
            .iter()
            .filter_map(|v| v.var_bytes())
            .filter(|b| b.len() <= OVERFLOW_THRESHOLD_BYTES)
            .map(|b| b.len())
            .sum();
        if inline <= self.heap_bytes() {
            (true, inline)
        } else {
            (false, 0)
        }
    }
}

fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// A reference from a variable-length column slot to its bytes.
#[derive(Debug, Clone, Copy)]
struct VarRef {
    offset: u32,
    len_and_flag: u32,
}

impl VarRef {
    fn decode(b: &[u8]) -> VarRef {
        VarRef {
            offset: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            len_and_flag: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
    fn encode(self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&self.offset.to_le_bytes());
        out[4..].copy_from_slice(&self.len_and_flag.to_le_bytes());
        out
    }
    fn is_overflow(self) -> bool {
        self.len_and_flag & OVERFLOW_FLAG != 0
    }
    fn len(self) -> usize {
        (self.len_and_flag & !OVERFLOW_FLAG) as usize
    }
}

/// One fixed-size page of a table. Cloning copies the buffer (copy-on-write happens one level
/// up, where pages sit behind `Arc`); overflow values are shared, not copied.
#[derive(Clone)]
pub struct Page {
    buf: Box<[Chunk]>,
    live: usize,
    /// No slot below this is free.
    free_hint: usize,
    /// Heap bytes handed out so far (from the start of the heap region).
    heap_top: usize,
    /// Heap bytes below `heap_top` that belong to deleted values.
    heap_garbage: usize,
    overflow: Vec<Option<Arc<[u8]>>>,
    overflow_free: Vec<u32>,
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page")
            .field("live", &self.live)
            .field("heap_top", &self.heap_top)
            .field("heap_garbage", &self.heap_garbage)
            .field("overflow", &self.overflow.len())
            .finish()
    }
}

impl Page {
    pub fn new() -> Page {
        Page {
            buf: vec![Chunk::zeroed(); PAGE_BYTES / ALIGN].into_boxed_slice(),
            live: 0,
            free_hint: 0,
            heap_top: 0,
            heap_garbage: 0,
            overflow: Vec::new(),
            overflow_free: Vec::new(),
        }
    }

    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.buf)
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.buf)
    }

    /// Rows stored in this page.
    pub fn live_rows(&self) -> usize {
        self.live
    }

    pub fn has_free_slot(&self, layout: &PageLayout) -> bool {
        self.live < layout.slots
    }

    /// The occupancy bitmap: bit `s % 64` of word `s / 64` is set when slot `s` holds a row.
    pub fn occupancy(&self, layout: &PageLayout) -> &[u64] {
        bytemuck::cast_slice(&self.bytes()[..layout.bitmap_words * 8])
    }

    fn occupancy_mut(&mut self, layout: &PageLayout) -> &mut [u64] {
        let words = layout.bitmap_words;
        bytemuck::cast_slice_mut(&mut self.bytes_mut()[..words * 8])
    }

    pub fn is_occupied(&self, layout: &PageLayout, slot: u16) -> bool {
        let slot = slot as usize;
        slot < layout.slots && self.occupancy(layout)[slot / 64] & (1 << (slot % 64)) != 0
    }

    /// Occupied slots in ascending order.
    pub fn occupied_slots<'a>(&'a self, layout: &PageLayout) -> impl Iterator<Item = u16> + 'a {
        self.occupancy(layout).iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some((w * 64 + bit) as u16)
            })
        })
    }

    /// Whether `row` would fit in this page now (a free slot and enough heap, after compaction).
    pub fn can_fit(&self, layout: &PageLayout, row: &[Value]) -> bool {
        if !self.has_free_slot(layout) {
            return false;
        }
        let (_, need) = layout.inline_plan(row);
        need <= layout.heap_bytes() - self.heap_top + self.heap_garbage
    }

    /// Stores `row` in a free slot. Refuses a row that fails [`PageLayout::check_row`] with its
    /// error, and returns `PageError::PageFull` if there is no free slot or heap room; either
    /// way nothing changes.
    pub fn insert(&mut self, layout: &PageLayout, row: &[Value]) -> Result<u16, PageError> {
        layout.check_row(row)?;
        if !self.can_fit(layout, row) {
            return Err(PageError::PageFull);
        }
        let slot = self.find_free_slot(layout);
        self.store_at(layout, slot, row);
        // `slot` was the first free one, so every slot up to it is now taken.
        self.free_hint = slot + 1;
        Ok(slot as u16)
    }

    /// Stores `row` in the given free slot (used to undo a delete at the same row id).
    /// Returns `PageError::PageFull` (and changes nothing) if the slot is taken or out of
    /// range, or the heap has no room.
    pub fn insert_at(&mut self, layout: &PageLayout, slot: u16, row: &[Value]) -> Result<(), PageError> {
        layout.check_row(row)?;
        if slot as usize >= layout.slots || self.is_occupied(layout, slot) || !self.can_fit(layout, row) {
            return Err(PageError::PageFull);
        }
        self.store_at(layout, slot as usize, row);
        Ok(())
    }

    fn store_at(&mut self, layout: &PageLayout, slot: usize, row: &[Value]) {
        let (inline_ok, need) = layout.inline_plan(row);
        if need > layout.heap_bytes() - self.heap_top {
            self.compact_heap(layout);
        }
        for (col, value) in row.iter().enumerate() {
            self.write_value(layout, slot, col, value, inline_ok);
        }
        self.occupancy_mut(layout)[slot / 64] |= 1 << (slot % 64);
        self.live += 1;
        // No slot below the hint is free; filling the hint's own slot moves it up by one.
        if slot == self.free_hint {
            self.free_hint = slot + 1;
        }
        debug_assert!(self.heap_top <= layout.heap_bytes());
    }

    fn find_free_slot(&self, layout: &PageLayout) -> usize {
        let words = self.occupancy(layout);
        let mut w = self.free_hint / 64;
        // Invariant: the caller checked `has_free_slot`, and no slot below `free_hint` is
        // free, so a zero bit exists at or after the hint's word.
        loop {
            let word = words[w];
            if word != u64::MAX {
                let slot = w * 64 + (!word).trailing_zeros() as usize;
                debug_assert!(slot < layout.slots, "free bit past the last slot");
                return slot;
            }
            w += 1;
        }
    }

    fn write_value(&mut self, layout: &PageLayout, slot: usize, col: usize, value: &Value, inline_ok: bool) {
        let c = layout.columns[col];
        let at = c.offset + slot * c.width;
        if let Some(b) = value.var_bytes() {
            let r = if inline_ok && b.len() <= OVERFLOW_THRESHOLD_BYTES {
                let start = layout.heap_start + self.heap_top;
                self.bytes_mut()[start..start + b.len()].copy_from_slice(b);
                let r = VarRef { offset: self.heap_top as u32, len_and_flag: b.len() as u32 };
                self.heap_top += b.len();
                r
            } else {
                let blob: Arc<[u8]> = Arc::from(b);
                let index = match self.overflow_free.pop() {
                    Some(i) => {
                        self.overflow[i as usize] = Some(blob);
                        i
                    }
                    None => {
                        self.overflow.push(Some(blob));
                        (self.overflow.len() - 1) as u32
                    }
                };
                VarRef { offset: index, len_and_flag: b.len() as u32 | OVERFLOW_FLAG }
            };
            self.bytes_mut()[at..at + 8].copy_from_slice(&r.encode());
            return;
        }
        let dst = &mut self.bytes_mut()[at..at + c.width];
        match value {
            Value::Bool(v) => dst[0] = *v as u8,
            Value::U8(v) => dst.copy_from_slice(&v.to_le_bytes()),
            Value::U16(v) => dst.copy_from_slice(&v.to_le_bytes()),
            Value::U32(v) => dst.copy_from_slice(&v.to_le_bytes()),
            Value::U64(v) => dst.copy_from_slice(&v.to_le_bytes()),
            Value::U128(v) => dst.copy_from_slice(&v.to_le_bytes()),
            Value::U256(v) => dst.copy_from_slice(&v.to_le_bytes()),
            Value::I8(v) => dst.copy_from_slice(&v.to_le_bytes()),
            Value::I16(v) => dst.copy_from_slice(&v.to_le_bytes()),
            Value::I32(v) => dst.copy_from_slice(&v.to_le_bytes()),
            Value::I64(v) => dst.copy_from_slice(&v.to_le_bytes()),
            Value::I128(v) => dst.copy_from_slice(&v.to_le_bytes()),
            Value::I256(v) => dst.copy_from_slice(&v.to_le_bytes()),
            Value::F32(v) => dst.copy_from_slice(&v.to_le_bytes()),
            Value::F64(v) => dst.copy_from_slice(&v.to_le_bytes()),
            Value::String(_) | Value::Bytes(_) | Value::Bsatn(_) => {
                unreachable!("variable-length values were handled above")
            }
        }
    }

    /// Frees `slot`. Returns false (and changes nothing) if it held no row.
    pub fn delete(&mut self, layout: &PageLayout, slot: u16) -> bool {
        if !self.is_occupied(layout, slot) {
            return false;
        }
        let s = slot as usize;
        for col in 0..layout.columns.len() {
            if let Some(r) = self.var_ref(layout, s, col) {
                if r.is_overflow() {
                    self.overflow[r.offset as usize] = None;
                    self.overflow_free.push(r.offset);
                } else {
                    self.heap_garbage += r.len();
                }
            }
        }
        self.occupancy_mut(layout)[s / 64] &= !(1 << (s % 64));
        self.live -= 1;
        self.free_hint = self.free_hint.min(s);
        if self.live == 0 {
            // An empty page starts its heap afresh.
            self.heap_top = 0;
            self.heap_garbage = 0;
            self.overflow.clear();
            self.overflow_free.clear();
        }
        true
    }

    fn var_ref(&self, layout: &PageLayout, slot: usize, col: usize) -> Option<VarRef> {
        let c = layout.columns[col];
        if !c.ty.is_var_len() {
            return None;
        }
        let at = c.offset + slot * c.width;
        Some(VarRef::decode(&self.bytes()[at..at + 8]))
    }

    /// Rewrites live heap values contiguously; slots and row ids do not move.
    fn compact_heap(&mut self, layout: &PageLayout) {
        let mut fresh: Vec<u8> = Vec::with_capacity(self.heap_top - self.heap_garbage);
        let var_cols: Vec<usize> =
            (0..layout.columns.len()).filter(|&c| layout.columns[c].ty.is_var_len()).collect();
        let slots: Vec<u16> = self.occupied_slots(layout).collect();
        for slot in slots {
            for &col in &var_cols {
                let Some(r) = self.var_ref(layout, slot as usize, col) else { continue };
                if r.is_overflow() {
                    continue;
                }
                let start = layout.heap_start + r.offset as usize;
                let new_offset = fresh.len() as u32;
                fresh.extend_from_slice(&self.bytes()[start..start + r.len()]);
                let at = layout.columns[col].offset + slot as usize * 8;
                let moved = VarRef { offset: new_offset, len_and_flag: r.len_and_flag };
                self.bytes_mut()[at..at + 8].copy_from_slice(&moved.encode());
            }
        }
        let heap_start = layout.heap_start;
        self.bytes_mut()[heap_start..heap_start + fresh.len()].copy_from_slice(&fresh);
        debug_assert_eq!(fresh.len(), self.heap_top - self.heap_garbage, "heap accounting drifted");
        self.heap_top = fresh.len();
        self.heap_garbage = 0;
    }

    /// The bytes of a variable-length value, without copying. `None` for fixed-width or
    /// missing columns and empty slots.
    pub fn var_bytes(&self, layout: &PageLayout, slot: u16, col: usize) -> Option<&[u8]> {
        if !self.is_occupied(layout, slot) || col >= layout.columns.len() {
            return None;
        }
        let r = self.var_ref(layout, slot as usize, col)?;
        if r.is_overflow() {
            // Invariant: an occupied slot's overflow reference points at a live blob.
            self.overflow[r.offset as usize].as_deref()
        } else {
            let start = layout.heap_start + r.offset as usize;
            Some(&self.bytes()[start..start + r.len()])
        }
    }

    /// The raw column array bytes (`slots × width`); `None` for a missing column.
    pub fn column_bytes(&self, layout: &PageLayout, col: usize) -> Option<&[u8]> {
        let c = layout.columns.get(col)?;
        Some(&self.bytes()[c.offset..c.offset + c.width * layout.slots])
    }

    /// A fixed-width column as a typed slice of `slots_per_page` elements (unoccupied slots
    /// hold stale or zero values: mask with [`Page::occupancy`]).
    pub fn column<T: Pod>(&self, layout: &PageLayout, col: usize) -> Result<&[T], PageError> {
        let Some(&c) = layout.columns.get(col) else {
            return Err(PageError::NoSuchColumn { column: col, columns: layout.columns.len() });
        };
        if c.ty.is_var_len() || std::mem::size_of::<T>() != c.width {
            return Err(PageError::ColumnWidthMismatch {
                column: col,
                ty: c.ty,
                requested_bytes: std::mem::size_of::<T>(),
            });
        }
        // Column arrays start 16-byte aligned in a 16-byte-aligned buffer, so the cast can
        // only fail for a `T` aligned to more than 16 bytes.
        bytemuck::try_cast_slice(&self.bytes()[c.offset..c.offset + c.width * layout.slots]).map_err(|_| {
            PageError::ColumnWidthMismatch {
                column: col,
                ty: c.ty,
                requested_bytes: std::mem::size_of::<T>(),
            }
        })
    }

    /// Reads one value; `None` for an empty slot or a missing column.
    pub fn read_value(&self, layout: &PageLayout, slot: u16, col: usize) -> Option<Value> {
        if !self.is_occupied(layout, slot) || col >= layout.columns.len() {
            return None;
        }
        Some(self.read_occupied(layout, slot, col))
    }

    /// Reads a value of an occupied slot and an existing column (checked by the callers).
    fn read_occupied(&self, layout: &PageLayout, slot: u16, col: usize) -> Value {
        let c = layout.columns[col];
        if c.ty.is_var_len() {
            // Invariant: var-len columns always have bytes (see `var_bytes`).
            let b = self.var_bytes(layout, slot, col).unwrap_or_default();
            return match c.ty {
                ColumnType::String => Value::String(String::from_utf8_lossy(b).into()),
                ColumnType::Bytes => Value::Bytes(b.into()),
                _ => Value::Bsatn(b.into()),
            };
        }
        let at = c.offset + slot as usize * c.width;
        let src = &self.bytes()[at..at + c.width];
        fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
            let mut a = [0u8; N];
            a.copy_from_slice(s);
            a
        }
        match c.ty {
            ColumnType::Bool => Value::Bool(src[0] != 0),
            ColumnType::U8 => Value::U8(src[0]),
            ColumnType::U16 => Value::U16(u16::from_le_bytes(arr(src))),
            ColumnType::U32 => Value::U32(u32::from_le_bytes(arr(src))),
            ColumnType::U64 => Value::U64(u64::from_le_bytes(arr(src))),
            ColumnType::U128 => Value::U128(u128::from_le_bytes(arr(src))),
            ColumnType::U256 => Value::U256(U256::from_le_bytes(arr(src))),
            ColumnType::I8 => Value::I8(src[0] as i8),
            ColumnType::I16 => Value::I16(i16::from_le_bytes(arr(src))),
            ColumnType::I32 => Value::I32(i32::from_le_bytes(arr(src))),
            ColumnType::I64 => Value::I64(i64::from_le_bytes(arr(src))),
            ColumnType::I128 => Value::I128(i128::from_le_bytes(arr(src))),
            ColumnType::I256 => Value::I256(I256::from_le_bytes(arr(src))),
            ColumnType::F32 => Value::F32(f32::from_le_bytes(arr(src))),
            ColumnType::F64 => Value::F64(f64::from_le_bytes(arr(src))),
            ColumnType::String | ColumnType::Bytes | ColumnType::Bsatn => unreachable!("handled above"),
        }
    }

    /// Reads a whole row; `None` for an empty slot.
    pub fn read_row(&self, layout: &PageLayout, slot: u16) -> Option<Vec<Value>> {
        if !self.is_occupied(layout, slot) {
            return None;
        }
        Some((0..layout.columns.len()).map(|col| self.read_occupied(layout, slot, col)).collect())
    }

    /// Heap bytes this page holds (its buffer plus overflow values).
    pub fn memory_bytes(&self) -> usize {
        PAGE_BYTES
            + self.overflow.capacity() * std::mem::size_of::<Option<Arc<[u8]>>>()
            + self.overflow.iter().flatten().map(|b| b.len() + 16).sum::<usize>()
            + self.overflow_free.capacity() * 4
    }
}

impl Default for Page {
    fn default() -> Self {
        Page::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn every_type_row(i: u64) -> Vec<Value> {
        vec![
            Value::Bool(i.is_multiple_of(2)),
            Value::U8(i as u8),
            Value::U16(i as u16),
            Value::U32(i as u32),
            Value::U64(i),
            Value::U128(i as u128 * 3),
            Value::U256(U256 { lo: i as u128, hi: 9 }),
            Value::I8(-(i as i8)),
            Value::I16(-(i as i16)),
            Value::I32(-(i as i32)),
            Value::I64(-(i as i64)),
            Value::I128(-(i as i128)),
            Value::I256(I256::from_i128(-(i as i128))),
            Value::F32(i as f32 / 2.0),
            Value::F64(i as f64 / 4.0),
            Value::String(format!("row {i}").into()),
            Value::Bytes(vec![i as u8; (i % 7) as usize].into()),
            Value::Bsatn(vec![1, 2, i as u8].into()),
        ]
    }

    // Proves every column type round-trips through a page and fixed columns read as typed slices.
    #[test]
    fn every_type_round_trips() {
        let layout = PageLayout::new(&ColumnType::ALL).unwrap();
        let mut page = Page::new();
        let mut slots = Vec::new();
        for i in 0..layout.slots_per_page() as u64 {
            let row = every_type_row(i);
            layout.check_row(&row).unwrap();
            slots.push((page.insert(&layout, &row).unwrap(), row));
        }
        for (slot, row) in &slots {
            assert_eq!(page.read_row(&layout, *slot), Some(row.clone()));
        }
        let u64s = page.column::<u64>(&layout, 4).unwrap();
        assert_eq!(u64s[slots[3].0 as usize], 3);
        let wide = page.column::<U256>(&layout, 6).unwrap();
        assert_eq!(wide[slots[5].0 as usize], U256 { lo: 5, hi: 9 });
        assert!(matches!(page.column::<u32>(&layout, 4), Err(PageError::ColumnWidthMismatch { .. })));
        assert!(matches!(page.column::<u64>(&layout, 15), Err(PageError::ColumnWidthMismatch { .. })));
    }

    // Proves bad rows are refused with the right typed error.
    #[test]
    fn check_row_reports_arity_type_and_size() {
        let layout = PageLayout::new(&[ColumnType::U32, ColumnType::Bytes]).unwrap();
        assert_eq!(layout.check_row(&[Value::U32(1)]), Err(PageError::WrongArity { expected: 2, got: 1 }));
        assert_eq!(
            layout.check_row(&[Value::I32(1), Value::Bytes(Box::new([]))]),
            Err(PageError::TypeMismatch { column: 0, expected: ColumnType::U32, got: ColumnType::I32 })
        );
        let huge = vec![0u8; MAX_VALUE_BYTES + 1];
        assert!(matches!(
            layout.check_row(&[Value::U32(1), Value::Bytes(huge.into())]),
            Err(PageError::ValueTooLarge { column: 1, .. })
        ));
        // The page itself refuses unchecked rows, and reads outside what exists give None.
        let mut page = Page::new();
        assert!(matches!(
            page.insert(&layout, &[Value::U8(1), Value::Bytes(Box::new([]))]),
            Err(PageError::TypeMismatch { .. })
        ));
        assert_eq!(page.live_rows(), 0);
        let slot = page.insert(&layout, &[Value::U32(1), Value::Bytes(Box::new([9]))]).unwrap();
        assert_eq!(page.read_value(&layout, slot, 2), None);
        assert_eq!(page.read_value(&layout, slot + 1, 0), None);
        assert_eq!(page.read_row(&layout, u16::MAX), None);
        assert_eq!(page.var_bytes(&layout, slot, 1), Some(&[9u8][..]));
        assert_eq!(page.var_bytes(&layout, slot, 0), None);
        assert!(matches!(
            page.column::<u32>(&layout, 5),
            Err(PageError::NoSuchColumn { column: 5, columns: 2 })
        ));
        assert_eq!(layout.column_type(2), None);
        let too_wide = vec![ColumnType::U256; PAGE_BYTES / 32];
        assert!(matches!(PageLayout::new(&too_wide), Err(PageError::FixedRowTooWide { .. })));
    }

    // Proves a page reports full instead of overwriting, and a freed slot is reused.
    #[test]
    fn full_page_refuses_then_reuses_freed_slot() {
        let layout = PageLayout::new(&[ColumnType::U32, ColumnType::I32]).unwrap();
        assert!(layout.slots_per_page() > 900, "{{u32,i32}} pages should hold ~1000 rows");
        let mut page = Page::new();
        for i in 0..layout.slots_per_page() {
            page.insert(&layout, &[Value::U32(i as u32), Value::I32(0)]).unwrap();
        }
        assert_eq!(page.insert(&layout, &[Value::U32(0), Value::I32(0)]), Err(PageError::PageFull));
        assert!(page.delete(&layout, 17));
        assert!(!page.delete(&layout, 17));
        assert_eq!(page.insert(&layout, &[Value::U32(99), Value::I32(-1)]), Ok(17));
        assert_eq!(page.read_row(&layout, 17), Some(vec![Value::U32(99), Value::I32(-1)]));
        assert!(page.delete(&layout, 3));
        let row = [Value::U32(3), Value::I32(3)];
        assert_eq!(page.insert_at(&layout, u16::MAX, &row), Err(PageError::PageFull), "slot out of range");
        assert_eq!(page.insert_at(&layout, 4, &row), Err(PageError::PageFull), "slot taken");
        assert_eq!(page.insert_at(&layout, 3, &row), Ok(()));
        assert_eq!(page.read_row(&layout, 3), Some(row.to_vec()));
    }

    // Proves a row bigger than the heap still fits an empty page (via overflow).
    #[test]
    fn oversized_values_overflow() {
        let layout = PageLayout::new(&[ColumnType::String, ColumnType::Bytes]).unwrap();
        let mut page = Page::new();
        let big = "x".repeat(100_000);
        let row = vec![Value::String(big.clone().into()), Value::Bytes(vec![7; 400].into())];
        let slot = page.insert(&layout, &row).unwrap();
        assert_eq!(page.read_row(&layout, slot), Some(row));
        // Many mid-sized values in one row: together larger than the heap.
        let wide = PageLayout::new(&[ColumnType::Bytes; 40]).unwrap();
        let row: Vec<Value> = (0..40).map(|i| Value::Bytes(vec![i as u8; 500].into())).collect();
        let mut page = Page::new();
        let slot = page.insert(&wide, &row).unwrap();
        assert_eq!(page.read_row(&wide, slot), Some(row));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, String),
        Delete(usize),
        /// Delete a live row and put it straight back at its slot (what undo does).
        DeleteAndRestore(usize),
        /// `insert_at` an occupied slot must be refused.
        InsertAtOccupied(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (any::<u32>(), prop_oneof![".{0,40}", ".{500,700}"]).prop_map(|(k, s)| Op::Insert(k, s)),
            2 => any::<usize>().prop_map(Op::Delete),
            1 => any::<usize>().prop_map(Op::DeleteAndRestore),
            1 => any::<usize>().prop_map(Op::InsertAtOccupied),
        ]
    }

    proptest! {
        // Proves inserts, deletes, heap compaction and overflow keep every live row intact,
        // compared against a map from slot to row.
        #[test]
        fn page_matches_model(ops in proptest::collection::vec(op(), 1..400)) {
            let layout = PageLayout::new(&[ColumnType::U32, ColumnType::String, ColumnType::I64]).unwrap();
            let mut page = Page::new();
            let mut model: BTreeMap<u16, Vec<Value>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, s) => {
                        let row = vec![Value::U32(k), Value::String(s.into()), Value::I64(k as i64 * -3)];
                        match page.insert(&layout, &row) {
                            Ok(slot) => {
                                prop_assert!(model.insert(slot, row).is_none(), "slot {} reused while live", slot);
                            }
                            Err(PageError::PageFull) => prop_assert!(!page.can_fit(&layout, &row)),
                            Err(e) => prop_assert!(false, "unexpected {e}"),
                        }
                    }
                    Op::Delete(i) => {
                        if model.is_empty() { continue; }
                        let slot = *model.keys().nth(i % model.len()).unwrap();
                        prop_assert!(page.delete(&layout, slot));
                        model.remove(&slot);
                    }
                    Op::DeleteAndRestore(i) => {
                        if model.is_empty() { continue; }
                        let slot = *model.keys().nth(i % model.len()).unwrap();
                        prop_assert!(page.delete(&layout, slot));
                        prop_assert_eq!(page.insert_at(&layout, slot, &model[&slot]), Ok(()));
                    }
                    Op::InsertAtOccupied(i) => {
                        if model.is_empty() { continue; }
                        let slot = *model.keys().nth(i % model.len()).unwrap();
                        prop_assert_eq!(page.insert_at(&layout, slot, &model[&slot]), Err(PageError::PageFull));
                    }
                }
                prop_assert_eq!(page.live_rows(), model.len());
            }
            let slots: Vec<u16> = page.occupied_slots(&layout).collect();
            prop_assert_eq!(slots, model.keys().copied().collect::<Vec<_>>());
            for (slot, row) in &model {
                prop_assert_eq!(page.read_row(&layout, *slot), Some(row.clone()));
            }
        }
    }
}
