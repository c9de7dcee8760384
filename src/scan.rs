//! Structural scanning of JSON text that a parser has already validated: which bytes are
//! insignificant whitespace and which are brackets and commas outside strings, found 64 bytes
//! at a time with bit masks (the first stage of simdjson). Minifying a record and splitting a
//! records array then visit only those positions and copy everything between them in runs, so
//! a compact page costs little more than a copy.

const BLOCK: usize = 64;

/// Append `json` (valid JSON) without its insignificant whitespace.
pub fn minify_into(json: &[u8], out: &mut Vec<u8>) {
    out.reserve(json.len());
    let mut from = 0;
    for (base, masks) in Blocks::new(json) {
        let mut whitespace = masks.whitespace;
        while whitespace != 0 {
            let (bit, run) = first_run(whitespace);
            whitespace = clear_below(whitespace, bit + run);
            let at = base + bit;
            if at >= json.len() {
                break;
            }
            out.extend_from_slice(&json[from..at]);
            from = at + run;
        }
    }
    out.extend_from_slice(&json[from.min(json.len())..]);
}

/// Split a JSON array (valid JSON) into its elements, each written compact on a line of its
/// own; returns how many.
pub fn split_array_into_lines(array: &[u8], out: &mut Vec<u8>) -> u64 {
    let Some(open) = array.iter().position(|b| *b == b'[') else {
        return 0;
    };
    let array = &array[open + 1..];
    out.reserve(array.len());
    let (mut from, mut depth, mut count, mut line_start) = (0, 0usize, 0, out.len());
    'blocks: for (base, masks) in Blocks::new(array) {
        let mut events = masks.whitespace | masks.structural;
        while events != 0 {
            let at = base + events.trailing_zeros() as usize;
            events &= events - 1;
            match array.get(at) {
                None => break 'blocks,
                Some(b'{' | b'[') => depth += 1,
                Some(b'}' | b']') if depth == 0 => {
                    out.extend_from_slice(&array[from..at]);
                    break 'blocks;
                }
                Some(b'}' | b']') => depth -= 1,
                Some(b',') if depth == 0 => {
                    out.extend_from_slice(&array[from..at]);
                    out.push(b'\n');
                    count += 1;
                    line_start = out.len();
                    from = at + 1;
                }
                Some(b',') => {}
                Some(_) => {
                    let (bit, run) = first_run(masks.whitespace >> (at - base) << (at - base));
                    events = clear_below(events, bit + run);
                    out.extend_from_slice(&array[from..at]);
                    from = at + run;
                }
            }
        }
    }
    if out.len() > line_start {
        out.push(b'\n');
        count += 1;
    }
    count
}

/// Where the strings of a JSON text (valid: it has been parsed before) start and end, and
/// where their escapes are, a bit for each byte: a walk over the text steps from the opening
/// quote of a string to its end without reading what is between.
pub struct Strings {
    /// Quotes that open or close a string.
    quotes: Vec<u64>,
    backslashes: Vec<u64>,
    len: usize,
}

impl Strings {
    pub fn of(json: &[u8]) -> Strings {
        let blocks = json.len().div_ceil(BLOCK);
        let (mut quotes, mut backslashes) = (Vec::with_capacity(blocks), Vec::with_capacity(blocks));
        let mut carry = false;
        for chunk in json.chunks(BLOCK) {
            let (quote, backslash) = match chunk.try_into() {
                Ok(block) => quotes_and_backslashes(block),
                Err(_) => {
                    let mut block = [b' '; BLOCK];
                    block[..chunk.len()].copy_from_slice(chunk);
                    quotes_and_backslashes(&block)
                }
            };
            quotes.push(quote & !escaped_bytes(backslash, &mut carry));
            backslashes.push(backslash);
        }
        Strings { quotes, backslashes, len: json.len() }
    }

    /// The index just past the quote that closes the string opened at `open`.
    #[inline]
    pub fn end(&self, open: usize) -> usize {
        let from = open + 1;
        let mut word = from / BLOCK;
        let mut bits = match self.quotes.get(word) {
            Some(bits) => bits & (!0u64 << (from % BLOCK)),
            None => return self.len,
        };
        loop {
            if bits != 0 {
                return (word * BLOCK + bits.trailing_zeros() as usize + 1).min(self.len);
            }
            word += 1;
            match self.quotes.get(word) {
                Some(next) => bits = *next,
                None => return self.len,
            }
        }
    }

