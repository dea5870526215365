//! CRC-64-AVRO (Rabin) fingerprints, the schema identifier of Avro single-object encoding.
//!
//! Why our own implementation: the single-object header is part of our wire contract, so the
//! algorithm is spelled out here exactly as the Avro specification gives it ("Schema
//! Fingerprints"), with known-answer tests that another language can reproduce, instead of
//! depending on a library's choice of digest trait. A unit test cross-checks it against
//! apache-avro's `rabin::Rabin`.

use apache_avro::Schema;

/// The specification's `EMPTY` constant: the fingerprint of zero bytes, and the polynomial seed.
pub const CRC64_AVRO_EMPTY: u64 = 0xc15d_213a_a4d7_a795;

/// Byte-wise lookup table, computed at compile time as the specification's `fpTable`.
const TABLE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut bit = 0;
        while bit < 8 {
            // Shift right; xor the polynomial when the bit shifted out was 1.
            fp = (fp >> 1) ^ (CRC64_AVRO_EMPTY & (0u64.wrapping_sub(fp & 1)));
            bit += 1;
        }
        table[i] = fp;
        i += 1;
    }
    table
};

/// CRC-64-AVRO of arbitrary bytes. Public so that tools and tests can fingerprint a canonical
/// form without going through a parsed schema.
pub fn crc64_avro(bytes: &[u8]) -> u64 {
    let mut fp = CRC64_AVRO_EMPTY;
    for &b in bytes {
        fp = (fp >> 8) ^ TABLE[((fp ^ u64::from(b)) & 0xff) as usize];
    }
    fp
}

/// Fingerprint of a schema: CRC-64-AVRO of its Parsing Canonical Form. This is the 64-bit value
/// written little-endian after `0xC3 0x01` in single-object encoding; docs, defaults and field
/// order of attributes do not change it, names, types and field order do.
pub fn schema_fingerprint(schema: &Schema) -> u64 {
    crc64_avro(schema.canonical_form().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values reproduce with this Python one-liner, a direct transcription of the
    // specification's Java reference code (no Avro library involved):
    //
    //   python3 -c 'E=0xc15d213aa4d7a795;T=[];
    //   [T.append((lambda f:[f:=(f>>1)^(E&-(f&1)) for _ in range(8)][-1])(i)) for i in range(256)];
    //   fp=lambda b:__import__("functools").reduce(lambda f,x:(f>>8)^T[(f^x)&0xff],b,E);
    //   print(fp(b"\"int\""), fp(b"\"null\""), fp(b"\"string\""))'
    //
    // which prints 8247732601305521295 7195948357588979594 10304597078529344455; the first two
    // also appear in the Avro project's published fingerprint test data for "int" and "null".
    #[test]
    fn known_answers() {
        assert_eq!(crc64_avro(b""), CRC64_AVRO_EMPTY);
        assert_eq!(crc64_avro(b"\"int\""), 8_247_732_601_305_521_295);
        assert_eq!(crc64_avro(b"\"null\""), 7_195_948_357_588_979_594);
        assert_eq!(crc64_avro(b"\"string\""), 10_304_597_078_529_344_455);
        assert_eq!(schema_fingerprint(&Schema::Int), 8_247_732_601_305_521_295);
        // Little-endian on the wire: the first header byte after 0xC3 0x01 is the low byte.
        assert_eq!(8_247_732_601_305_521_295u64.to_le_bytes()[0], 0x8f);
    }

    #[test]
    fn matches_apache_avro_rabin() {
        let schemas = [
            r#""int""#,
            r#"{"type":"record","name":"a.B","fields":[{"name":"x","type":["null","string"]}]}"#,
            r#"{"type":"enum","name":"E","symbols":["A","B"],"doc":"docs do not count"}"#,
        ];
        for text in schemas {
            let schema = Schema::parse_str(text).expect("valid schema");
            let theirs = schema.fingerprint::<apache_avro::rabin::Rabin>();
            let bytes: [u8; 8] = theirs.bytes.as_slice().try_into().expect("8 bytes");
            assert_eq!(schema_fingerprint(&schema), u64::from_le_bytes(bytes), "{text}");
        }
    }

    #[test]
    fn docs_do_not_change_the_fingerprint_but_names_do() {
        let a = Schema::parse_str(r#"{"type":"record","name":"R","doc":"x","fields":[]}"#).unwrap();
        let b = Schema::parse_str(r#"{"type":"record","name":"R","doc":"y","fields":[]}"#).unwrap();
        let c = Schema::parse_str(r#"{"type":"record","name":"S","fields":[]}"#).unwrap();
        assert_eq!(schema_fingerprint(&a), schema_fingerprint(&b));
        assert_ne!(schema_fingerprint(&a), schema_fingerprint(&c));
    }
}
