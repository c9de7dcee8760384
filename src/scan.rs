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
        let escaped = self.escaped_bytes(raw.backslash);
        let quotes = raw.quote & !escaped;
        let in_string = prefix_xor(quotes) ^ self.in_string;
        self.in_string = ((in_string as i64) >> 63) as u64;
        Masks { whitespace: raw.whitespace & !in_string, structural: raw.structural & !in_string }
    }

    /// The bytes escaped by a backslash: the one after each backslash that is not itself
    /// escaped. Backslashes are rare, so this walks them one by one.
    fn escaped_bytes(&mut self, backslash: u64) -> u64 {
        let mut escaped = self.escaped as u64;
        let mut pending = backslash & !escaped;
        self.escaped = false;
        while pending != 0 {
            let at = pending.trailing_zeros();
            if at == 63 {
                self.escaped = true;
                break;
            }
            escaped |= 1 << (at + 1);
            pending &= !(1 << (at + 1));
            pending &= pending - 1;
        }
        escaped
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
struct Raw {
    quote: u64,
    backslash: u64,
    /// Bytes up to 0x20: outside strings of valid JSON, only space, tab, CR and LF.
    whitespace: u64,
    structural: u64,
}

impl Raw {
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

    #[cfg(not(target_arch = "x86_64"))]
    fn of(block: &[u8; BLOCK]) -> Raw {
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