    /// Whether bytes `from..to` hold a backslash: the string there has escapes.
    #[inline]
    pub fn escaped(&self, from: usize, to: usize) -> bool {
        if from >= to {
            return false;
        }
        let (first, last) = (from / BLOCK, (to - 1) / BLOCK);
        if first == last {
            // Within one block, as short strings like keys mostly are.
            let bits = self.backslashes.get(first).copied().unwrap_or(0) >> (from % BLOCK);
            let span = to - from;
            return bits & (!0u64).checked_shr((BLOCK - span) as u32).unwrap_or(0) != 0;
        }
        (first..to.div_ceil(BLOCK)).any(|word| {
            let low = match word == from / BLOCK {
                true => !0u64 << (from % BLOCK),
                false => !0,
            };
            let high = match word == to / BLOCK {
                true => (1u64 << (to % BLOCK)) - 1,
                false => !0,
            };
            self.backslashes.get(word).is_some_and(|bits| bits & low & high != 0)
        })
    }
}

/// The lowest set bit of `mask` and how many set bits run on from it.
fn first_run(mask: u64) -> (usize, usize) {
    let bit = mask.trailing_zeros();
    (bit as usize, (mask >> bit).trailing_ones() as usize)
}

/// `mask` without its bits below `bit` (all of them when `bit` is 64).
fn clear_below(mask: u64, bit: usize) -> u64 {
    mask.checked_shr(bit as u32).map_or(0, |m| m << bit)
}

/// What one block holds outside strings, bit `i` standing for byte `base + i`.
#[derive(Debug, Clone, Copy)]
struct Masks {
    whitespace: u64,
    /// `{ } [ ] ,`
    structural: u64,
}

/// The blocks of a text with their masks; the last block is padded with spaces (so its
/// masks may have bits past the end, which callers ignore).
struct Blocks<'a> {
    json: &'a [u8],
    base: usize,
    /// The first byte of the next block is escaped by a backslash ending this one.
    escaped: bool,
    /// All ones while a string runs on into the next block.
    in_string: u64,
}

impl<'a> Blocks<'a> {
    fn new(json: &'a [u8]) -> Self {
        Blocks { json, base: 0, escaped: false, in_string: 0 }
    }

    fn classify(&mut self, block: &[u8; BLOCK]) -> Masks {
        let raw = Raw::of(block);
        let escaped = escaped_bytes(raw.backslash, &mut self.escaped);
        let quotes = raw.quote & !escaped;
        let in_string = prefix_xor(quotes) ^ self.in_string;
        self.in_string = ((in_string as i64) >> 63) as u64;
        Masks { whitespace: raw.whitespace & !in_string, structural: raw.structural & !in_string }
    }
}

impl Iterator for Blocks<'_> {
    type Item = (usize, Masks);

    fn next(&mut self) -> Option<(usize, Masks)> {
        let base = self.base;
        let rest = self.json.get(base..).filter(|rest| !rest.is_empty())?;
        let masks = match rest.first_chunk::<BLOCK>() {
            Some(block) => self.classify(block),
            None => {
                let mut block = [b' '; BLOCK];
                block[..rest.len()].copy_from_slice(rest);
                self.classify(&block)
            }
        };
        self.base += BLOCK;
        Some((base, masks))
    }
}

/// The bytes escaped by a backslash: the one after each backslash that is not itself escaped.
/// `carry`: the first byte is escaped by a backslash that ended the block before; set for the
/// next. Backslashes are rare, so this walks them one by one.
fn escaped_bytes(backslash: u64, carry: &mut bool) -> u64 {
    let mut escaped = *carry as u64;
    let mut pending = backslash & !escaped;
    *carry = false;
    while pending != 0 {
        let at = pending.trailing_zeros();
        if at == 63 {
            *carry = true;
            break;
        }
        escaped |= 1 << (at + 1);
        pending &= !(1 << (at + 1));
        pending &= pending - 1;
    }
    escaped
}

