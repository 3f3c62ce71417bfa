//! Journal record decoding of arbitrary bytes (a damaged journal): an error, never a panic.
#![no_main]
use dualseal::journal::records::{self, AuditRecord};
use dualseal::model::{JobRecord, ObjectRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = records::decode::<ObjectRecord>(data);
    let _ = records::decode::<JobRecord>(data);
    let _ = records::decode::<AuditRecord>(data);
    let _ = records::split_object_key(data);
});
