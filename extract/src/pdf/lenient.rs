//! hayro's last reading of `/FlateDecode` data, counted in constant memory.
//!
//! hayro inflates a stream with zlib, then as raw deflate, and when both
//! fail, with a lenient decoder ported from pdf.js (`FlateStream`): it
//! ignores what the strict readings refuse (a stored block's NLEN, a
//! distance reaching before the data, incomplete code tables, data cut
//! short) and keeps whatever it made. A stream both strict readings reject
//! (`78 01 00 00 00 00` and then a raw deflate bomb) still expands without
//! bound through it, so the bomb check reads such streams this way too.
//!
//! [`Lenient`] is that decoder, step for step, fed in chunks and keeping
//! the 32 KiB a back-reference can reach instead of its whole output.

/// The farthest a deflate back-reference reaches.
const WINDOW: usize = 32 * 1024;

/// Input held before an item is decoded, unless no more is coming: more
/// than any one item takes (a block header with its code tables takes at
/// most about 300 bytes, a literal or a length and distance 6), so an item
/// never runs out of data that is still to come.
const MARGIN: usize = 1024;

/// Input held between calls.
const HELD: usize = 4 * MARGIN;

/// A Huffman table as pdf.js builds it: indexed by the next `max_len` bits
/// (least significant first), each entry the code's length << 16 | value,
/// a length of 0 where no code matches.
struct Table {
    codes: Vec<u32>,
    max_len: u8,
}

enum Block {
    /// Between blocks: the next thing read is a block header.
    Header,
    /// A stored block with `left` bytes still to copy.
    Stored { left: usize },
    /// A compressed block's codes.
    Codes { lit: Table, dist: Table },
}

/// The lenient deflate decoder, fed in chunks.
pub(super) struct Lenient {
    input: Input,
    state: State,
    /// The last [`WINDOW`] bytes made, by position modulo WINDOW.
    window: Vec<u8>,
    made: u64,
    /// Made and not yet handed out (an item did not fit the caller's buffer).
    spill: Vec<u8>,
}

/// Where pdf.js's decoder is between items.
struct State {
    /// Whether the first two bytes were checked for a zlib header.
    started: bool,
    block: Block,
    final_block: bool,
    eof: bool,
}

impl Lenient {
    pub(super) fn new() -> Lenient {
        Lenient {
            input: Input {
                data: Vec::with_capacity(HELD),
                pos: 0,
                code_buf: 0,
                code_size: 0,
            },
            state: State {
                started: false,
                block: Block::Header,
                final_block: false,
                eof: false,
            },
            window: vec![0; WINDOW],
            made: 0,
            spill: Vec::new(),
        }
    }

    /// Decodes from `input` into `out`, `last` when no input comes after
    /// `input`: (bytes of input taken, bytes made, whether the data ended).
    pub(super) fn decode(
        &mut self,
        input: &[u8],
        last: bool,
        out: &mut [u8],
    ) -> (usize, usize, bool) {
        let mut written = self.spill.len().min(out.len());
        out[..written].copy_from_slice(&self.spill[..written]);
        self.spill.drain(..written);
        let mut used = 0;
        while written < out.len() && !self.state.eof {
            // Take what fits of the input.
            let held = &mut self.input.data;
            held.drain(..self.input.pos);
            self.input.pos = 0;
            let take = (input.len() - used).min(HELD - held.len());
            held.extend_from_slice(&input[used..used + take]);
            used += take;
            let last = last && used == input.len();
            let mut sink = Sink {
                out: &mut out[written..],
                written: 0,
                spill: &mut self.spill,
                window: &mut self.window,
                made: &mut self.made,
            };
            let mut waiting = false;
            while sink.written < sink.out.len() && !self.state.eof {
                if !self.state.step(&mut self.input, last, &mut sink) {
                    waiting = true;
                    break;
                }
            }
            written += sink.written;
            if waiting && used == input.len() {
                break;
            }
        }
        (used, written, self.state.eof && self.spill.is_empty())
    }
}

/// Where one item's output goes: the caller's buffer, then `spill`; and
/// always the window.
struct Sink<'a> {
    out: &'a mut [u8],
    written: usize,
    spill: &'a mut Vec<u8>,
    window: &'a mut [u8],
    made: &'a mut u64,
}