/// The quotes and backslashes of one block.
fn quotes_and_backslashes(block: &[u8; BLOCK]) -> (u64, u64) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86_64 baseline; loads are unaligned loads of 16 bytes
        // within the 64-byte block.
        unsafe {
            let (quote, backslash) = (_mm_set1_epi8(b'"' as i8), _mm_set1_epi8(b'\\' as i8));
            let (mut quotes, mut backslashes) = (0u64, 0u64);
            for lane in 0..4 {
                let v = _mm_loadu_si128(block.as_ptr().add(lane * 16) as *const __m128i);
                quotes |= (_mm_movemask_epi8(_mm_cmpeq_epi8(v, quote)) as u32 as u64) << (lane * 16);
                backslashes |= (_mm_movemask_epi8(_mm_cmpeq_epi8(v, backslash)) as u32 as u64) << (lane * 16);
            }
            (quotes, backslashes)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        quotes_and_backslashes_portable(block)
    }
}

/// [`quotes_and_backslashes`] a byte at a time: what other targets run, and what the SIMD
/// version is tested against.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn quotes_and_backslashes_portable(block: &[u8; BLOCK]) -> (u64, u64) {
    let raw = Raw::portable(block);
    (raw.quote, raw.backslash)
}

/// Bit `i` of the result is the XOR of bits `0..=i`: set from an opening quote up to, not
/// including, its closing quote.
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// Byte classes of one block, strings not yet taken into account.
#[derive(Debug, PartialEq, Eq)]
struct Raw {
    quote: u64,
    backslash: u64,
    /// Bytes up to 0x20: outside strings of valid JSON, only space, tab, CR and LF.
    whitespace: u64,
    structural: u64,
}

impl Raw {
    #[cfg(not(target_arch = "x86_64"))]
    fn of(block: &[u8; BLOCK]) -> Raw {
        Raw::portable(block)
    }

    #[cfg(target_arch = "x86_64")]
    fn of(block: &[u8; BLOCK]) -> Raw {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86_64 baseline; loads are unaligned loads of 16 bytes
        // within the 64-byte block.
        unsafe {
            let (quote, backslash, space, open, close, comma) = (
                _mm_set1_epi8(b'"' as i8),
                _mm_set1_epi8(b'\\' as i8),
                _mm_set1_epi8(0x20),
                _mm_set1_epi8(b'{' as i8),
                _mm_set1_epi8(b'}' as i8),
                _mm_set1_epi8(b',' as i8),
            );
            let lower = _mm_set1_epi8(0x20);
            let mut raw = Raw { quote: 0, backslash: 0, whitespace: 0, structural: 0 };
            for lane in 0..4 {
                let v = _mm_loadu_si128(block.as_ptr().add(lane * 16) as *const __m128i);
                let shift = lane * 16;
                let bits = |m: __m128i| (_mm_movemask_epi8(m) as u32 as u64) << shift;
                raw.quote |= bits(_mm_cmpeq_epi8(v, quote));
                raw.backslash |= bits(_mm_cmpeq_epi8(v, backslash));
                raw.whitespace |= bits(_mm_cmpeq_epi8(_mm_max_epu8(v, space), space));
                // `[` and `]` are `{` and `}` with bit 0x20 clear.
                let folded = _mm_or_si128(v, lower);
                let brackets = _mm_or_si128(_mm_cmpeq_epi8(folded, open), _mm_cmpeq_epi8(folded, close));
                raw.structural |= bits(_mm_or_si128(brackets, _mm_cmpeq_epi8(v, comma)));
            }
            raw
        }
    }

    /// [`Raw::of`] a byte at a time: compiled on every target, so that the tests compare it
    /// with the SIMD version wherever they run.
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    fn portable(block: &[u8; BLOCK]) -> Raw {
        let mut raw = Raw { quote: 0, backslash: 0, whitespace: 0, structural: 0 };
        for (i, &b) in block.iter().enumerate() {
            let bit = |set: bool| (set as u64) << i;
            raw.quote |= bit(b == b'"');
            raw.backslash |= bit(b == b'\\');
            raw.whitespace |= bit(b <= 0x20);
            raw.structural |= bit(matches!(b | 0x20, b'{' | b'}') || b == b',');
        }
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whitespace removed the slow way: byte by byte, tracking strings.
    fn reference_minify(json: &[u8]) -> Vec<u8> {
        let (mut out, mut in_string, mut escaped) = (Vec::new(), false, false);
        for &b in json {
            if in_string {
                out.push(b);
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
            } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                out.push(b);
                in_string = b == b'"';
            }
        }
        out
    }

