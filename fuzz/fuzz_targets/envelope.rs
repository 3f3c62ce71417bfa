//! Envelope parsing and opening of arbitrary bytes: an error, never a panic or an
//! out-of-bounds read, whatever the header claims (lengths, segment sizes, context).
#![no_main]
use dualseal::envelope::{self, DataKey, EncryptionContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = envelope::parse_header(data);
    if let Ok(key) = DataKey::from_slice(&[7u8; 32]) {
        let ctx = EncryptionContext::new().with("dualseal:category", "db");
        let _ = envelope::open(&key, data, Some(&ctx));
        let _ = envelope::open(&key, data, None);
    }
});