impl Sink<'_> {
    fn push(&mut self, byte: u8) {
        self.window[(*self.made % WINDOW as u64) as usize] = byte;
        *self.made += 1;
        if self.written < self.out.len() {
            self.out[self.written] = byte;
            self.written += 1;
        } else {
            self.spill.push(byte);
        }
    }

    /// pdf.js copies `length` bytes from `distance` back only when the
    /// output reaches that far, and nothing otherwise.
    fn copy(&mut self, distance: usize, length: usize) {
        if distance as u64 > *self.made {
            return;
        }
        for _ in 0..length {
            let from = (*self.made - distance as u64) % WINDOW as u64;
            self.push(self.window[from as usize]);
        }
    }
}

/// The input held and pdf.js's bit reader over it.
struct Input {
    /// Input taken and not yet read, from `pos`.
    data: Vec<u8>,
    pos: usize,
    code_buf: u32,
    code_size: u8,
}

impl Input {
    fn left(&self) -> usize {
        self.data.len() - self.pos
    }

    fn byte(&mut self) -> Option<u8> {
        let byte = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(byte)
    }

    fn bits(&mut self, n: u8) -> Option<u32> {
        while self.code_size < n {
            let b = self.byte()?;
            self.code_buf |= (b as u32) << self.code_size;
            self.code_size += 8;
        }
        let result = self.code_buf & ((1 << n) - 1);
        self.code_buf >>= n;
        self.code_size -= n;
        Some(result)
    }

    fn code(&mut self, table: &Table) -> Option<u16> {
        while self.code_size < table.max_len {
            // Premature end of data: decode from the bits there are.
            let Some(b) = self.byte() else { break };
            self.code_buf |= (b as u32) << self.code_size;
            self.code_size += 8;
        }
        let code = *table
            .codes
            .get((self.code_buf & ((1 << table.max_len) - 1)) as usize)?;
        let len = (code >> 16) as u8;
        if len < 1 || self.code_size < len {
            return None;
        }
        self.code_buf >>= len;
        self.code_size -= len;
        Some((code & 0xffff) as u16)
    }

    /// The extra bits a length or distance entry (`bits << 16 | base`) asks for.
    fn extra(&mut self, info: u32) -> Option<usize> {
        match (info >> 16) as u8 {
            0 => Some(0),
            n => self.bits(n).map(|v| v as usize),
        }
    }
}

impl State {
    /// Decodes one item (a block header, a piece of a stored block, or one
    /// code of a compressed block) as pdf.js would; false when it must
    /// wait for more input.
    fn step(&mut self, input: &mut Input, last: bool, sink: &mut Sink<'_>) -> bool {
        if !last && input.left() < MARGIN {
            return false;
        }
        if !self.started {
            self.started = true;
            // A valid zlib header without a preset dictionary is skipped.
            if let [cmf, flg, ..] = input.data[input.pos..] {
                let check = (u16::from(cmf) << 8 | u16::from(flg)) % 31;
                if cmf & 0x0f == 0x08 && check == 0 && flg & 0x20 == 0 {
                    input.pos += 2;
                }
            }
        }
        // Any failure ends the data, keeping what was made.
        if self.item(input, sink).is_none() {
            self.eof = true;
        }
        true
    }

    fn item(&mut self, input: &mut Input, sink: &mut Sink<'_>) -> Option<()> {
        match &mut self.block {
            Block::Header => {
                // pdf.js stops at the end of the data, whatever bits are left.
                if input.left() == 0 {
                    return None;
                }
                let header = input.bits(3)?;
                self.final_block = header & 1 != 0;
                match header >> 1 {
                    0 => {
                        input.code_buf = 0;
                        input.code_size = 0;
                        let mut len = [0u8; 4];
                        for b in &mut len {
                            *b = input.byte()?;
                        }
                        // NLEN (len[2..]) is not checked.
                        let left = usize::from(u16::from_le_bytes([len[0], len[1]]));
                        if left == 0 {
                            self.end_block();
                        } else {
                            self.block = Block::Stored { left };
                        }
                    }
                    1 => {
                        self.block = Block::Codes {
                            lit: huffman_table(&FIXED_LIT_LENGTHS),
                            dist: huffman_table(&[5; 30]),
                        }
                    }
                    2 => {
                        let (lit, dist) = dynamic_tables(input)?;
                        self.block = Block::Codes { lit, dist };
                    }
                    _ => return None,
                }
            }
            Block::Stored { left } => {
                let n = (*left).min(input.left()).min(sink.out.len() - sink.written);
                if n == 0 {
                    // Cut short: what there was is kept.
                    return None;
                }
                for &byte in &input.data[input.pos..input.pos + n] {
                    sink.push(byte);
                }
                input.pos += n;
                *left -= n;
                if *left == 0 {
                    self.end_block();
                }
            }
            Block::Codes { lit, dist } => match input.code(lit)? {
                code @ 0..=255 => sink.push(code as u8),
                256 => self.end_block(),
                code => {
                    let info = LENGTH_DECODE
                        .get(usize::from(code - 257))
                        .copied()
                        .unwrap_or(0);
                    let length = (info & 0xffff) as usize + input.extra(info)?;
                    let info = *DIST_DECODE.get(usize::from(input.code(dist)?))?;
                    let distance = (info & 0xffff) as usize + input.extra(info)?;
                    sink.copy(distance, length);
                }
            },
        }
        Some(())
    }