    fn samples() -> Vec<String> {
        let mut samples = vec![
            r#"{ "a" : "b\\" , "c" : [1, 2], "d": "x\"y z" }"#.to_string(),
            r#"[ {"a": [1, {"b": "x,]y"}], "s": "q\\"}, 2 , "three", [], {}, null, true, -1.5e3 ]"#.to_string(),
            "[]".to_string(),
            "[ ]".to_string(),
            "[\n]".to_string(),
            r#"[{"only": "one"}]"#.to_string(),
        ];
        // Escapes and strings across the 64-byte block edges, at every alignment.
        for pad in 0..70 {
            let filler = " ".repeat(pad);
            samples.push(format!(
                r#"[{filler}{{"k{filler}": "{}\\", "q": "\"{filler}\\\"", "n": [ 1 ,2 ]}} ,{filler}"\\" , "{{[,]}}" ]"#,
                "x".repeat(pad)
            ));
        }
        samples
    }

    #[test]
    fn minify_matches_a_byte_by_byte_reference() {
        for sample in samples() {
            serde_json::from_str::<serde_json::Value>(&sample).expect(&sample);
            let mut out = Vec::new();
            minify_into(sample.as_bytes(), &mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(reference_minify(sample.as_bytes())).unwrap()
            );
        }
    }

    #[test]
    fn quotes_find_where_each_string_ends() {
        for sample in samples() {
            let json = sample.as_bytes();
            let strings = Strings::of(json);
            let (mut at, mut in_string, mut escaped) = (0, false, false);
            let mut open = 0;
            while at < json.len() {
                let b = json[at];
                match (in_string, escaped, b) {
                    (false, _, b'"') => (in_string, open) = (true, at),
                    (true, true, _) => escaped = false,
                    (true, false, b'\\') => escaped = true,
                    (true, false, b'"') => {
                        in_string = false;
                        assert_eq!(strings.end(open), at + 1, "{sample} at {open}");
                        let escapes = json[open..at].contains(&b'\\');
                        assert_eq!(strings.escaped(open, at), escapes, "{sample} at {open}");
                    }
                    _ => {}
                }
                at += 1;
            }
        }
    }

    #[test]
    fn the_portable_classifier_matches_the_simd_one() {
        // Random JSON-ish text (and every byte value now and then), each 64-byte window at
        // every alignment, plus the samples: both classifiers must see the same bytes.
        let alphabet = b"{}[],:\"\\ \t\r\nab01-+.eEu\x7f\xc3\xa9";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut texts: Vec<Vec<u8>> = samples().into_iter().map(String::into_bytes).collect();
        for _ in 0..64 {
            let text: Vec<u8> = (0..700)
                .map(|_| match random() % 16 {
                    0 => (random() % 256) as u8,
                    _ => alphabet[(random() % alphabet.len() as u64) as usize],
                })
                .collect();
            texts.push(text);
        }
        for text in &texts {
            for start in 0..text.len().saturating_sub(BLOCK) {
                let block: &[u8; BLOCK] = text[start..start + BLOCK].try_into().unwrap();
                assert_eq!(Raw::of(block), Raw::portable(block), "at {start}");
                assert_eq!(quotes_and_backslashes(block), quotes_and_backslashes_portable(block), "at {start}");
            }
        }
    }

    #[test]
    fn split_matches_serde() {
        for sample in samples().into_iter().filter(|s| s.starts_with('[')) {
            let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(&sample).unwrap();
            let mut expected = Vec::new();
            for item in &items {
                expected.extend(reference_minify(item.get().as_bytes()));
                expected.push(b'\n');
            }
            let mut out = b"kept".to_vec();
            let count = split_array_into_lines(sample.as_bytes(), &mut out);
            assert_eq!(count, items.len() as u64, "{sample}");
            assert_eq!(String::from_utf8(out[4..].to_vec()).unwrap(), String::from_utf8(expected).unwrap(), "{sample}");
        }
    }
}