    fn end_block(&mut self) {
        self.block = Block::Header;
        self.eof |= self.final_block;
    }
}

/// A dynamic block's code tables, read as pdf.js reads them.
fn dynamic_tables(input: &mut Input) -> Option<(Table, Table)> {
    let lit_codes = input.bits(5)? as usize + 257;
    let dist_codes = input.bits(5)? as usize + 1;
    let code_len_codes = input.bits(4)? as usize + 4;
    let mut code_len_lengths = [0u8; 19];
    for &i in &CODE_LEN_CODE_MAP[..code_len_codes] {
        code_len_lengths[usize::from(i)] = input.bits(3)? as u8;
    }
    let code_len_table = huffman_table(&code_len_lengths);
    let total = lit_codes + dist_codes;
    let mut lengths = vec![0u8; total];
    let mut i = 0;
    while i < total {
        let (value, repeat) = match input.code(&code_len_table)? {
            code @ 0..=15 => (code as u8, 1),
            16 => (
                if i > 0 { lengths[i - 1] } else { 0 },
                input.bits(2)? as usize + 3,
            ),
            17 => (0, input.bits(3)? as usize + 3),
            18 => (0, input.bits(7)? as usize + 11),
            _ => return None,
        };
        let end = (i + repeat).min(total);
        lengths[i..end].fill(value);
        i = end;
    }
    Some((
        huffman_table(&lengths[..lit_codes]),
        huffman_table(&lengths[lit_codes..]),
    ))
}

/// pdf.js's table for code `lengths` (incomplete or over-full sets
/// included, as it builds them).
fn huffman_table(lengths: &[u8]) -> Table {
    let max_len = lengths.iter().copied().max().unwrap_or(0);
    if max_len == 0 {
        return Table {
            codes: vec![0],
            max_len: 1,
        };
    }
    let size = 1usize << max_len;
    let mut codes = vec![0u32; size];
    let mut code = 0u32;
    for len in 1..=max_len {
        for (value, _) in lengths.iter().enumerate().filter(|&(_, &l)| l == len) {
            // The code's bits, least significant first.
            let reversed = (code.reverse_bits() >> (32 - u32::from(len))) as usize;
            let entry = u32::from(len) << 16 | value as u32;
            for slot in codes.iter_mut().skip(reversed).step_by(1 << len) {
                *slot = entry;
            }
            code += 1;
        }
        code <<= 1;
    }
    Table { codes, max_len }
}

/// The fixed literal/length code lengths (RFC 1951, 3.2.6).
const FIXED_LIT_LENGTHS: [u8; 288] = {
    let mut lengths = [8u8; 288];
    let mut i = 144;
    while i < 256 {
        lengths[i] = 9;
        i += 1;
    }
    while i < 280 {
        lengths[i] = 7;
        i += 1;
    }
    lengths
};

const CODE_LEN_CODE_MAP: [u8; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// Extra bits << 16 | base length, for length codes 257..285.
const LENGTH_DECODE: [u32; 29] = [
    0x00003, 0x00004, 0x00005, 0x00006, 0x00007, 0x00008, 0x00009, 0x0000a, 0x1000b, 0x1000d,
    0x1000f, 0x10011, 0x20013, 0x20017, 0x2001b, 0x2001f, 0x30023, 0x3002b, 0x30033, 0x3003b,
    0x40043, 0x40053, 0x40063, 0x40073, 0x50083, 0x500a3, 0x500c3, 0x500e3, 0x00102,
];

/// Extra bits << 16 | base distance, for distance codes 0..29.
const DIST_DECODE: [u32; 30] = [
    0x00001, 0x00002, 0x00003, 0x00004, 0x10005, 0x10007, 0x20009, 0x2000d, 0x30011, 0x30019,
    0x40021, 0x40031, 0x50041, 0x50061, 0x60081, 0x600c1, 0x70101, 0x70181, 0x80201, 0x80301,
    0x90401, 0x90601, 0xa0801, 0xa0c01, 0xb1001, 0xb1801, 0xc2001, 0xc3001, 0xd4001, 0xd6001,
];
